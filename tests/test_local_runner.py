"""The local backend end to end, with real processes: the hpc-sweep CLI, the detached runner, bash job scripts and
the demo trainer. Nothing is mocked; nvidia-smi is a script printing captured output.

Timing knobs keep the suite quick: the runner ticks every 0.1 s, exits after 1 s idle and waits 1 s between SIGTERM
and SIGKILL. Waits are on conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import tomli_w

from hpc_sweep.local.processes import is_alive, proc_start, session_members, signal_run
from hpc_sweep.local.spool import Spool

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "demo_trainer" / "train.py"
BASE = ROOT / "examples" / "demo" / "base.toml"
NVIDIA_CAPTURE = ROOT / "tests" / "data" / "nvidia-smi" / "clic-issue89-two-gpus.csv"
RUN_DIR = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d")

# A few small epochs: the demo trainer then takes about a second plus DEMO_EPOCH_SLEEP per epoch.
TINY = {
    "process.train.max_epoch": 2,
    "process.train.dataloader.train_size": 40,
    "process.train.dataloader.validate_size": 16,
    "process.train.dataloader.test_size": 8,
    "model.advanced.num_blocks": 1,
}


def trainer_command(epoch_sleep: float, extra_env: str = "") -> str:
    return f"env DEMO_EPOCH_SLEEP={epoch_sleep} {extra_env} {sys.executable} {TRAIN} {{config}}"


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "HPC_SWEEP_", "CUDA_VISIBLE"))}
    env.update({"HPC_SWEEP_RUNNER_TICK": "0.1", "HPC_SWEEP_RUNNER_IDLE": "1", "HPC_SWEEP_RUNNER_GRACE": "1",
                "HPC_SWEEP_GPU_QUERY_S": "0.2", "HPC_SWEEP_NVIDIA_SMI": "false"})  # "false": no GPUs here
    env.update(extra)
    return env


class Sweep:
    """A sweep folder on the local backend, driven through the CLI as a user would."""

    def __init__(self, root: Path, env: dict):
        self.root = root
        self.env = env
        self.spool = Spool(root)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True,
                              env=self.env, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"hpc-sweep {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def tasks(self) -> dict:
        """The spool's tasks by config name (the latest task of each)."""
        with self.spool.locked():
            data = self.spool.load()
        return {t["config"]: t for t in data["tasks"].values()}

    def status_json(self) -> dict:
        self.cli("poll", str(self.root), "--force")
        data = json.loads(self.cli("status", str(self.root), "--format", "json").stdout)
        return {c["config"]: c for c in data["configs"]}

    def markers(self, config: str) -> tuple[Optional[dict], Optional[dict]]:
        found = []
        for kind in ("start", "exit"):
            path = self.root / ".hpc_sweep" / "markers" / f"{config}.1.{kind}"
            found.append(json.loads(path.read_text()) if path.exists() else None)
        return found[0], found[1]

    def stop_everything(self) -> None:
        """Teardown: the runner and any run still alive, each checked by identity before it is killed."""
        pid = self.spool.runner_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        if self.spool.file.exists():
            for task in self.tasks().values():
                if task["state"] == "running":
                    signal_run(task, signal.SIGKILL, whole_group=True)


def make_sweep(tmp_path: Path, command: str, env: Optional[dict] = None, fixed: Optional[dict] = None,
               grid: Optional[dict] = None, zips: Optional[list] = None, site: Optional[dict] = None,
               sweep: Optional[dict] = None, smoke: Optional[dict] = None) -> Sweep:
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text(BASE.read_text())
    (root / "inputs").mkdir()
    (root / "site.toml").write_text(tomli_w.dumps({"scheduler": "local", "cpu_slots": 2, "poll_min_interval": "1s",
                                                   **(site or {})}))
    data: dict[str, Any] = {
        "sweep": {"name": "local-test", "program": "deeph", "base": "configs/.base_config.toml", "command": command,
                  "site": "site.toml", "walltime": "5m", **(sweep or {})},
    }
    swept = set(grid or {}) | {key for group in zips or [] for key in group}
    data["fixed"] = {k: v for k, v in {**TINY, **(fixed or {})}.items() if k not in swept}
    if grid:
        data["grid"] = grid
    if zips:
        data["zip"] = zips
    if smoke:
        data["smoke"] = smoke
    (root / "sweep.toml").write_text(tomli_w.dumps(data))
    made = Sweep(root, env or base_env())
    made.cli("generate", str(root))
    return made


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def all_finished(sweep: Sweep, count: int) -> bool:
    tasks = sweep.tasks()
    return len(tasks) == count and all(t["state"] == "finished" for t in tasks.values())


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    """Most runs alive at once. Marker times are whole seconds; a run that ends and the run that starts in its
    slot may share a second, so at equal times the end counts first (a start is only ever after an end)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, 0) for _, end in intervals])
    alive = most = 0
    for _, kind in events:
        alive += 1 if kind else -1
        most = max(most, alive)
    return most


# -- tests -----------------------------------------------------------------------------------------------------------
def test_concurrency_never_exceeds_cpu_slots(tmp_path: Path, sweeps: list) -> None:
    sweep = make_sweep(tmp_path, trainer_command(0.5),
                       grid={"process.train.optimizer.init_learning_rate": [1e-2, 3e-3, 1e-3, 3e-4, 1e-4]})
    sweeps.append(sweep)
    out = sweep.cli("submit", str(sweep.root)).stdout
    assert "as local-1 (5 tasks)" in out
    wait_until(lambda: sweep.spool.runner_alive(), 5, "the runner")
    # A second runner for the same sweep finds the lock taken and leaves: it would double the concurrency.
    second = subprocess.run([sys.executable, "-m", "hpc_sweep.local.runner", "run", "--sweep", str(sweep.root)],
                            env=sweep.env, timeout=30)
    assert second.returncode == 0
    wait_until(lambda: all_finished(sweep, 5), 40, "all five runs to finish")

    intervals = []
    for n in range(1, 6):
        start, end = sweep.markers(f"config00{n}")
        assert start and end and end["exit_code"] == 0
        intervals.append((start["time"], end["time"]))
    assert max_overlap(intervals) == 2  # both slots were used, never more
    states = sweep.status_json()
    assert {c["state"] for c in states.values()} == {"completed"}
    assert states["config003"]["job_id"] == "local-1_2"
    assert states["config003"]["epoch"] == 2


def test_walltime_kills_and_status_says_timeout(tmp_path: Path, sweeps: list) -> None:
    # Ten epochs of 3 s against a 2 s limit; the trainer exits on SIGTERM (status 143).
    sweep = make_sweep(tmp_path, trainer_command(3), fixed={"process.train.max_epoch": 10},
                       sweep={"walltime": "2s", "max_retries": 0})
    sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    task = wait_until(lambda: all_finished(sweep, 1) and sweep.tasks()["config001"], 20, "the time limit")
    assert task["outcome"] == "timeout" and task["reason"] == "time limit"
    assert task["ended_at"] - task["started_at"] < 6
    _, end = sweep.markers("config001")
    assert end is not None and end["exit_code"] == 143  # the script forwarded SIGTERM to the trainer
    status = sweep.status_json()["config001"]
    assert status["state"] == "timeout"


def test_walltime_sigkill_after_grace_when_term_is_ignored(tmp_path: Path, sweeps: list) -> None:
    command = "sh -c 'trap \"\" TERM; sleep 30 & wait; sleep 30' {config}"
    sweep = make_sweep(tmp_path, command, sweep={"walltime": "1s", "max_retries": 0})
    sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    wait_until(lambda: sweep.tasks()["config001"]["state"] == "running", 10, "the run to start")
    task = wait_until(lambda: all_finished(sweep, 1) and sweep.tasks()["config001"], 15, "SIGKILL after the grace")
    assert task["outcome"] == "timeout" and task["exit_code"] == 128 + signal.SIGKILL
    assert not session_members(task["pid"], task["launch"])  # the whole group is gone, sleeps included
    assert sweep.status_json()["config001"]["state"] == "timeout"


def test_cancel_signals_only_the_runners_own_process_groups(tmp_path: Path, sweeps: list) -> None:
    sweep = make_sweep(tmp_path, trainer_command(0.3), grid={"process.train.max_epoch": [1, 60]})
    sweeps.append(sweep)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reused = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        sweep.cli("submit", str(sweep.root))
        wait_until(lambda: sweep.tasks()["config001"]["state"] == "finished"
                   and sweep.tasks()["config002"]["state"] == "running", 20, "config001 done, config002 running")
        # The runner dies; then config001's record is made to look like a run still going whose pid was since
        # reused by an unrelated process (same pid, another start time).
        os.kill(sweep.spool.runner_pid(), signal.SIGKILL)
        wait_until(lambda: not sweep.spool.runner_alive(), 5, "the runner to die")
        with sweep.spool.locked():
            data = sweep.spool.load()
            stale = next(t for t in data["tasks"].values() if t["config"] == "config001")
            stale.update(state="running", pid=reused.pid, pid_start=proc_start(reused.pid) - 100, outcome=None,
                         exit_code=None, ended_at=None)
            sweep.spool.save(data)
        # Its exit marker goes too: with it in sight, cancel leaves the run to the poll and signals nothing.
        (sweep.root / ".hpc_sweep" / "markers" / "config001.1.exit").unlink()
        victim = sweep.tasks()["config002"]
        assert is_alive(victim["pid"], victim["pid_start"])

        out = sweep.cli("cancel", str(sweep.root), "--yes").stdout
        assert "cancelled 2 config(s)" in out
        wait_until(lambda: all_finished(sweep, 2), 15, "both tasks to end")
        assert not is_alive(victim["pid"], victim["pid_start"])
        assert not session_members(victim["pid"], victim["launch"])
        assert bystander.poll() is None and reused.poll() is None  # neither unrelated sleep was signalled
        assert sweep.tasks()["config002"]["outcome"] == "cancelled"
        assert sweep.status_json()["config002"]["state"] == "cancelled"
    finally:
        for proc in (bystander, reused):
            proc.kill()
            proc.wait()


def test_poll_restarts_a_killed_runner_without_duplicate_runs(tmp_path: Path, sweeps: list) -> None:
    sweep = make_sweep(tmp_path, trainer_command(0.6), fixed={"process.train.max_epoch": 4},
                       grid={"process.train.optimizer.init_learning_rate": [1e-2, 1e-3, 1e-4]})
    sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    wait_until(lambda: sum(t["state"] == "running" for t in sweep.tasks().values()) == 2, 10, "two running")
    first = sweep.spool.runner_pid()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not sweep.spool.runner_alive(), 5, "the runner to die")
    adopted = {c: t["pid"] for c, t in sweep.tasks().items() if t["state"] == "running"}

    sweep.cli("poll", str(sweep.root), "--force")
    wait_until(lambda: sweep.spool.runner_alive() or all_finished(sweep, 3), 5, "poll to restart the runner")
    wait_until(lambda: all_finished(sweep, 3), 30, "all runs to finish under the new runner")

    tasks = sweep.tasks()
    for config, pid in adopted.items():
        assert tasks[config]["pid"] == pid and tasks[config]["exit_code"] == 0  # adopted, not restarted
    for config in ("config001", "config002", "config003"):
        runs = [p for p in (sweep.root / "outputs" / config).iterdir() if RUN_DIR.fullmatch(p.name)]
        assert len(runs) == 1, f"{config} ran {len(runs)} times"
        starts = list((sweep.root / ".hpc_sweep" / "markers").glob(f"{config}.*.start"))
        assert len(starts) == 1
    log = (sweep.spool.log_file).read_text()
    assert log.count("runner started") == 2
    assert {c["state"] for c in sweep.status_json().values()} == {"completed"}


def test_gpus_from_nvidia_smi(tmp_path: Path, sweeps: list) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat {NVIDIA_CAPTURE}\n")  # GPU 0: 2131 MiB free, GPU 1: 16000 MiB free
    fake.chmod(0o755)
    env = base_env(PATH=f"{fake.parent}:{os.environ['PATH']}",
                   HPC_SWEEP_NVIDIA_SMI="nvidia-smi --query-gpu=gpu_name,memory.free --format=csv,noheader,nounits")
    command = ("sh -c 'env | grep ^CUDA_VISIBLE_DEVICES= || echo CUDA_VISIBLE_DEVICES-unset; "
               f"exec env DEMO_EPOCH_SLEEP=0.5 {sys.executable} {TRAIN} \"$0\"' {{config}}")
    sweep = make_sweep(tmp_path, command, env=env, site={"gpu_min_free_mb": 2000, "runs_per_gpu": 1},
                       zips=[{"system.device": ["gpu*1", "gpu*2:0", "gpu*1", "gpu*3"],
                              "process.train.optimizer.init_learning_rate": [1e-2, 1e-3, 1e-4, 1e-5]}])
    sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    wait_until(lambda: all_finished(sweep, 4), 30, "all GPU runs to finish")

    tasks = sweep.tasks()
    first, explicit, third, too_big = (tasks[f"config00{n}"] for n in range(1, 5))
    assert first["cuda_visible_devices"] == "1" and first["gpu_ids"] == [1]  # the GPU with most memory free
    assert explicit["cuda_visible_devices"] is None and explicit["gpu_ids"] == [0]  # real ids, not renumbered
    assert third["started_at"] >= min(first["ended_at"], explicit["ended_at"])  # one run per GPU
    assert third["cuda_visible_devices"] in ("0", "1")
    logs = sweep.root / "logs"
    assert "CUDA_VISIBLE_DEVICES=1" in (logs / "config001.1.log").read_text()
    assert "CUDA_VISIBLE_DEVICES-unset" in (logs / "config002.1.log").read_text()
    assert too_big["outcome"] == "failed" and too_big["reason"] == "needs 3 GPUs; this machine has 2"
    status = sweep.status_json()
    assert [status[f"config00{n}"]["state"] for n in range(1, 5)] == ["completed"] * 3 + ["failed"]
    assert status["config004"]["reason"] == "needs 3 GPUs; this machine has 2"
