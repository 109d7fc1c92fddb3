"""A real single-node Slurm 22.05 cluster for the test suite.

``SlurmCluster`` brings up, from scratch and inside one private state directory:

* munged (own key, own socket),
* MariaDB (own datadir, own unix socket, own TCP port on 127.0.0.1),
* slurmdbd, slurmctld and slurmd (own ports, own spool/state/log dirs, ``SLURM_CONF`` pointing into the state dir),

with ``GresTypes=gpu`` / ``Gres=gpu:8`` backed by eight plain files, ``select/cons_tres`` and
``AccountingStorageEnforce=associations,limits,qos``, plus an ordinary Linux user with a Slurm account (root is
exempt from association limits) and a virtual environment that user can run, holding this repository installed:
the wheel named by ``$HPC_SWEEP_TEST_WHEEL`` where set (tests/run-all.sh sets it to the wheel the suite tests),
else the repository's source.

Every daemon is started in the foreground as a child of this process; its PID is recorded and ``stop()`` signals
only those PIDs. Daemons left over from other runs are never touched: all ports are chosen free at start-up.
Start-up waits on conditions (``scontrol ping``, ``sinfo``, ``sacctmgr``) with deadlines, never on fixed sleeps.

Must run as root (daemons, ``runuser``/``setpriv`` to the test user, ``apt-get`` when packages are missing).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]

APT_PACKAGES = ["slurm-wlm", "munge", "slurmdbd", "mariadb-server", "python3-venv"]
# executables whose absence means "install the packages"
REQUIRED_BINARIES = [
    "slurmctld", "slurmd", "slurmdbd", "munged", "munge", "unmunge", "mariadbd", "mariadb-install-db", "mariadb",
    "sbatch", "squeue", "sacct", "sacctmgr", "scontrol", "sinfo", "scancel",
]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_PYTHON = "/usr/bin/python3"
VENV_CACHE_ROOT = Path("/var/tmp/hpc-sweep-test-venvs")
WHEEL_ENV = "HPC_SWEEP_TEST_WHEEL"
CLUSTER_NAME = "hpcsweep"
ACCOUNT = "sweepers"
PARTITION = "debug"
NUM_GPUS = 8


class ClusterError(RuntimeError):
    """The cluster could not be brought up or did not answer in time."""


class ClusterUnavailable(ClusterError):
    """The environment cannot host the cluster at all (not root, packages not installable)."""


class DaemonDied(ClusterError):
    """A daemon of the cluster exited while being waited for."""


# --------------------------------------------------------------------------------------------------------------
# helpers


def _which(name: str) -> Optional[str]:
    return shutil.which(name, path=SYSTEM_PATH + ":" + os.environ.get("PATH", ""))


def _ephemeral_range() -> range:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(lo, hi + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def _port_is_free(port: int) -> bool:
    for addr in ("0.0.0.0", "127.0.0.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


def _free_ports(n: int) -> List[int]:
    """n distinct TCP ports free right now, outside the kernel's ephemeral range (so that no outgoing connection
    takes one of them while a daemon is restarted) and away from the standard Slurm/MariaDB ports."""
    import random

    ephemeral = _ephemeral_range()
    avoid = {3306, 6817, 6818, 6819}
    rng = random.Random(os.getpid() ^ time.time_ns())
    ports: List[int] = []
    for _ in range(10000):
        port = rng.randrange(20000, 32000)
        if port in ephemeral or port in avoid or port in ports:
            continue
        if _port_is_free(port):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise ClusterError("could not find free TCP ports")


def _real_memory_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


def _short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def _tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"<{path} unreadable>"
    return "\n".join(lines[-n:])


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.2,
             what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value; return that value. Raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except DaemonDied:  # no point waiting on
            raise
        except Exception as exc:  # predicate may fail while a daemon is still coming up
            last_exc = exc
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.0f}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise TimeoutError(msg)
        time.sleep(interval)


def ensure_packages(log: Callable[[str], None] = print) -> None:
    """Install the Slurm/munge/MariaDB/venv packages with apt-get when anything is missing (root only)."""
    missing = [b for b in REQUIRED_BINARIES if _which(b) is None]
    venv_ok = subprocess.run([DEBIAN_PYTHON, "-c", "import venv, ensurepip"], capture_output=True).returncode == 0 \
        if os.path.exists(DEBIAN_PYTHON) else False
    if not missing and venv_ok:
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable(f"missing {missing or ['python3-venv']} and not root, cannot apt-get install")
    if _which("apt-get") is None:
        raise ClusterUnavailable(f"missing {missing or ['python3-venv']} and no apt-get on this machine")
    log(f"[slurm-cluster] installing {' '.join(APT_PACKAGES)} (missing: {', '.join(missing) or 'python3-venv'})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=SYSTEM_PATH)
    # another apt/dpkg may hold the lock (e.g. unattended upgrades): let apt wait for it
    lock_opt = ["-o", "DPkg::Lock::Timeout=300"]
    upd = subprocess.run(["apt-get", *lock_opt, "update"], env=env, capture_output=True, text=True)
    inst = subprocess.run(["apt-get", *lock_opt, "install", "-y", *APT_PACKAGES], env=env,
                          capture_output=True, text=True)
    if inst.returncode != 0:
        raise ClusterUnavailable(
            "apt-get install failed:\n" + (upd.stdout + upd.stderr)[-2000:] + (inst.stdout + inst.stderr)[-4000:])
    still = [b for b in REQUIRED_BINARIES if _which(b) is None]
    if still:
        raise ClusterUnavailable(f"after apt-get install still missing: {still}")


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    r = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name],
                       capture_output=True, text=True, env=dict(os.environ, PATH=SYSTEM_PATH))
    if r.returncode != 0 and "already exists" not in r.stderr:
        raise ClusterError(f"useradd {name} failed: {r.stderr}")
    return pwd.getpwnam(name)


# --------------------------------------------------------------------------------------------------------------
# the cluster


class _Daemon:
    def __init__(self, name: str, proc: subprocess.Popen, log: Path):
        self.name, self.proc, self.log = name, proc, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class SlurmCluster:
    """A private single-node Slurm cluster. Use ``start()``/``stop()`` or as a context manager."""

    # daemons in start order; stop() goes in reverse
    DAEMON_ORDER = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")

    def __init__(self, state_dir: Optional[os.PathLike] = None, user: str = "hpcsweep",
                 repo: os.PathLike = REPO_ROOT, cpus: Optional[int] = None, install_packages: bool = True,
                 build_venv: bool = True, log: Callable[[str], None] = None, wheel: Optional[os.PathLike] = None):
        self.user = user
        self.repo = Path(repo)
        wheel = wheel or os.environ.get(WHEEL_ENV)
        self.wheel: Optional[Path] = Path(wheel).resolve() if wheel else None  # None: install the source
        self.install_packages = install_packages
        self.build_venv = build_venv
        self._log_fn = log or (lambda m: print(m, file=sys.stderr, flush=True))
        if state_dir is None:
            state_dir = tempfile.mkdtemp(prefix="hpcsweep-slurm-", dir="/tmp")
        self.state_dir = Path(state_dir)
        self.hostname = _short_hostname()
        self.nproc = os.cpu_count() or 1
        # room for ~16 one-CPU tasks at once even on a small box: slurmd reports the configured values
        # (SlurmdParameters=config_overrides), the tasks of the suite are sleeps and tiny scripts.
        self.cpus = cpus or max(self.nproc, 16)
        self.real_memory = max(2048, int(_real_memory_mb() * 0.9))
        self.daemons: Dict[str, _Daemon] = {}
        self._overrides: Dict[str, Optional[str]] = {}
        self._user_limit: Optional[int] = None
        self._frozen: set = set()  # daemons stopped with SIGSTOP by freeze()
        self._partitions: set = set()  # added by add_partition(), removed by reset()
        self._started = False
        self.startup_seconds: Optional[float] = None
        self.venv_dir: Optional[Path] = None
        self._venv_error: Optional[BaseException] = None

        d = self.state_dir
        self.etc = d / "etc"
        self.slurm_conf = self.etc / "slurm.conf"
        self.gres_conf = self.etc / "gres.conf"
        self.slurmdbd_conf = self.etc / "slurmdbd.conf"
        self.log_dir = d / "log"
        self.run_dir = d / "run"
        self.munge_key_dir = d / "munge-key"
        self.munge_key = self.munge_key_dir / "munge.key"
        self.munge_run = d / "munge-run"
        self.munge_socket = self.munge_run / "munge.socket"
        self.mysql_data = d / "mysql" / "data"
        self.mysql_run = d / "mysql" / "run"
        self.mysql_socket = self.mysql_run / "mysqld.sock"
        self.ctld_state = d / "spool" / "slurmctld"
        self.slurmd_spool = d / "spool" / "slurmd"
        self.gpu_dir = d / "gpus"
        self.work_dir = d / "work"
        self.src_copy = d / "src"
        self.db_pass = hashlib.sha1(os.urandom(16)).hexdigest()[:20]
        (self.ctld_port, self.slurmd_port, self.dbd_port, self.mysql_port) = _free_ports(4)

    # ---------------------------------------------------------------------------------------------------------
    # public API

    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def env(self) -> Dict[str, str]:
        """The environment a command needs to reach this cluster (root or the test user)."""
        path = SYSTEM_PATH
        if self.venv_dir is not None:
            path = f"{self.user_bin}:{path}"
        return {
            "PATH": path,
            "SLURM_CONF": str(self.slurm_conf),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": os.environ.get("TZ", "UTC"),
        }

    @property
    def user_home(self) -> Path:
        return Path(pwd.getpwnam(self.user).pw_dir)

    @property
    def user_bin(self) -> Path:
        if self.venv_dir is None:
            raise ClusterError("no user venv was built (build_venv=False or start() not called)")
        return self.venv_dir / "bin"

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.user).pw_uid

    @property
    def gid(self) -> int:
        return pwd.getpwnam(self.user).pw_gid

    def user_env(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        pw = pwd.getpwnam(self.user)
        env = dict(self.env, HOME=pw.pw_dir, USER=self.user, LOGNAME=self.user, SHELL=pw.pw_shell or "/bin/sh")
        if extra:
            env.update(extra)
        return env

    def make_user_dir(self, name: str = "t") -> Path:
        """A fresh, empty directory under ``work_dir`` owned by the test user (readable by root and the user)."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work_dir))
        os.chown(path, self.uid, self.gid)
        path.chmod(0o755)
        return path

    def run_as_user(self, argv: Sequence[str], cwd: Optional[os.PathLike] = None,
                    env: Optional[Mapping[str, str]] = None, timeout: float = 120,
                    input: Optional[str] = None, check: bool = False) -> subprocess.CompletedProcess:
        """Run argv as the ordinary test user with the cluster environment (plus ``env``); capture text output."""
        full_env = self.user_env(env)
        prefix = self._as_user_prefix()
        return subprocess.run([*prefix, *map(str, argv)], cwd=str(cwd) if cwd else str(self.work_dir),
                              env=full_env, capture_output=True, text=True, timeout=timeout, input=input,
                              check=check)

    def run_as_root(self, argv: Sequence[str], timeout: float = 60, check: bool = False,
                    env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
        full_env = dict(self.env, HOME=os.environ.get("HOME", "/root"))
        if env:
            full_env.update(env)
        r = subprocess.run(list(map(str, argv)), env=full_env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise ClusterError(f"{' '.join(map(str, argv))} failed rc={r.returncode}: {r.stdout}{r.stderr}")
        return r

    def sacctmgr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run_as_root(["sacctmgr", "-i", *args], check=check)

    def set_user_limit(self, max_submit_jobs: Optional[int]) -> None:
        """Set (or clear with None) MaxSubmitJobs on the test user's association; waits until slurmctld has it."""
        value = -1 if max_submit_jobs is None else int(max_submit_jobs)
        self._user_limit = None if value < 0 else value
        self.sacctmgr("modify", "user", "where", f"name={self.user}", "set", f"MaxSubmitJobs={value}")
        want = "" if value < 0 else str(value)

        def applied() -> bool:
            r = self.run_as_root(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={self.user}",
                                  "format=MaxSubmit"])
            if r.returncode != 0 or r.stdout.strip() != want:
                return False
            # slurmctld gets the change pushed from slurmdbd; check its cache too
            r = self.run_as_root(["scontrol", "show", "assoc_mgr", f"users={self.user}", "flags=assoc"])
            return r.returncode == 0 and self._assoc_mgr_maxsubmit(r.stdout) == (value if value >= 0 else None)

        wait_for(applied, 30, what=f"MaxSubmitJobs={value} to reach slurmctld")

    def _assoc_mgr_maxsubmit(self, text: str):
        """MaxSubmitJobs of the test user's association in ``scontrol show assoc_mgr`` text: an int, None for
        unlimited, or the string "missing" when slurmctld does not list the association (yet)."""
        for block in re.split(r"(?m)^ClusterName=", text):
            if re.search(rf"\bUserName={re.escape(self.user)}\(", block):
                m = re.search(r"\bMaxSubmitJobs=([^\s(]*)", block)
                value = m.group(1) if m else ""
                return None if value in ("", "N") else int(value)
        return "missing"

    def set_config(self, **keys) -> None:
        """Override slurm.conf keys (value None removes an override), rewrite slurm.conf, restart slurmctld."""
        known = {k.lower(): k for k in [*self._base_slurm_conf(), *self._overrides]}
        for k, v in keys.items():
            k = known.get(k.lower(), k)  # slurm.conf keys are case-insensitive: one spelling per key
            self._overrides[k] = None if v is None else str(v)
        self._overrides = {k: v for k, v in self._overrides.items() if v is not None}
        self._write_slurm_conf()
        self.restart_slurmctld()

    def reset_config(self) -> None:
        """Back to the base slurm.conf (restarts slurmctld only if something was overridden)."""
        if not self._overrides:
            return
        self._overrides = {}
        self._write_slurm_conf()
        self.restart_slurmctld()

    @property
    def user_limit(self) -> Optional[int]:
        """The MaxSubmitJobs last set with set_user_limit (None: unlimited)."""
        return self._user_limit

    @property
    def config_overrides(self) -> Dict[str, str]:
        return dict(self._overrides)

    def scontrol_config(self) -> Dict[str, str]:
        r = self.run_as_root(["scontrol", "show", "config"], check=True)
        out = {}
        for line in r.stdout.splitlines():
            if " = " in line:
                k, v = line.split(" = ", 1)
                out[k.strip()] = v.strip()
        return out

    def freeze(self, name: str = "slurmctld") -> None:
        """SIGSTOP a daemon this cluster started: it hangs as an overloaded controller does (the kernel still
        accepts connections and queues requests; nothing answers until :meth:`thaw`)."""
        self._check_alive(name)
        os.kill(self.daemons[name].pid, signal.SIGSTOP)
        self._frozen.add(name)

    def thaw(self, name: Optional[str] = None) -> None:
        """SIGCONT a daemon :meth:`freeze` stopped (all of them when no name is given)."""
        for frozen in [name] if name else sorted(self._frozen):
            if frozen in self._frozen and self._alive(frozen):
                os.kill(self.daemons[frozen].pid, signal.SIGCONT)
            self._frozen.discard(frozen)

    def stop_slurmctld(self) -> None:
        self._stop_daemon("slurmctld")

    def start_slurmctld(self) -> None:
        self._start_slurmctld()
        self._wait_ctld_up()
        # a restarted slurmctld shows the node UNKNOWN until slurmd registers again (seconds); SIGHUP makes our
        # slurmd re-read slurm.conf and register now
        if self._alive("slurmd"):
            os.kill(self.daemons["slurmd"].pid, signal.SIGHUP)

    def restart_slurmctld(self) -> None:
        self.stop_slurmctld()
        self.start_slurmctld()
        self._wait_node_ready()

    def stop_slurmdbd(self) -> None:
        self._stop_daemon("slurmdbd")

    def start_slurmdbd(self) -> None:
        self._start_slurmdbd()
        self._wait_dbd_up()

    def stop_slurmd(self) -> None:
        self._stop_daemon("slurmd")

    def start_slurmd(self) -> None:
        self._start_slurmd()
        self._wait_node_ready()

    def ensure_running(self) -> None:
        """Restart whichever of slurmdbd, slurmctld, slurmd a (fault) test left stopped."""
        if not self._alive("slurmdbd"):
            self.start_slurmdbd()
        if not self._alive("slurmctld"):
            self.start_slurmctld()
        if not self._alive("slurmd"):
            self._start_slurmd()
        self._wait_node_ready()

    def add_partition(self, name: str, **keys: str) -> None:
        """A partition of this node made at run time (``scontrol create``), e.g. ``MaxTime="00:30:00"``;
        :meth:`reset` removes it."""
        options = [f"{key}={value}" for key, value in keys.items()]
        self.run_as_root(["scontrol", "create", f"PartitionName={name}", f"Nodes={self.hostname}", *options],
                         check=True)
        self._partitions.add(name)

    def update_partition(self, name: str, **keys: str) -> None:
        self.run_as_root(["scontrol", "update", f"PartitionName={name}", *(f"{k}={v}" for k, v in keys.items())],
                         check=True)

    def remove_partition(self, name: str) -> None:
        self.run_as_root(["scontrol", "delete", f"PartitionName={name}"], check=True)
        self._partitions.discard(name)

    def drain_node(self, reason: str = "test: drained") -> None:
        """Drain the node (it takes no new job) and wait until sinfo says so; :meth:`reset` resumes it."""
        self.run_as_root(["scontrol", "update", f"nodename={self.hostname}", "state=drain", f"reason={reason}"],
                         check=True)
        wait_for(lambda: "drain" in self._node_state(), 30, interval=0.2, what=f"node {self.hostname} drained")

    def resume_node(self) -> None:
        self.run_as_root(["scontrol", "update", f"nodename={self.hostname}", "state=resume"])
        self._wait_node_ready()

    def reset(self) -> None:
        """Test isolation: daemons running (the node resumed), no jobs of the test user, no user limit, no
        partition a test added, base slurm.conf."""
        self.thaw()
        self.ensure_running()
        self.cancel_all_user_jobs()
        for name in sorted(self._partitions):
            self.run_as_root(["scontrol", "delete", f"PartitionName={name}"])
        self._partitions.clear()
        if self._user_limit is not None:
            self.set_user_limit(None)
        self.reset_config()

    def remove_state(self) -> None:
        """Delete the state directory (only once every daemon of this cluster has stopped)."""
        if any(d.alive() for d in self.daemons.values()):
            raise ClusterError(f"daemons still running: {self.pids()}")
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def squeue_user(self, fmt: str = "%i|%A|%F|%K|%j|%T|%r") -> List[str]:
        """The test user's jobs, one line per task (``squeue -r``), in ``fmt``."""
        r = self.run_as_root(["squeue", "-u", self.user, "-r", "-h", "-o", fmt], check=True)
        return [line for line in r.stdout.splitlines() if line.strip()]

    def sacct(self, job_ids: Iterable, fmt: str = "JobID,JobIDRaw,State,ExitCode,AllocTRES") -> List[List[str]]:
        ids = ",".join(str(j) for j in job_ids)
        r = self.run_as_root(["sacct", "-X", "-n", "-P", "-j", ids, f"--format={fmt}"], check=True)
        return [line.split("|") for line in r.stdout.splitlines() if line.strip()]

    FINAL_STATES = ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                    "BOOT_FAIL", "DEADLINE")

    def sacct_settled(self, job_ids: Iterable, fmt: str = "JobID,JobIDRaw,State,ExitCode,AllocTRES",
                      expect: Optional[int] = None, timeout: float = 30) -> List[List[str]]:
        """Like ``sacct`` but first waits until slurmdbd has caught up with slurmctld: every row in a final state,
        no folded ``123_[4-5]`` rows, ``expect`` rows when given, and the same answer twice in a row. (Accounting
        lags slurmctld by a few seconds, more under load: right after submission sacct may show nothing, then an
        array as one PENDING row, although squeue already lists its tasks finished.)"""
        ids = list(job_ids)
        last: List[Optional[List[List[str]]]] = [None]

        def settled():
            rows = self.sacct(ids, fmt="JobID,State," + fmt)
            ok = (rows and all("_[" not in r[0] and r[1].split()[0] in self.FINAL_STATES for r in rows)
                  and (expect is None or len(rows) == expect))
            if not ok:
                last[0] = None
                return None
            if rows == last[0]:
                return [r[2:] for r in rows]
            last[0] = rows
            return None

        return wait_for(settled, timeout, interval=0.5, what=f"sacct rows of {ids} in final states")

    def cancel_all_user_jobs(self, timeout: float = 60) -> None:
        """scancel every job of the test user and wait until the queue shows none of them."""
        if not self._alive("slurmctld"):
            return
        self.run_as_root(["scancel", "-u", self.user])
        wait_for(lambda: self.run_as_root(["squeue", "-u", self.user, "-h", "-o", "%i"]).stdout.strip() == "",
                 timeout, interval=0.3, what=f"{self.user}'s jobs to leave the queue")

    def wait_for(self, predicate: Callable[[], T], timeout: float = 60, interval: float = 0.5,
                 what: str = "condition") -> T:
        return wait_for(predicate, timeout, interval=interval, what=what)

    def pids(self) -> Dict[str, int]:
        return {name: d.pid for name, d in self.daemons.items() if d.alive()}

    def diagnostics(self, lines: int = 25) -> str:
        out = []
        for name in self.DAEMON_ORDER:
            out.append(f"--- {name} ({'alive' if self._alive(name) else 'not running'})")
            # the daemons run in the foreground: .out has their stderr (a copy of .log plus start-up failures)
            log, out_file = self.log_dir / f"{name}.log", self.log_dir / f"{name}.out"
            if log.exists() and log.stat().st_size:
                out.append(_tail(log, lines))
            if out_file.exists() and out_file.stat().st_size and not (log.exists() and log.stat().st_size):
                out.append(_tail(out_file, lines))
        return "\n".join(out)

    # ---------------------------------------------------------------------------------------------------------
    # start / stop

    def start(self) -> "SlurmCluster":
        if self._started:
            return self
        t0 = time.monotonic()
        if os.geteuid() != 0:
            raise ClusterUnavailable("the Slurm test cluster must be started as root")
        if self.install_packages:
            ensure_packages(self._log)
        else:
            missing = [b for b in REQUIRED_BINARIES if _which(b) is None]
            if missing:
                raise ClusterUnavailable(f"missing {missing}")
        ensure_user(self.user)
        self._started = True
        venv_thread: Optional[threading.Thread] = None
        try:
            self._make_dirs()
            if self.build_venv:
                venv_thread = threading.Thread(target=self._venv_worker, name="user-venv", daemon=True)
                venv_thread.start()
            self._write_configs()
            self._start_munged()
            self._init_mysql()
            self._start_mysql()
            self._wait_munge_up()
            self._wait_mysql_up()
            self._setup_database()
            self._start_slurmdbd()
            self._wait_dbd_up()
            self._bootstrap_accounts()
            self._start_slurmctld()
            self._start_slurmd()
            self._wait_ctld_up()
            self._wait_node_ready()
            self._wait_user_known()
            if venv_thread is not None:
                venv_thread.join(600)
                if venv_thread.is_alive():
                    raise ClusterError("building the test user's venv took over 10 minutes")
                if self._venv_error is not None:
                    raise ClusterError(f"building the test user's venv failed: {self._venv_error}")
        except BaseException as exc:
            diag = self.diagnostics()
            if venv_thread is not None and venv_thread.is_alive():
                venv_thread.join(120)  # it writes into the state dir
            self.stop()
            if isinstance(exc, (ClusterError, TimeoutError)):
                raise ClusterError(f"{exc}\n{diag}") from exc
            raise
        self.startup_seconds = time.monotonic() - t0
        self._log(f"[slurm-cluster] up in {self.startup_seconds:.1f}s: state {self.state_dir}, "
                  f"ports ctld={self.ctld_port} slurmd={self.slurmd_port} dbd={self.dbd_port} "
                  f"mysql={self.mysql_port}, pids {self.pids()}")
        return self

    def stop(self, timeout: float = 30) -> None:
        """Cancel the cluster's jobs, then stop every daemon this object started (by PID), newest first."""
        if self._alive("slurmctld"):
            try:
                self.run_as_root(["scancel", "--full", "-u", self.user], timeout=15)
                self.run_as_root(["scancel", "--full", "-u", "root"], timeout=15)
                wait_for(lambda: self.run_as_root(["squeue", "-h", "-o", "%i"], timeout=10).stdout.strip() == "",
                         15, interval=0.3, what="queue to drain")
            except Exception as exc:  # best effort
                self._log(f"[slurm-cluster] draining jobs before stop: {exc}")
        for name in reversed(self.DAEMON_ORDER):
            if name in self.daemons:
                self._stop_daemon(name, timeout=timeout)
        self._started = False

    # ---------------------------------------------------------------------------------------------------------
    # internals

    def _log(self, msg: str) -> None:
        self._log_fn(msg)

    def _alive(self, name: str) -> bool:
        d = self.daemons.get(name)
        return d is not None and d.alive()

    def _as_user_prefix(self) -> List[str]:
        setpriv = _which("setpriv")
        if setpriv:
            return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"]
        return [_which("runuser") or "runuser", "-u", self.user, "--"]

    def _daemon_env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
        env.update(PATH=SYSTEM_PATH, SLURM_CONF=str(self.slurm_conf), LANG="C.UTF-8")
        return env

    def _spawn(self, name: str, argv: List[str], env: Optional[Dict[str, str]] = None) -> _Daemon:
        if self._alive(name):
            raise ClusterError(f"{name} already running (pid {self.daemons[name].pid})")
        log = self.log_dir / f"{name}.out"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    env=env or self._daemon_env(), cwd=str(self.state_dir), start_new_session=True)
        d = _Daemon(name, proc, log)
        self.daemons[name] = d
        return d

    def _stop_daemon(self, name: str, timeout: float = 30) -> None:
        d = self.daemons.get(name)
        if d is None or not d.alive():
            return
        self.thaw(name)  # a stopped process would not act on the TERM
        try:
            os.kill(d.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            d.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._log(f"[slurm-cluster] {name} (pid {d.pid}) ignored SIGTERM for {timeout}s, sending SIGKILL")
            try:
                os.kill(d.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            d.proc.wait(10)

    def _check_alive(self, *names: str) -> None:
        for name in names:
            d = self.daemons.get(name)
            if d is not None and not d.alive():
                raise DaemonDied(f"{name} exited with rc={d.proc.returncode}:\n{_tail(d.log)}\n"
                                   f"{_tail(self.log_dir / (name + '.log'))}")

    def _make_dirs(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        for p in (self.etc, self.log_dir, self.run_dir, self.munge_run, self.mysql_run, self.ctld_state,
                  self.slurmd_spool, self.gpu_dir, self.work_dir):
            p.mkdir(parents=True, exist_ok=True)
            p.chmod(0o755)
        self.munge_key_dir.mkdir(mode=0o700, exist_ok=True)
        self.mysql_data.parent.mkdir(exist_ok=True)
        self.mysql_data.parent.chmod(0o755)
        os.chown(self.work_dir, self.uid, self.gid)
        for i in range(NUM_GPUS):
            (self.gpu_dir / f"gpu{i}").touch()

    # ---- configuration files

    def _base_slurm_conf(self) -> Dict[str, str]:
        L, R = self.log_dir, self.run_dir
        return {
            "ClusterName": CLUSTER_NAME,
            "SlurmctldHost": f"{self.hostname}(127.0.0.1)",
            "SlurmctldPort": str(self.ctld_port),
            "SlurmdPort": str(self.slurmd_port),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "CredType": "cred/munge",
            "StateSaveLocation": str(self.ctld_state),
            "SlurmdSpoolDir": str(self.slurmd_spool),
            "SlurmctldPidFile": str(R / "slurmctld.pid"),
            "SlurmdPidFile": str(R / "slurmd.pid"),
            "SlurmctldLogFile": str(L / "slurmctld.log"),
            "SlurmdLogFile": str(L / "slurmd.log"),
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "MpiDefault": "none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "DefMemPerCPU": "50",
            "GresTypes": "gpu",
            "AccountingStorageType": "accounting_storage/slurmdbd",
            "AccountingStorageHost": "127.0.0.1",
            "AccountingStoragePort": str(self.dbd_port),
            # for the slurmdbd connection the munge socket comes from AccountingStoragePass (not AuthInfo)
            "AccountingStoragePass": str(self.munge_socket),
            "AccountingStorageEnforce": "associations,limits,qos",
            "AccountingStorageTRES": "gres/gpu",
            "JobAcctGatherType": "jobacct_gather/linux",
            "JobAcctGatherFrequency": "30",
            "JobCompType": "jobcomp/none",
            "SchedulerType": "sched/backfill",
            "SchedulerParameters": "sched_interval=2,bf_interval=1,sched_min_interval=100000",
            "MinJobAge": "5",
            "OverTimeLimit": "0",
            "KillWait": "5",
            "InactiveLimit": "0",
            "ReturnToService": "2",
            "SlurmctldTimeout": "30",
            "SlurmdTimeout": "60",
            "MessageTimeout": "10",
            "SlurmdParameters": "config_overrides",
        }

    def _write_slurm_conf(self) -> None:
        conf = self._base_slurm_conf()
        conf.update(self._overrides)
        lines = ["# written by tests/cluster/slurm_cluster.py"]
        lines += [f"{k}={v}" for k, v in conf.items()]
        lines.append(f"NodeName={self.hostname} NodeAddr=127.0.0.1 NodeHostname={self.hostname} "
                     f"CPUs={self.cpus} RealMemory={self.real_memory} Gres=gpu:{NUM_GPUS} State=UNKNOWN")
        lines.append(f"PartitionName={PARTITION} Nodes={self.hostname} Default=YES MaxTime=INFINITE State=UP")
        tmp = self.slurm_conf.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o644)
        os.replace(tmp, self.slurm_conf)

    def _write_configs(self) -> None:
        self._write_slurm_conf()
        # plain files, not devices: slurmd logs an error per file but registers gpu:8
        # (see tests/fixtures/slurm-22.05/README.md)
        self.gres_conf.write_text(f"AutoDetect=off\nNodeName={self.hostname} Name=gpu File={self.gpu_dir}/gpu[0-{NUM_GPUS - 1}]\n")
        self.gres_conf.chmod(0o644)
        dbd = [
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "DbdAddr=127.0.0.1",
            f"DbdHost={self.hostname}",
            f"DbdPort={self.dbd_port}",
            "SlurmUser=root",
            "DebugLevel=info",
            f"LogFile={self.log_dir / 'slurmdbd.log'}",
            f"PidFile={self.run_dir / 'slurmdbd.pid'}",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={self.mysql_port}",
            "StorageUser=slurm",
            f"StoragePass={self.db_pass}",
            "StorageLoc=slurm_acct_db",
        ]
        fd = os.open(self.slurmdbd_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(dbd) + "\n")
        os.chmod(self.slurmdbd_conf, 0o600)

    # ---- munge

    def _start_munged(self) -> None:
        fd = os.open(self.munge_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(1024))
        self._spawn("munged", [_which("munged"), "--foreground", "--force",
                               f"--socket={self.munge_socket}", f"--key-file={self.munge_key}",
                               f"--pid-file={self.run_dir / 'munged.pid'}",
                               f"--log-file={self.log_dir / 'munged.log'}",
                               f"--seed-file={self.munge_key_dir / 'munged.seed'}", "--num-threads=4"])

    def _wait_munge_up(self) -> None:
        def ok() -> bool:
            self._check_alive("munged")
            if not self.munge_socket.exists():
                return False
            enc = subprocess.run([_which("munge"), "-n", "-S", str(self.munge_socket)], capture_output=True)
            if enc.returncode != 0:
                return False
            dec = subprocess.run([_which("unmunge"), "-S", str(self.munge_socket)], input=enc.stdout,
                                 capture_output=True)
            return dec.returncode == 0

        wait_for(ok, 20, interval=0.1, what="munged")

    # ---- MariaDB

    def _init_mysql(self) -> None:
        self.mysql_data.mkdir(exist_ok=True)
        r = subprocess.run([_which("mariadb-install-db"), "--no-defaults", f"--datadir={self.mysql_data}",
                            "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db",
                            "--skip-name-resolve"],
                           capture_output=True, text=True, env=self._daemon_env(), timeout=180)
        (self.log_dir / "mariadb-install-db.out").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed rc={r.returncode}: {(r.stdout + r.stderr)[-3000:]}")

    def _start_mysql(self) -> None:
        self._spawn("mariadbd", [
            _which("mariadbd"), "--no-defaults", f"--datadir={self.mysql_data}", f"--socket={self.mysql_socket}",
            f"--port={self.mysql_port}", "--bind-address=127.0.0.1", f"--pid-file={self.run_dir / 'mariadbd.pid'}",
            "--user=root", "--skip-name-resolve", f"--log-error={self.log_dir / 'mariadbd.log'}",
            f"--tmpdir={self.mysql_run}", "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=64M",
            "--innodb-lock-wait-timeout=900", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=2",
        ])

    def _mysql(self, sql: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([_which("mariadb"), "--no-defaults", f"--socket={self.mysql_socket}", "-uroot",
                            "-N", "-B", "-e", sql], capture_output=True, text=True, timeout=60,
                           env=self._daemon_env())
        if check and r.returncode != 0:
            raise ClusterError(f"mariadb {sql!r} failed: {r.stderr}")
        return r

    def _wait_mysql_up(self) -> None:
        def ok() -> bool:
            self._check_alive("mariadbd")
            return self.mysql_socket.exists() and self._mysql("SELECT 1", check=False).returncode == 0

        wait_for(ok, 60, interval=0.2, what="MariaDB")

    def _setup_database(self) -> None:
        p = self.db_pass
        self._mysql(
            "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
            + "".join(f"CREATE USER IF NOT EXISTS 'slurm'@'{h}' IDENTIFIED BY '{p}'; "
                      f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{h}'; " for h in ("127.0.0.1", "localhost"))
            + "FLUSH PRIVILEGES;")

    # ---- slurmdbd / slurmctld / slurmd

    def _start_slurmdbd(self) -> None:
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])

    def _wait_dbd_up(self) -> None:
        def ok() -> bool:
            self._check_alive("slurmdbd")
            r = self.run_as_root(["sacctmgr", "-n", "-P", "list", "cluster", "format=Cluster"], timeout=30)
            return r.returncode == 0 and "error" not in r.stderr.lower()

        wait_for(ok, 60, interval=0.3, what="slurmdbd")

    def _bootstrap_accounts(self) -> None:
        clusters = self.run_as_root(["sacctmgr", "-n", "-P", "list", "cluster", "format=Cluster"], check=True)
        if CLUSTER_NAME not in clusters.stdout.split():
            self.sacctmgr("add", "cluster", CLUSTER_NAME)
        self.sacctmgr("add", "account", ACCOUNT, f"cluster={CLUSTER_NAME}", "Description=hpc-sweep tests",
                      "Organization=tests", check=False)
        self.sacctmgr("add", "user", self.user, f"account={ACCOUNT}", f"cluster={CLUSTER_NAME}",
                      f"DefaultAccount={ACCOUNT}", check=False)
        r = self.run_as_root(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={self.user}",
                              "format=Account"], check=True)
        if ACCOUNT not in r.stdout.split():
            raise ClusterError(f"could not create association for {self.user}: {r.stdout}{r.stderr}")

    def _start_slurmctld(self) -> None:
        # -D foreground; -i ignore errors reading state files that do not match (a state dir of this cluster only)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])

    def _wait_ctld_up(self) -> None:
        def ok() -> bool:
            self._check_alive("slurmctld")
            r = self.run_as_root(["scontrol", "ping"], timeout=30)
            return r.returncode == 0 and "is UP" in r.stdout

        wait_for(ok, 60, interval=0.2, what="slurmctld")

    def _start_slurmd(self) -> None:
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.hostname])

    def _node_state(self) -> str:
        r = self.run_as_root(["sinfo", "-h", "-N", "-n", self.hostname, "-o", "%T"], timeout=30)
        lines = r.stdout.strip().lower().splitlines() if r.returncode == 0 else []
        return lines[0] if lines else ""  # one line per partition of the node: the same state

    def _wait_node_ready(self) -> None:
        resumed = [False]

        def ok() -> bool:
            self._check_alive("slurmctld", "slurmd")
            state = self._node_state()
            if state.rstrip("*~#!%$@^-") in ("idle", "mixed", "allocated", "completing"):
                return True
            if ("drain" in state or state.startswith("down")) and not resumed[0]:
                self.run_as_root(["scontrol", "update", f"nodename={self.hostname}", "state=resume"])
                resumed[0] = True
            return False

        wait_for(ok, 60, interval=0.2, what=f"node {self.hostname} to be idle")
        r = self.run_as_root(["scontrol", "show", "node", self.hostname], check=True)
        if f"gpu:{NUM_GPUS}" not in r.stdout:
            raise ClusterError(f"node registered without gpu:{NUM_GPUS}:\n{r.stdout}")

    def _wait_user_known(self) -> None:
        def ok() -> bool:
            r = self.run_as_root(["scontrol", "show", "assoc_mgr", f"users={self.user}", "flags=assoc"])
            return r.returncode == 0 and f"UserName={self.user}(" in r.stdout

        wait_for(ok, 30, interval=0.2, what=f"slurmctld to know user {self.user}")

    # ---- the test user's virtual environment

    def _venv_worker(self) -> None:
        try:
            self._build_user_venv()
        except BaseException as exc:  # reported by start()
            self._venv_error = exc

    def _copy_repo(self) -> Path:
        if self.src_copy.exists():
            shutil.rmtree(self.src_copy)
        patterns = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv",
                                          ".pytest_cache", ".hypothesis", "tests", "demo-sweep", "*.pyc")
        benchmarks = self.repo / "benchmarks"

        def ignore(folder: str, names: List[str]) -> set:
            # benchmarks/results only: hpc_sweep/results is a package
            return set(patterns(folder, names)) | ({"results"} if Path(folder) == benchmarks else set())

        shutil.copytree(self.repo, self.src_copy, ignore=ignore, symlinks=True)
        return self.src_copy

    def _pip(self, venv: Path, *args: str, timeout: float = 900) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
        env.update(PATH=f"{venv / 'bin'}:{SYSTEM_PATH}", PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PIP_ROOT_USER_ACTION="ignore", PIP_NO_INPUT="1")
        r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *args], capture_output=True, text=True,
                           env=env, timeout=timeout, cwd=str(self.state_dir))
        with open(self.log_dir / "user-venv.log", "a") as f:
            f.write(f"$ pip {' '.join(args)}\n{r.stdout}{r.stderr}\n")
        if r.returncode != 0:
            raise ClusterError(f"pip {' '.join(args)} failed rc={r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")

    @staticmethod
    def _make_world_readable(root: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in [*dirnames, *filenames, ""]:
                p = os.path.join(dirpath, n) if n else dirpath
                if os.path.islink(p):
                    continue
                mode = os.stat(p).st_mode
                want = mode | 0o444 | (0o111 if (mode & 0o100 or os.path.isdir(p)) else 0)
                if want != mode:
                    os.chmod(p, want)

    def _package_source(self) -> Path:
        """What pip installs for the test user: the wheel under test, or a copy of the repository's source."""
        if self.wheel is None:
            return self._copy_repo()
        if not self.wheel.is_file():
            raise ClusterError(f"{WHEEL_ENV}={self.wheel}: no such wheel")
        return self.wheel

    def _build_requirements(self) -> List[str]:
        """The build backend's requirements (pyproject.toml), for installs from source without build isolation."""
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            import tomli as tomllib
        return list(tomllib.loads((self.repo / "pyproject.toml").read_text())["build-system"]["requires"])

    def _deps_venv(self, src: Path) -> Path:
        """A cached venv (Debian python) holding the repository's dependencies but not the package itself.

        Keyed by pyproject.toml: built once per machine (needs the package registry), reused by later sessions."""
        key = hashlib.sha256((self.repo / "pyproject.toml").read_bytes() + b"[search]"
                             + os.path.realpath(DEBIAN_PYTHON).encode()).hexdigest()[:16]
        VENV_CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        VENV_CACHE_ROOT.chmod(0o755)
        venv = VENV_CACHE_ROOT / key
        with open(VENV_CACHE_ROOT / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions on one machine build it once
            ready = venv / ".hpc-sweep-deps-ready"
            if not ready.exists():
                if venv.exists():
                    shutil.rmtree(venv)
                r = subprocess.run([DEBIAN_PYTHON, "-m", "venv", str(venv)], capture_output=True, text=True,
                                   env=dict(os.environ, PATH=SYSTEM_PATH))
                if r.returncode != 0:
                    raise ClusterError(f"{DEBIAN_PYTHON} -m venv failed: {r.stdout}{r.stderr}")
                self._pip(venv, "install", "--upgrade", *self._build_requirements(), "wheel")
                # the package with its dependencies, then without the package itself: each session's venv
                # installs the package under test on top
                # with the search extra (Optuna): the [search] test runs hpc-sweep as this user too
                self._pip(venv, "install", *self._no_build_isolation(), f"{src}[search]")
                self._pip(venv, "uninstall", "-y", "hpc-sweep")
                self._make_world_readable(venv)
                ready.write_text("ok\n")
        return venv

    def _no_build_isolation(self) -> List[str]:
        return [] if self.wheel is not None else ["--no-build-isolation"]  # a wheel needs no build

    def _build_user_venv(self) -> None:
        """The test user's venv, from Debian's python3 (the default python3 may live under /root, which the user
        cannot enter): a fresh per-session venv holding the package under test (the wheel, or the repository's
        current source; ``--no-deps``), that sees the cached dependency venv through a .pth file."""
        src = self._package_source()
        deps = self._deps_venv(src)
        venv = self.state_dir / "venv"
        r = subprocess.run([DEBIAN_PYTHON, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True,
                           env=dict(os.environ, PATH=SYSTEM_PATH))
        if r.returncode != 0:
            raise ClusterError(f"{DEBIAN_PYTHON} -m venv failed: {r.stdout}{r.stderr}")
        (site,) = venv.glob("lib/python3*/site-packages")
        (deps_site,) = deps.glob("lib/python3*/site-packages")
        (site / "_hpc_sweep_test_deps.pth").write_text(f"{deps_site}\n")
        # pip, setuptools and wheel come from the deps venv through the .pth; the install goes to this venv
        self._pip(venv, "install", "--no-deps", *self._no_build_isolation(), "--ignore-installed", str(src))
        self._make_world_readable(venv)
        self.venv_dir = venv
        # sanity: the test user can run it, and imports the package from this venv
        r = self.run_as_user([str(venv / "bin" / "python"), "-c", "import hpc_sweep; print(hpc_sweep.__file__)"],
                             cwd=self.work_dir, timeout=60)
        if r.returncode != 0 or not r.stdout.strip().startswith(str(site)):
            raise ClusterError(f"the test user cannot run the venv {venv}: {r.stdout}{r.stderr}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Manual use: ``python tests/cluster/slurm_cluster.py`` brings the cluster up and keeps it until Ctrl-C."""
    cluster = SlurmCluster()
    cluster.start()
    print(f"export SLURM_CONF={cluster.slurm_conf}")
    print(f"user {cluster.user}, venv bin {cluster.user_bin}, work dir {cluster.work_dir}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
