#!/usr/bin/env python3
"""hpc-sweep's own benchmarks: the quality bars of PRODUCT.md, measured on this machine.

    python benchmarks/run.py [--quick] [--no-slurm] [--keep] [--only SECTIONS]

Run it with an interpreter that imports ``hpc_sweep`` (the development venv). The Slurm parts need root: they
start the private single-node Slurm of ``tests/cluster/slurm_cluster.py`` and run every hpc-sweep command as its
ordinary test user. Without root, or with ``--no-slurm``, the poll measurements run against stand-in
``sbatch``/``squeue``/``sacct`` commands instead and the rows that need the real scheduler say "skipped".

Prints one markdown table (what, ours, bar, naive/peer, ratio, pass/fail) and writes it, with the machine, the
date and per-row details, to ``benchmarks/results/latest.md``. ``benchmarks/README.md`` explains every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))  # the test cluster and its sweep helpers, shared with the tests
import cluster_sweeps  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SECTIONS = ("generate", "help", "parse", "scheduler")

# PRODUCT.md's quoted peer figures (signac-flow on a single-node Slurm).
PEER_SUBMIT_1K_S = 12.5
PEER_STATUS_1K_S = 0.62
PRODUCT_BARE_SQUEUE_S = 0.03


# ------------------------------------------------------------------------------------------------------------
# results


@dataclass
class Row:
    what: str
    ours: str
    bar: str = "–"
    naive: str = "–"
    ratio: str = "–"
    ok: Optional[bool] = None      # None: informational, no bar
    detail: str = ""               # goes to latest.md under the table

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else ("PASS" if self.ok else "**FAIL**")


@dataclass
class Bench:
    quick: bool
    rows: List[Row] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        flag = "" if row.ok is None else (" ok" if row.ok else " FAIL")
        log(f"  -> {row.what}: {row.ours} (bar {row.bar}){flag}")
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)
        log(f"  note: {text}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt_s(seconds: Optional[float]) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s"


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "n/a"
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.1f} kB"
    return f"{n:.0f} B"


def fmt_ratio(naive: Optional[float], ours: Optional[float]) -> str:
    if not naive or not ours:
        return "–"
    r = naive / ours
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# ------------------------------------------------------------------------------------------------------------
# running commands: as this user with this interpreter, or as the cluster's ordinary user with its venv


@dataclass
class Ran:
    rc: int
    stdout: str
    stderr: str
    wall: float
    cpu: float          # user+sys of the process and the children it waited for
    user: float = 0.0
    sys: float = 0.0


class LocalExec:
    """hpc-sweep as ``python -m hpc_sweep.cli`` with this interpreter, as the current user."""

    kind = "local"

    def __init__(self, work: Path, path_prefix: Sequence[str] = ()):
        self.work = work
        self.path_prefix = list(path_prefix)

    @property
    def python(self) -> str:
        return sys.executable

    def hpc(self) -> List[str]:
        return [sys.executable, "-m", "hpc_sweep.cli"]

    def make_dir(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_SWEEP_", "SLURM_"))}
        env["PATH"] = ":".join(self.path_prefix + [os.environ.get("PATH", SYSTEM_PATH)])
        env.update(extra or {})
        return env

    def run(self, argv: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None,
            timeout: float = 300) -> Ran:
        return timed(list(map(str, argv)), cwd, self.env(env), timeout)

    def own(self, path: Path) -> None:
        pass


class ClusterExec(LocalExec):
    """Everything as the cluster's ordinary test user, with the venv the cluster harness built for it."""

    kind = "slurm"

    def __init__(self, cluster):
        super().__init__(Path(cluster.work_dir))
        self.cluster = cluster

    @property
    def python(self) -> str:
        return str(self.cluster.user_bin / "python")

    def hpc(self) -> List[str]:
        return [str(self.cluster.user_bin / "hpc-sweep")]

    def make_dir(self, name: str) -> Path:
        return self.cluster.make_user_dir(name)

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = self.cluster.user_env(extra)
        if self.path_prefix:
            env["PATH"] = ":".join(self.path_prefix + [env["PATH"]])
        return env

    def run(self, argv: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None,
            timeout: float = 300) -> Ran:
        prefix = self.cluster._as_user_prefix()  # setpriv/runuser: execs into the command, adds no process
        return timed([*prefix, *map(str, argv)], cwd, self.env(env), timeout)

    def own(self, path: Path) -> None:
        subprocess.run(["chown", "-R", f"{self.cluster.user}:", str(path)], check=True)


def timed(argv: List[str], cwd: Path, env: Dict[str, str], timeout: float) -> Ran:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return Ran(rc, out, err, wall, user + system, user, system)


def check(ran: Ran, what: str) -> Ran:
    if ran.rc != 0:
        raise RuntimeError(f"{what} failed (rc={ran.rc}):\n{ran.stdout[-2000:]}\n{ran.stderr[-2000:]}")
    return ran


# ------------------------------------------------------------------------------------------------------------
# sweeps


def write_sweep(root: Path, name: str, n_a: int, n_b: int, site: Dict[str, object]) -> None:
    """A sweep of n_a × n_b configs over the demo's DeepH-shaped base, a trivial command, our site profile."""
    (root / "inputs").mkdir(parents=True, exist_ok=True)
    grid = {"process.train.optimizer.init_learning_rate": [round(1e-4 * (i + 1), 6) for i in range(n_a)],
            "process.train.drop.dropout_rate": [round(0.001 * i, 4) for i in range(n_b)]}
    cluster_sweeps.write_sweep(root, name, "true {config}", cluster_sweeps.toml_body(grid), site, walltime="00:10:00")


def slurm_site(hold: bool, max_array: Optional[int] = None) -> Dict[str, object]:
    site: Dict[str, object] = dict(cluster_sweeps.SLURM_SITE)
    if max_array:
        site["max_array_size"] = max_array
    if hold:
        site["extra_directives"] = ["#SBATCH --hold"]
    return site


def grid_for(n: int) -> Tuple[int, int]:
    return {100: (10, 10), 1000: (40, 25), 10000: (100, 100)}.get(n, (n, 1))


def call_log(path: Path) -> List[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def calls_by_command(calls: List[dict]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for c in calls:
        out[c["argv"][0]] = out.get(c["argv"][0], 0) + 1
    return out


def calls_text(calls: List[dict]) -> str:
    by = calls_by_command(calls)
    return ", ".join(f"{k} {v}" for k, v in sorted(by.items())) or "none"


def sched_seconds(calls: List[dict]) -> float:
    """Seconds during which at least one scheduler command ran: calls made at once (submit asks squeue, scontrol
    and sacctmgr together) count once. Calls logged without a start time are added up."""
    spans = sorted((c["start"], c["start"] + c.get("seconds", 0.0)) for c in calls if "start" in c)
    total = sum(c.get("seconds", 0.0) for c in calls if "start" not in c)
    end = float("-inf")
    for begin, finish in spans:
        total += max(0.0, finish - max(begin, end))
        end = max(end, finish)
    return total


# ------------------------------------------------------------------------------------------------------------
# DeepH / XequiNet logs


DEEPH_HEADER = [
    "                 Version 1.0.6",
    "[system] Use the GPU device(s) `[0]` of totally `1` device(s). Succeeded test on the head device `cuda:0`!",
    "[dataloader] Train size: `3000`. Val size: `1000`. Test size: `999`.",
    "[model] Building the model `eagle-H` with loss `mae`.",
    "[model] The parameters size is `7684960`.",
    "[train] Compile networks done!",
    "[train] Starting the training process ...",
]


def deeph_stamp(i: int) -> str:
    return f"[ 11.20-{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d} ]"


def deeph_epoch_line(epoch: int) -> str:
    train = 2.6 / (1 + 0.05 * epoch)
    val = 1.9 / (1 + 0.05 * epoch)
    return (f"{deeph_stamp(epoch * 7)} [train] Epoch {epoch} | Time 3.20 s | Train-Loss {train:.6e} | "
            f"Val-Loss {val:.6e} | Scale 1.0\n")


def deeph_log(target_bytes: int) -> Tuple[str, int]:
    """A deepx.log of about target_bytes (at least the header and one epoch); returns (text, epochs)."""
    parts = [f"{deeph_stamp(i)} {line}\n" for i, line in enumerate(DEEPH_HEADER)]
    size = sum(len(p) for p in parts)
    epoch = 0
    while epoch == 0 or size < target_bytes:
        epoch += 1
        line = deeph_epoch_line(epoch)
        parts.append(line)
        size += len(line)
    return "".join(parts), epoch


def xequinet_log(target_bytes: int) -> Tuple[str, int]:
    head = ["Start training", "Task Name: water", "Property: energy Unit: eV", "Property: forces Unit: eV/Angstrom"]
    parts = [f"2025-04-15 18:50:45 - INFO - {line}\n" for line in head]
    size = sum(len(p) for p in parts)
    epoch = 0
    while epoch == 0 or size < target_bytes:
        epoch += 1
        e, f = 100 / epoch, 2 / epoch
        stamp = f"2025-04-15 {(epoch // 60) % 24:02d}:{epoch % 60:02d}:01 - INFO - "
        block = [
            "              Epoch  Step            LR    Energy    Energy/atom    Forces",
            f"Train  MAE {epoch:8d}  [79/79]  5.062e-05  {e:8.4g}      {e / 6:8.4g}  {f:8.4g}",
            f"Train RMSE                             {e * 1.2:8.4g}      {e / 5:8.4g}  {f * 1.2:8.4g}",
            "                  Energy    Energy/atom    Forces",
            f"EMA Valid  MAE  {e / 2:8.4g}      {e / 12:8.4g}  {f / 2:8.4g}",
            f"EMA Valid RMSE  {e * 0.65:8.4g}      {e / 9:8.4g}  {f * 0.65:8.4g}",
        ]
        text = "".join(stamp + line + "\n" for line in block)
        parts.append(text)
        size += len(text)
    return "".join(parts), epoch


# ------------------------------------------------------------------------------------------------------------
# 1. generate


def bench_generate(bench: Bench, ex: LocalExec, site: str, runs: int) -> Optional[Path]:
    """`hpc-sweep generate` of 10,000 configs into fresh sweep folders, median of `runs` (the disk of a shared VM
    is noisy); returns the first folder, which the scheduler benchmarks then submit."""
    log(f"[generate] 10,000 configs (100 × 100 grid over examples/demo/base.toml), median of {runs}")
    what = "`generate` 10,000 configs (100×100 grid, DeepH base)"
    results = []
    roots = []
    floors = []
    for i in range(runs):
        root = ex.make_dir("s10000" if i == 0 else f"gen{i}")
        write_sweep(root, "gen10k", 100, 100, site)
        ex.own(root)
        floors.append(fs_floor(root.parent, 10000, 1251))  # interleaved: the disk's speed drifts
        os.sync()  # each timed run starts with no dirty data of the previous one
        ran = ex.run([*ex.hpc(), "generate", str(root)], root, timeout=300)
        if ran.rc != 0:
            bench.add(Row(what, f"error rc={ran.rc}", "< 5 s", ok=False, detail=ran.stderr[-500:]))
            return None
        results.append(ran)
        roots.append(root)
    files = sorted((roots[0] / "configs").glob("config*.toml"))
    n = len(files)
    size = len(files[0].read_bytes()) if files else 0
    mid = sorted(results, key=lambda r: r.wall)[len(results) // 2]
    floor = statistics.median(floors)
    bench.add(Row(
        what, f"{fmt_s(mid.wall)} (cpu {fmt_s(mid.cpu)})" + (f", median of {runs}" if runs > 1 else ""), "< 5 s",
        f"file-system floor {fmt_s(floor)} (10k files + 10k dirs)", "–", ok=mid.wall < 5 and n == 10000,
        detail=f"{n} config files of {size} bytes; runs (wall / user cpu / system cpu): "
               + ", ".join(f"{r.wall:.2f} / {r.user:.2f} / {r.sys:.2f} s" for r in results)
               + "; bare Python creating as many files (temp file + rename) and folders on the same disk, "
                 "measured just before each run: " + ", ".join(f"{f:.2f} s" for f in floors)
               + f". Load average: {loadavg()}."))
    return roots[0]  # the others go with the work folder at the end (deleting them now would disturb timings)


def fs_floor(where: Path, n: int, size: int) -> float:
    """Bare cost of what generate must do to the file system: n files (temp + rename) and n folders. The folder
    is left for the end of the run: deleting 20,000 entries right before a timed run slows that run down."""
    d = Path(tempfile.mkdtemp(prefix="fsfloor-", dir=where))
    payload = b"x" * size
    (d / "c").mkdir()
    (d / "o").mkdir()
    os.sync()
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        (d / "o" / f"config{i:03d}").mkdir()
        fd, tmp = tempfile.mkstemp(dir=d / "c", prefix=f".config{i:03d}.toml.", suffix=".tmp")
        os.write(fd, payload)
        os.close(fd)
        os.chmod(tmp, 0o644)
        os.replace(tmp, d / "c" / f"config{i:03d}.toml")
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------------------
# 5. --help start-up


def bench_help(bench: Bench, work: Path) -> None:
    log("[help] hpc-sweep --help, median of 10")
    script = Path(sys.executable).parent / "hpc-sweep"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "hpc_sweep.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC_SWEEP_")}
    check(timed(argv + ["--help"], work, env, 60), "hpc-sweep --help")  # warm the page cache / .pyc
    times = [timed(argv + ["--help"], work, env, 60).wall for _ in range(10)]
    floor = statistics.median(timed([sys.executable, "-c", "pass"], work, env, 60).wall for _ in range(5))
    imports = import_profile(work)
    med = statistics.median(times)
    bench.add(Row("`hpc-sweep --help` start-up (median of 10)", fmt_s(med), "< 0.3 s",
                  f"bare `python -c pass` {fmt_s(floor)}", "–", ok=med < 0.3,
                  detail=f"{' '.join(argv)} --help: runs {', '.join(f'{t:.3f}' for t in times)} s; heaviest "
                         f"imports (-X importtime, cumulative): {imports}"))


def import_profile(work: Path) -> str:
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "from hpc_sweep.cli import cli"],
                       capture_output=True, text=True, cwd=str(work))
    rows = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 2:  # top-level imports only
            rows.append((int(m.group(2)), m.group(4)))
    rows.sort(reverse=True)
    return ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in rows[:5])


# ------------------------------------------------------------------------------------------------------------
# 6. log parser throughput


def bench_parsers(bench: Bench, quick: bool) -> None:
    from hpc_sweep.programs import get_program

    size = (5 if quick else 20) * 1_000_000
    for name, make, naive_re in (
            ("deeph", deeph_log, re.compile(r"Epoch (\d+) \| Time \S+ s \| Train-Loss (\S+) \| Val-Loss (\S+)")),
            ("xequinet", xequinet_log, re.compile(r"EMA Valid  MAE\s+(\S+)"))):
        log(f"[parse] {name} parser, {size / 1e6:.0f} MB log")
        text, epochs = make(size)
        nbytes = len(text.encode())
        program = get_program(name)
        best = None
        rows = []
        for _ in range(2 if quick else 3):
            parser = program.log_parser({}, None, None)
            t0 = time.perf_counter()
            rows = parser.feed(text)
            parser.summary()
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        t0 = time.perf_counter()
        naive = [float(m.group(m.lastindex)) for m in naive_re.finditer(text)]
        naive_dt = time.perf_counter() - t0
        ours = nbytes / best / 1e6
        floor = nbytes / naive_dt / 1e6
        ok = len(rows) == epochs and ours >= 10
        bench.add(Row(f"{name} log parser throughput ({nbytes / 1e6:.0f} MB log, {epochs:,} epochs)",
                      f"{ours:.0f} MB/s", "≥ 10 MB/s (derived: 10 MB in a < 1 s poll)",
                      f"one bare regex: {floor:.0f} MB/s", f"{best and naive_dt / best:.2f}×", ok=ok,
                      detail=f"{name}: {len(rows)} epoch rows parsed of {epochs} written (best of runs) in "
                             f"{best:.3f} s; a single regex over the text finds {len(naive)} in {naive_dt:.3f} s."))


# ------------------------------------------------------------------------------------------------------------
# the poll probe: runs hpc-sweep in-process and reports its own CPU time and bytes read at exit

PROBE = r'''
import atexit, builtins, io, json, os, resource, sys, time
_t0 = time.perf_counter()
_out = os.environ["BENCH_PROBE_OUT"]
_watch = tuple(p for p in os.environ.get("BENCH_PROBE_WATCH", "").split(os.pathsep) if p)
_count = {"bytes": 0, "files": 0}
_real_open = builtins.open

class _Counting:
    def __init__(self, handle):
        self._h = handle
    def read(self, *a):
        data = self._h.read(*a)
        _count["bytes"] += len(data)
        return data
    def readline(self, *a):
        data = self._h.readline(*a)
        _count["bytes"] += len(data)
        return data
    def __iter__(self):
        for line in self._h:
            _count["bytes"] += len(line)
            yield line
    def __enter__(self):
        self._h.__enter__()
        return self
    def __exit__(self, *exc):
        return self._h.__exit__(*exc)
    def __getattr__(self, name):
        return getattr(self._h, name)

def _open(file, mode="r", *a, **k):
    handle = _real_open(file, mode, *a, **k)
    if _watch and isinstance(file, (str, os.PathLike)) and "r" in mode and str(os.fspath(file)).startswith(_watch):
        _count["files"] += 1
        return _Counting(handle)
    return handle

builtins.open = _open
io.open = _open

# The log reader works at the os level (os.open + os.pread): count those too, by file descriptor.
_watched_fds = set()
_real_os_open, _real_pread, _real_os_read, _real_close = os.open, os.pread, os.read, os.close

def _os_open(path, flags, *a, **k):
    fd = _real_os_open(path, flags, *a, **k)
    if _watch and isinstance(path, (str, os.PathLike)) and str(os.fspath(path)).startswith(_watch) \
            and not flags & (os.O_WRONLY | os.O_RDWR):
        _count["files"] += 1
        _watched_fds.add(fd)
    return fd

def _pread(fd, n, offset):
    data = _real_pread(fd, n, offset)
    if fd in _watched_fds:
        _count["bytes"] += len(data)
    return data

def _os_read(fd, n):
    data = _real_os_read(fd, n)
    if fd in _watched_fds:
        _count["bytes"] += len(data)
    return data

def _close(fd):
    _watched_fds.discard(fd)
    return _real_close(fd)

os.open, os.pread, os.read, os.close = _os_open, _pread, _os_read, _close

# The poll forks log-reading workers for large sweeps: each counts its own reads and CPU and hands them over
# (appended to <out>.workers) as it leaves through os._exit.
_main_pid = os.getpid()
_real_fork, _real_exit = os.fork, os._exit

def _fork():
    pid = _real_fork()
    if pid == 0:
        _count.update(bytes=0, files=0)
    return pid

def _exit(code):
    if os.getpid() != _main_pid:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        with _real_open(_out + ".workers", "a") as f:
            f.write(json.dumps(dict(_count, cpu=ru.ru_utime + ru.ru_stime)) + "\n")
    _real_exit(code)

os.fork, os._exit = _fork, _exit

def _report():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with _real_open("/proc/self/io") as f:
            proc_io = {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}
    except OSError:
        proc_io = {}
    workers = []
    try:
        with _real_open(_out + ".workers") as f:
            workers = [json.loads(line) for line in f if line.strip()]
    except OSError:
        pass
    with _real_open(_out, "w") as f:
        json.dump({"cpu": ru.ru_utime + ru.ru_stime, "user": ru.ru_utime, "sys": ru.ru_stime,
                   "maxrss_kb": ru.ru_maxrss, "wall_in_process": time.perf_counter() - _t0,
                   "rchar": proc_io.get("rchar"), "wchar": proc_io.get("wchar"),
                   "read_bytes": proc_io.get("read_bytes"), "workers": len(workers),
                   "cpu_workers": sum(w["cpu"] for w in workers),
                   "watched_bytes": _count["bytes"] + sum(w["bytes"] for w in workers),
                   "watched_files": _count["files"] + sum(w["files"] for w in workers)}, f)

atexit.register(_report)
sys.argv = ["hpc-sweep"] + sys.argv[1:]
from hpc_sweep.cli import main
main()
'''


@dataclass
class PollResult:
    rc: int
    wall: float
    calls: List[dict]
    probe: dict
    stdout: str
    stderr: str

    @property
    def sched_s(self) -> float:
        return sched_seconds(self.calls)

    @property
    def tool_s(self) -> float:
        return self.wall - self.sched_s

    @property
    def cpu(self) -> Optional[float]:
        return self.probe.get("cpu")

    @property
    def log_bytes(self) -> Optional[int]:
        return self.probe.get("watched_bytes")

    def summary(self) -> str:
        if self.rc != 0:
            return f"rc={self.rc} after {self.wall:.1f} s: {self.stderr.strip()[-300:]}"
        return (f"wall {self.wall:.3f} s, scheduler calls {calls_text(self.calls)} taking {self.sched_s:.3f} s, "
                f"tool time (wall − scheduler) {self.tool_s:.3f} s, process CPU {self.cpu:.3f} s "
                f"(user {self.probe.get('user', 0):.3f} + sys {self.probe.get('sys', 0):.3f}; "
                f"{self.probe.get('workers', 0)} log-reading worker(s) used {self.probe.get('cpu_workers', 0):.3f} s "
                "more), "
                f"log bytes read {self.log_bytes} in {self.probe.get('watched_files')} opens, rchar "
                f"{self.probe.get('rchar')}, wchar {self.probe.get('wchar')}, max RSS {self.probe.get('maxrss_kb', 0) / 1024:.0f} MB")


def run_poll(ex: LocalExec, probe_dir: Path, root: Path, tag: str, timeout: float,
             extra_env: Optional[Dict[str, str]] = None) -> PollResult:
    probe = probe_dir / "probe.py"
    if not probe.exists():
        probe.write_text(PROBE)
        probe.chmod(0o644)
    calls = probe_dir / f"calls-{tag}.jsonl"
    out = probe_dir / f"probe-{tag}.json"
    for p in (calls, out, Path(f"{out}.workers")):
        if p.exists():
            p.unlink()
    env = {"HPC_SWEEP_CALL_LOG": str(calls), "BENCH_PROBE_OUT": str(out),
           "BENCH_PROBE_WATCH": os.pathsep.join([str(root / "outputs") + "/", str(root / "logs") + "/"])}
    env.update(extra_env or {})
    ran = ex.run([ex.python, str(probe), "poll", str(root), "--force"], root, env=env, timeout=timeout)
    data = json.loads(out.read_text()) if out.exists() else {}
    return PollResult(ran.rc, ran.wall, call_log(calls), data, ran.stdout, ran.stderr)


# ------------------------------------------------------------------------------------------------------------
# running state for a poll: logs, start markers, and an squeue that shows the tasks RUNNING


def job_ids(root: Path) -> List[Tuple[str, int, str, str]]:
    """(config, attempt, job id, submission name) of every attempt, from the state database."""
    return cluster_sweeps.read_state(root, "SELECT config, attempt, job_id, submission FROM attempts ORDER BY config")


def submissions(root: Path) -> List[Tuple[str, str, int]]:
    return cluster_sweeps.read_state(root, "SELECT name, scheduler_id, ntasks FROM submissions "
                                           "WHERE status = 'submitted' ORDER BY created_at")


def write_running_state(root: Path, total_log_bytes: int) -> Tuple[int, int]:
    """DeepH logs (outputs/configNNN/<timestamp>/deepx.log) of total_log_bytes in all, and start markers.
    Returns (files, bytes)."""
    atts = job_ids(root)
    per_log = max(1, total_log_bytes // max(1, len(atts)))
    text, _ = deeph_log(per_log)
    data = text.encode()
    markers = root / ".hpc_sweep" / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    written = 0
    for config, attempt, job_id, _sub in atts:
        run_dir = root / "outputs" / config / "2025-11-20_11-54-09"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "deepx.log").write_bytes(data)
        written += len(data)
        sub_id = job_id.split("_")[0]
        (markers / f"{config}.{attempt}.start").write_text(json.dumps(
            {"job_id": job_id, "submission_id": sub_id, "host": "node1", "time": now - 60,
             "index": int(job_id.split("_")[1]) if "_" in job_id else 0, "pid": 4242}) + "\n")
    return len(atts), written


def append_epochs(root: Path, every: int) -> Tuple[int, int]:
    """One new epoch line at the end of every `every`-th log; returns (logs grown, bytes appended)."""
    logs = sorted((root / "outputs").glob("config*/2025-*/deepx.log"))
    grown = added = 0
    for i, path in enumerate(logs):
        if i % every:
            continue
        epochs = sum(1 for line in path.read_text().splitlines() if "] Epoch " in line)
        line = deeph_epoch_line(epochs + 1).encode()
        with open(path, "ab") as f:
            f.write(line)
        grown += 1
        added += len(line)
    return grown, added


def write_fake_bin(bindir: Path, real_squeue: Optional[str]) -> None:
    """Stand-ins for --no-slurm (sbatch, squeue, sacct, scontrol, sacctmgr), or, with real_squeue, a wrapper that
    runs the real squeue and shows PENDING tasks as RUNNING (so that a poll reads every log, as it would for a
    sweep whose tasks all run)."""
    bindir.mkdir(parents=True, exist_ok=True)
    scripts: Dict[str, str] = {}
    if real_squeue:
        scripts["squeue"] = (f"#!/bin/bash\nset -o pipefail\n{real_squeue} \"$@\" | "
                             "sed -e 's/|PENDING|[^|]*|/|RUNNING|None|/'\n")
    else:
        scripts["squeue"] = '#!/bin/bash\ncat "$BENCH_FAKE_SQUEUE" 2>/dev/null\nexit 0\n'
        scripts["sbatch"] = textwrap.dedent("""\
            #!/bin/bash
            # stand-in sbatch: the next job id from a counter beside this script
            d="$(dirname "$0")"
            exec 9>>"$d/.lock"; flock 9
            n=$(( $(cat "$d/.next" 2>/dev/null || echo 1000) + 1 ))
            echo "$n" > "$d/.next"
            echo "$n"
            """)
        scripts["sacct"] = ("#!/bin/bash\necho 'JobID|JobIDRaw|JobName|State|ExitCode|Elapsed|Start|End|"
                            "AllocTRES|NodeList'\n")
        scripts["scontrol"] = "#!/bin/bash\necho 'MaxArraySize            = 1001'\n" \
                              "echo 'MaxJobCount             = 50000'\n"
        scripts["sacctmgr"] = "#!/bin/bash\nexit 0\n"
        scripts["sinfo"] = "#!/bin/bash\nexit 0\n"  # no partitions known: the shape stays unread, nothing checked
        scripts["scancel"] = "#!/bin/bash\nexit 0\n"
    for name, text in scripts.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    bindir.chmod(0o755)


def write_fake_squeue(root: Path, path: Path, skip_every: int = 0) -> int:
    """squeue --me -r output (LIVE_FORMAT) listing every attempt RUNNING, minus every skip_every-th one."""
    lines = []
    for n, (config, attempt, job_id, sub) in enumerate(job_ids(root)):
        if skip_every and n % skip_every == 0:
            continue
        sid, _, idx = job_id.partition("_")
        lines.append(f"{job_id}|{int(sid) * 10000 + int(idx or 0)}|{sid}|{idx or 'N/A'}|{sub}|RUNNING|None|"
                     f"10:00|10:00|node1\n")
    path.write_text("".join(lines))
    path.chmod(0o644)
    return len(lines)


# ------------------------------------------------------------------------------------------------------------
# scheduler benchmarks (2, 3, 4, 7)


class SchedulerBench:
    def __init__(self, bench: Bench, ex: LocalExec, cluster, gen_root: Optional[Path]):
        self.bench = bench
        self.ex = ex
        self.cluster = cluster
        self.real = cluster is not None
        self.gen_root = gen_root
        self.probe_dir = ex.make_dir("probe")
        self.bindir = self.probe_dir / "bin"
        real_squeue = shutil.which("squeue", path=SYSTEM_PATH) if self.real else None
        write_fake_bin(self.bindir, real_squeue)
        self.poll_timeout = 60 if bench.quick else 150
        self.sweeps: Dict[int, Path] = {}
        self.naive_status_per_call: Optional[float] = None

    # -- helpers ----------------------------------------------------------------------------------------------
    def hpc(self, root: Path, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 300) -> Ran:
        return self.ex.run([*self.ex.hpc(), *args], root, env=env, timeout=timeout)

    def fake_env(self, root: Path) -> Dict[str, str]:
        if self.real:
            return {}
        return {"PATH": f"{self.bindir}:{SYSTEM_PATH}", "BENCH_FAKE_SQUEUE": str(root / "bench-squeue.out")}

    def running_env(self, root: Path) -> Dict[str, str]:
        """Environment for a poll that must see every task RUNNING."""
        if self.real:
            return {"PATH": f"{self.bindir}:{self.cluster.user_bin}:{SYSTEM_PATH}"}
        return self.fake_env(root)

    def site(self) -> Dict[str, object]:
        return slurm_site(hold=True, max_array=None if self.real else 1001)

    def make_sweep(self, n: int) -> Path:
        if n == 10000 and self.gen_root is not None:
            return self.gen_root
        root = self.ex.make_dir(f"s{n}")
        a, b = grid_for(n)
        write_sweep(root, f"s{n}", a, b, self.site())
        self.ex.own(root)
        check(self.hpc(root, "generate", str(root)), f"generate {n}")
        return root

    def submit(self, root: Path, n: int) -> Tuple[Ran, List[dict]]:
        calls = self.probe_dir / f"submit-{n}.jsonl"
        if calls.exists():
            calls.unlink()
        env = dict(self.fake_env(root), HPC_SWEEP_CALL_LOG=str(calls))
        os.sync()
        ran = self.hpc(root, "submit", str(root), env=env)
        return ran, call_log(calls)

    # -- 2. submit ----------------------------------------------------------------------------------------------
    def bench_submit(self, n: int, naive: Optional[Tuple[float, int]]) -> Optional[Path]:
        log(f"[submit] {n:,} configs")
        root = self.make_sweep(n)
        ran, calls = self.submit(root, n)
        sbatch = calls_by_command(calls).get("sbatch", 0)
        where = "real Slurm, MaxArraySize=1001" if self.real else "stand-in sbatch (--no-slurm)"
        if ran.rc != 0:
            self.bench.add(Row(f"`submit` {n:,} configs ({where})", f"error rc={ran.rc}", ok=False,
                               detail=ran.stderr[-500:]))
            return None
        tasks = sum(t for _, _, t in submissions(root))
        each = "; ".join(c["argv"][0] + " " + format(c["seconds"], ".3f") for c in calls)
        detail = (f"submit {n:,}: wall {ran.wall:.3f} s (cpu {ran.cpu:.3f} s); {tasks} tasks in "
                  f"{len(submissions(root))} array(s); scheduler calls: {calls_text(calls)} taking "
                  f"{sched_seconds(calls):.3f} s of the wall ({each}).")
        ok_tasks = tasks == n
        if n == 1000:
            naive_s = naive[0] * 1000 / naive[1] if naive else None
            naive_text = (f"1,000× sbatch: {fmt_s(naive_s)}"
                          + (f" (×{1000 // naive[1]} of {naive[1]} measured)" if naive[1] < 1000 else "")
                          + f"; signac-flow {PEER_SUBMIT_1K_S} s (quoted)") if naive else \
                f"signac-flow {PEER_SUBMIT_1K_S} s (quoted)"
            self.bench.add(Row(f"`submit` 1,000 configs: sbatch calls ({where})", str(sbatch), "≤ 2",
                               "1,000 (one per config)", fmt_ratio(1000, sbatch), ok=sbatch <= 2 and ok_tasks,
                               detail=detail))
            self.bench.add(Row(f"`submit` 1,000 configs: wall ({where})",
                               f"{fmt_s(ran.wall)} (scheduler {fmt_s(sched_seconds(calls))})", "≤ 0.5 s",
                               naive_text, fmt_ratio(naive_s or PEER_SUBMIT_1K_S, ran.wall),
                               ok=ran.wall <= 0.5 and ok_tasks, detail=detail))
        elif n == 10000:
            naive_s = naive[0] * 10000 / naive[1] if naive else None
            self.bench.add(Row(f"`submit` 10,000 configs: sbatch calls ({where})", str(sbatch), "≤ 10",
                               "10,000 (one per config)", fmt_ratio(10000, sbatch),
                               ok=sbatch <= 10 and ok_tasks, detail=detail))
            self.bench.add(Row(f"`submit` 10,000 configs: wall ({where})",
                               f"{fmt_s(ran.wall)} (scheduler {fmt_s(sched_seconds(calls))})", "–",
                               f"10,000× sbatch ≈ {fmt_s(naive_s)} (extrapolated)" if naive_s else "–",
                               fmt_ratio(naive_s, ran.wall), ok=None, detail=detail))
        else:
            self.bench.note(detail)
        return root

    # -- 7. naive approaches on the same cluster -------------------------------------------------------------
    def naive_submit(self, count: int) -> Optional[Tuple[float, int]]:
        """count one-task sbatch calls (held), the way a per-job tool submits; returns (seconds, count)."""
        if not self.real:
            return None
        log(f"[naive] {count} × sbatch --hold")
        d = self.ex.make_dir("naive")
        (d / "job.sh").write_text("#!/bin/bash\ntrue\n")
        (d / "job.sh").chmod(0o755)
        loop = (f"for i in $(seq 1 {count}); do sbatch --parsable --hold --job-name=bench-naive "
                f"--output=/dev/null --time=00:10:00 --mem=50M {d}/job.sh || exit 1; done > {d}/ids")
        ran = self.ex.run(["bash", "-c", loop], d, timeout=600)
        check(ran, "naive sbatch loop")
        ids = (d / "ids").read_text().split()
        self.ex.run(["scancel", *ids], d, timeout=120)
        return ran.wall, count

    def naive_status(self, root: Path, count: int) -> Optional[Tuple[float, int]]:
        """count `squeue -j <task id>` calls, one per task, the way a per-job tool asks for status."""
        ids = [j for _, _, j, _ in job_ids(root)][:count]
        log(f"[naive] {len(ids)} × squeue -j <task>")
        listfile = self.probe_dir / "naive-ids"
        listfile.write_text("\n".join(ids) + "\n")
        listfile.chmod(0o644)
        fmt = "%i|%A|%F|%K|%j|%T|%r|%M|%l|%N"
        loop = f"while read id; do squeue -h -j \"$id\" -o '{fmt}' > /dev/null || exit 1; done < {listfile}"
        ran = self.ex.run(["bash", "-c", loop], root, env=self.fake_env(root), timeout=600)
        check(ran, "naive squeue loop")
        self.naive_status_per_call = ran.wall / max(1, len(ids))
        return ran.wall, len(ids)

    def limits_probe(self, root: Path) -> None:
        """What the first submit of a sweep pays to learn the queue limits, and what slurmctld's own cache
        (scontrol show assoc_mgr) would cost instead."""
        if not self.real:
            return
        from hpc_sweep.schedulers.slurm import SlurmScheduler

        user = self.cluster.user
        argvs = SlurmScheduler().limits_argvs(user) + [
            ["scontrol", "show", "assoc_mgr", f"users={user}", "flags=assoc,qos"]]
        parts = []
        for argv in argvs:
            runs = [self.ex.run(argv, root) for _ in range(3)]
            parts.append(f"`{' '.join(argv[:5])}...` {statistics.median(r.wall for r in runs) * 1000:.0f} ms "
                         f"(rc {runs[-1].rc}, {len(runs[-1].stdout)} bytes)")
        self.bench.note("queue-limit queries (median of 3, as the user, each a process start): " + "; ".join(parts))

    def bare_squeue(self, root: Path) -> float:
        times = [self.ex.run(["squeue", "--me", "-r", "-h", "-o", "%i|%A|%F|%K|%j|%T|%r|%M|%l|%N"], root,
                             env=self.fake_env(root)).wall for _ in range(5)]
        return statistics.median(times)

    # -- 3 / 7: polls with every task running -----------------------------------------------------------------
    def prepare_running(self, root: Path, total_bytes: int) -> Tuple[int, int]:
        files, nbytes = write_running_state(root, total_bytes)
        if not self.real:
            write_fake_squeue(root, root / "bench-squeue.out")
        self.ex.own(root / "outputs")
        self.ex.own(root / ".hpc_sweep" / "markers")
        os.sync()  # the timed polls do not pay for writing back the logs just written
        return files, nbytes

    def bench_poll_1k(self, root: Path, naive_status: Optional[Tuple[float, int]]) -> None:
        log("[poll] 1,000 running configs, logs included")
        files, nbytes = self.prepare_running(root, 1_000_000)
        first = run_poll(self.ex, self.probe_dir, root, "1k-first", self.poll_timeout, self.running_env(root))
        grown, added = append_epochs(root, 100)
        os.sync()
        second = run_poll(self.ex, self.probe_dir, root, "1k-second", self.poll_timeout, self.running_env(root))
        naive_s = naive_status[0] * 1000 / naive_status[1] if naive_status else None
        naive_text = ((f"1,000× squeue -j: {fmt_s(naive_s)}"
                       + (f" (×{1000 // naive_status[1]} of {naive_status[1]} measured)"
                          if naive_status[1] < 1000 else "")
                       + "; ") if naive_status else "") + f"signac-flow status {PEER_STATUS_1K_S} s (quoted, no logs)"
        for tag, res, what in (("first", first, f"first: all {files:,} logs new, {fmt_bytes(nbytes)}"),
                               ("steady", second, f"next: {grown} logs grew")):
            self.bench.add(Row(f"`poll` 1,000 running configs, wall ({what})",
                               f"{fmt_s(res.wall)} (scheduler {fmt_s(res.sched_s)})" if res.rc == 0
                               else f"failed/timeout after {fmt_s(res.wall)}",
                               "≤ 0.4 s", naive_text, fmt_ratio(naive_s or PEER_STATUS_1K_S, res.wall),
                               ok=res.rc == 0 and res.wall <= 0.4, detail=f"poll 1k {tag}: {res.summary()}"))

    def bench_poll_10k(self, root: Path, total_bytes: int) -> None:
        log(f"[poll] 10,000 running configs, {fmt_bytes(total_bytes)} of logs")
        files, nbytes = self.prepare_running(root, total_bytes)
        first = run_poll(self.ex, self.probe_dir, root, "10k-first", self.poll_timeout, self.running_env(root))
        naive10k = self.naive_status_per_call * 10000 if self.naive_status_per_call else None
        naive_text = f"10,000× squeue -j ≈ {fmt_s(naive10k)} (extrapolated; reads no logs)" if naive10k else "–"
        self.bench.add(Row(f"`poll` 10,000 running: tool time, first poll ({fmt_bytes(nbytes)} logs new)",
                           self.poll_text(first), "< 1 s", naive_text, fmt_ratio(naive10k, first.wall),
                           ok=first.rc == 0 and first.tool_s < 1, detail=f"poll 10k first: {first.summary()}"))
        self.bench.add(Row("`poll` 10,000 running: log bytes read, first poll",
                           fmt_bytes(first.log_bytes) if first.rc == 0 else "n/a",
                           f"all {fmt_bytes(nbytes)} once", "–", "–",
                           ok=first.rc == 0 and (first.log_bytes or 0) >= nbytes
                           and (first.log_bytes or 0) <= nbytes * 1.1 + 64 * files,
                           detail=f"{files:,} logs of {nbytes // max(1, files)} bytes written; rchar (every byte "
                                  f"the process read: logs, configs, state.db, modules, squeue's pipe) "
                                  f"{first.probe.get('rchar')}"))
        if first.rc != 0:
            self.bench.add(Row("`poll` 10,000 running: second poll", "not run (first poll failed)", "< 1 s",
                               ok=False))
            return
        grown, added = append_epochs(root, 100)
        os.sync()
        second = run_poll(self.ex, self.probe_dir, root, "10k-second", self.poll_timeout, self.running_env(root))
        self.bench.add(Row(f"`poll` 10,000 running: tool time, second poll ({grown} logs grew)",
                           self.poll_text(second), "< 1 s", naive_text, fmt_ratio(naive10k, second.wall),
                           ok=second.rc == 0 and second.tool_s < 1, detail=f"poll 10k second: {second.summary()}"))
        self.bench.add(Row(f"`poll` 10,000 running: log bytes read, second poll (+{fmt_bytes(added)} in {grown} "
                           "logs)", fmt_bytes(second.log_bytes) if second.rc == 0 else "n/a",
                           f"≈ new bytes (≤ {fmt_bytes(added + 64 * grown)})", f"re-read all: {fmt_bytes(nbytes + added)}",
                           fmt_ratio(nbytes + added, second.log_bytes),
                           ok=second.rc == 0 and second.log_bytes is not None and
                           added <= second.log_bytes <= added + 64 * grown,
                           detail=f"appended one epoch line to {grown} logs ({added} bytes); the poll read "
                                  f"{second.log_bytes} bytes of logs; rchar {second.probe.get('rchar')} "
                                  f"(first poll: {first.probe.get('rchar')})"))

    @staticmethod
    def poll_text(res: PollResult) -> str:
        if res.rc == 124:
            return f"> {fmt_s(res.wall)} (killed)"
        if res.rc != 0:
            return f"error rc={res.rc}"
        workers = res.probe.get("workers") or 0
        cpu = f"cpu {fmt_s(res.cpu)}" + (f" + {workers} worker{'s' if workers > 1 else ''} "
                                         f"{fmt_s(res.probe.get('cpu_workers'))}" if workers else "")
        return f"{fmt_s(res.tool_s)} ({cpu}; {calls_text(res.calls)})"

    # -- 4. scheduler calls per poll ----------------------------------------------------------------------------

    def bench_calls(self, sizes: Sequence[int]) -> None:
        """Per size: a poll with every task queued, then one after a tenth of the tasks left the queue (the
        batched accounting query then runs)."""
        for n in sizes:
            root = self.sweeps.get(n)
            if root is None:
                continue
            log(f"[calls] poll of {n:,} configs, a tenth of the tasks gone from the queue")
            gone = self.remove_tenth(root)
            res = run_poll(self.ex, self.probe_dir, root, f"calls-{n}", self.poll_timeout, self.fake_env(root))
            by = calls_by_command(res.calls)
            live, acct = by.get("squeue", 0), by.get("sacct", 0)
            other = sum(v for k, v in by.items() if k not in ("squeue", "sacct"))
            self.bench.add(Row(
                f"scheduler calls per poll, {n:,} configs ({gone:,} tasks left the queue)",
                (f"{live} squeue + {acct} sacct" + (f" + {other} other" if other else "")
                 + f" (tool {fmt_s(res.tool_s)})") if res.rc == 0 else
                (f"> {fmt_s(res.wall)} (killed)" if res.rc == 124 else f"error rc={res.rc}"),
                "≤ 1 squeue + 1 sacct", f"{n:,} queries (one per task)",
                fmt_ratio(n, len(res.calls)) if res.rc == 0 else "–",
                ok=res.rc == 0 and live <= 1 and acct <= 1 and other == 0,
                detail=f"poll {n:,} (real squeue{'' if self.real else ' stand-in'}): {res.summary()}"))

    def remove_tenth(self, root: Path) -> int:
        """Take every tenth task out of the queue (scancel on Slurm; left out of the stand-in squeue)."""
        if not self.real:
            write_fake_squeue(root, root / "bench-squeue.out", skip_every=10)
            return len(job_ids(root)) // 10 + (1 if len(job_ids(root)) % 10 else 0)
        ids = [j for n, (_, _, j, _) in enumerate(job_ids(root)) if n % 10 == 0]
        for i in range(0, len(ids), 500):
            self.ex.run(["scancel", *ids[i:i + 500]], root, timeout=120)
        wanted = set(ids)

        def gone() -> bool:
            r = self.ex.run(["squeue", "--me", "-r", "-h", "-o", "%i"], root)
            return not (wanted & set(r.stdout.split()))

        deadline = time.monotonic() + 60
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.5)
        return len(ids)

    # -- cleanup ----------------------------------------------------------------------------------------------
    def cancel_all(self) -> None:
        for n, root in sorted(self.sweeps.items()):
            ran = self.hpc(root, "cancel", str(root), "--yes", env=self.fake_env(root) if not self.real else None)
            self.bench.note(f"`hpc-sweep cancel --yes` of the {n:,}-config sweep: rc {ran.rc}, {fmt_s(ran.wall)}; "
                            f"{ran.stdout.strip()[:120]}")
        if self.real:
            left = self.cluster.squeue_user()
            self.cluster.cancel_all_user_jobs()
            after = self.cluster.squeue_user()
            self.bench.add(Row("test user's queue after `hpc-sweep cancel --yes` of every sweep",
                               f"{len(left)} task(s) left", "0", ok=not left,
                               detail=f"squeue -u {self.cluster.user} -r after the cancels: {left[:5]}; after "
                                      f"scancel -u (cleanup): {len(after)} left"))


def run_scheduler(bench: Bench, ex: LocalExec, cluster, gen_root: Optional[Path]) -> None:
    sb = SchedulerBench(bench, ex, cluster, gen_root)
    quick = bench.quick
    real = cluster is not None
    naive_n = 100 if quick else 1000
    try:
        naive_sub = sb.naive_submit(naive_n) if real else None
        # 1,000 configs: submit, naive status, polls with logs
        root1k = sb.bench_submit(1000, naive_sub)
        if root1k is not None:
            sb.sweeps[1000] = root1k
            if real:
                bare = sb.bare_squeue(root1k)
                bench.add(Row("bare `squeue --me -r` of 1,000 queued tasks (median of 5)", fmt_s(bare), "–",
                              f"PRODUCT.md: {PRODUCT_BARE_SQUEUE_S} s", ok=None))
                naive_stat = sb.naive_status(root1k, naive_n)
                sb.limits_probe(root1k)
            else:
                naive_stat = None
            sb.bench_poll_1k(root1k, naive_stat)
        # 10,000 configs: submit in arrays under MaxArraySize, polls with 10 MB of logs
        root10k = sb.bench_submit(10000, naive_sub)
        if root10k is not None:
            sb.sweeps[10000] = root10k
            sb.bench_poll_10k(root10k, 10_000_000)
        root100 = sb.make_sweep(100)
        ran, calls = sb.submit(root100, 100)
        check(ran, "submit 100")
        sb.sweeps[100] = root100
        # 4. calls per poll; fresh queue answers (the real squeue, not the RUNNING wrapper)
        sb.bench_calls([100, 1000, 10000])
    finally:
        try:
            sb.cancel_all()
        except Exception as exc:  # noqa: BLE001 - cleanup goes on
            bench.note(f"cancel failed: {exc}")


# ------------------------------------------------------------------------------------------------------------
# the cluster


def start_cluster(bench: Bench):
    from slurm_cluster import SlurmCluster  # tests/cluster, on sys.path (above)

    cluster = SlurmCluster(log=lambda m: log(m))
    t0 = time.monotonic()
    cluster.start()
    cluster.set_config(MaxArraySize=1001, MaxJobCount=50000)
    bench.note(f"private Slurm up in {time.monotonic() - t0:.1f} s (state {cluster.state_dir}), "
               f"MaxArraySize=1001, MaxJobCount=50000; hpc-sweep runs as user '{cluster.user}' from "
               f"{cluster.user_bin}")
    return cluster


def machine() -> Dict[str, str]:
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host": platform.node(), "nproc": str(os.cpu_count()),
            "python": f"{platform.python_version()} ({sys.executable})", "kernel": platform.release()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    info["slurm"] = "none"
    if shutil.which("sbatch", path=SYSTEM_PATH):
        # `sinfo --version` needs a slurm.conf; the package version does not
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "slurm-client"], capture_output=True, text=True) \
            if shutil.which("dpkg-query") else None
        info["slurm"] = (f"slurm-client {r.stdout.strip()}" if r is not None and r.returncode == 0
                         else "installed (version unknown)")
    info["code"] = code_version()
    return info


def code_version() -> str:
    """The commit measured, whether the working tree differs from it, and which hpc_sweep this interpreter runs
    (from a neutral folder, as the local runs do: a stale installed copy would not measure this checkout)."""
    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()
             if line[3:] and not line[3:].startswith("benchmarks/")]
    r = subprocess.run([sys.executable, "-c", "import hpc_sweep; print(hpc_sweep.__file__)"], capture_output=True,
                       text=True, cwd="/")
    where = r.stdout.strip()
    text = f"{head}" + (f" + uncommitted changes in {len(dirty)} file(s)" if dirty else "")
    if where and not where.startswith(str(REPO)):
        text += f"; WARNING: this interpreter imports {where}, not this checkout"
    return text


# ------------------------------------------------------------------------------------------------------------
# report


def table(rows: Sequence[Row]) -> str:
    lines = ["| what | ours | bar | naive / peer | ratio | pass/fail |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [r.what, r.ours, r.bar, r.naive, r.ratio, r.verdict]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def write_results(bench: Bench, info: Dict[str, str], mode: str, argv: Sequence[str]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "latest.md"
    failed = [r for r in bench.rows if r.ok is False]
    parts = [
        "# hpc-sweep benchmarks",
        "",
        f"`python benchmarks/run.py {' '.join(argv)}`".replace("  ", " ") + f" — {mode}",
        "",
        "| machine | |", "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        table(bench.rows),
        "",
        f"{len(bench.rows)} rows, {sum(1 for r in bench.rows if r.ok)} pass, {len(failed)} fail, "
        f"{sum(1 for r in bench.rows if r.ok is None)} informational; run took "
        f"{time.monotonic() - bench.started:.0f} s.",
        "",
        "## Details",
        "",
        *[f"- **{r.what}**: {r.detail}" for r in bench.rows if r.detail],
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in bench.notes],
        "",
    ]
    out.write_text("\n".join(parts))
    return out


# ------------------------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller samples: under 2 minutes")
    parser.add_argument("--no-slurm", action="store_true",
                        help="no private Slurm: stand-in scheduler commands; the real-Slurm rows are skipped")
    parser.add_argument("--keep", action="store_true", help="keep the work folders (and the cluster's state)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    import importlib.util

    if importlib.util.find_spec("hpc_sweep") is None:
        parser.error("hpc_sweep is not importable: run with the venv that has it installed, "
                     "e.g. /tmp/devvenv/bin/python benchmarks/run.py")

    bench = Bench(quick=args.quick)
    info = machine()
    info["load average at start"] = loadavg()
    use_slurm = not args.no_slurm and "scheduler" in only
    if use_slurm and os.geteuid() != 0:
        bench.note("not root: the private Slurm cannot start; stand-in scheduler commands are used (--no-slurm)")
        use_slurm = False
    mode = ("quick" if args.quick else "full") + (", real Slurm" if use_slurm else ", no Slurm (stand-ins)")
    log(f"hpc-sweep benchmarks ({mode}) on {info.get('cpu')} × {info['nproc']}, {info.get('memory')}")

    cluster = None
    work_root = Path(tempfile.mkdtemp(prefix="hpc-sweep-bench-", dir="/tmp"))
    os.chmod(work_root, 0o755)
    status = 0
    try:
        if "help" in only:
            bench_help(bench, work_root)
        if "parse" in only:
            bench_parsers(bench, args.quick)
        if use_slurm:
            cluster = start_cluster(bench)
            ex: LocalExec = ClusterExec(cluster)
        else:
            ex = LocalExec(work_root)
        gen_root = None
        if "generate" in only:
            site = slurm_site(hold=True, max_array=None if use_slurm else 1001)
            gen_root = bench_generate(bench, ex, site, 1 if args.quick else 3)
        if "scheduler" in only:
            if not use_slurm:
                for what in ("`submit` to the real Slurm", "naive per-job sbatch / squeue -j on the real Slurm"):
                    bench.add(Row(what, "skipped (--no-slurm or not root)", ok=None))
            run_scheduler(bench, ex, cluster, gen_root)
    except Exception as exc:  # noqa: BLE001 - the rows measured so far are still written
        import traceback

        traceback.print_exc()
        bench.note(f"ABORTED: {type(exc).__name__}: {str(exc)[:500]}")
        status = 1
    finally:
        info["load average at end"] = loadavg()
        if cluster is not None:
            try:
                cluster.stop()
                if not args.keep:
                    cluster.remove_state()
            except Exception as exc:  # noqa: BLE001
                bench.note(f"stopping the cluster: {exc}")
        if not args.keep:
            shutil.rmtree(work_root, ignore_errors=True)
        else:
            bench.note(f"work folders kept: {work_root}" + (f", {cluster.state_dir}" if cluster else ""))
    out = write_results(bench, info, mode, sys.argv[1:] if argv is None else argv)
    print(table(bench.rows))
    log(f"written {out}; {time.monotonic() - bench.started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
