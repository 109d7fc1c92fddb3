"""The runner's spool, ``.hpc_sweep/runner/`` in the sweep: ``spool.json`` (submissions and tasks, replaced
atomically under ``spool.lock``), ``runner.lock`` (held by the one runner of the sweep for its whole life),
``runner.pid`` and ``runner.log``; and the task records in it (how a task ended, what ``status`` prints).

``submit`` and ``status`` start a runner when work is queued or running and none holds the lock, so a runner that
died is restarted by the next poll.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from hpc_sweep.common.durations import iso_time
from hpc_sweep.local.processes import proc_start
from hpc_sweep.schedulers.local import RUNNER_MODULE


class Spool:
    """The runner's files in one sweep. All writers hold :meth:`locked`; the file is replaced atomically."""

    def __init__(self, sweep: Path):
        self.sweep = Path(sweep).resolve()
        self.dir = self.sweep / ".hpc_sweep" / "runner"
        self.file = self.dir / "spool.json"
        self.lock_file = self.dir / "spool.lock"
        self.runner_lock = self.dir / "runner.lock"
        self.pid_file = self.dir / "runner.pid"
        self.log_file = self.dir / "runner.log"
        self.markers = self.sweep / ".hpc_sweep" / "markers"
        self.logs = self.sweep / "logs"

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def signature(self) -> Optional[tuple]:
        """Changes whenever the file is replaced (a rename gives a new inode)."""
        try:
            st = os.stat(self.file)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> dict:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        data.setdefault("seq", 0)
        data.setdefault("submissions", {})
        data.setdefault("tasks", {})
        return data

    def save(self, data: dict, fsync: bool = False) -> None:
        from hpc_sweep.common.atomicio import write_atomic

        write_atomic(self.file, json.dumps(data, separators=(",", ":")) + "\n", fsync=fsync)

    def runner_alive(self) -> bool:
        """True when a runner holds its lock (trying the lock is the only test that cannot be fooled by a
        stale pid file)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.runner_lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            return False

    def runner_pid(self) -> Optional[int]:
        try:
            info = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        pid = info.get("pid")
        return pid if isinstance(pid, int) and proc_start(pid) == info.get("start") else None


def has_work(data: dict) -> bool:
    return any(t["state"] in ("queued", "running") for t in data["tasks"].values())


def start_runner(spool: Spool) -> None:
    """Detached: own session, no terminal, stdout to /dev/null and stderr to the log, so it outlives the
    submitting shell and the poller and never holds their output pipes open."""
    with open(spool.log_file, "ab") as log:
        subprocess.Popen([sys.executable, "-m", RUNNER_MODULE, "run", "--sweep", str(spool.sweep)],
                         cwd=str(spool.sweep), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                         start_new_session=True, close_fds=True)


def ensure_runner(spool: Spool, data: dict) -> bool:
    """Start a runner when work is left and none runs. Called with the spool locked: a runner exits only
    while holding that lock, so work queued under it is always seen by a live runner or a new one."""
    if has_work(data) and not spool.runner_alive():
        start_runner(spool)
        return True
    return False


def exit_marker_code(spool: Spool, task: dict) -> tuple[bool, Optional[int]]:
    """(exit marker present, its exit code)."""
    path = spool.markers / f"{task['config']}.{task['attempt']}.exit"
    try:
        return True, json.loads(path.read_text()).get("exit_code")
    except (OSError, ValueError):
        return False, None


def outcome(task: dict) -> str:
    """Like a scheduler: a time limit is a timeout and a cancel a cancel, whatever the exit code."""
    stop = task.get("stop") or {}
    if stop.get("why") == "time limit":
        return "timeout"
    if stop.get("why") == "cancelled":
        return "cancelled"
    if task.get("refused"):
        return "failed"
    return "completed" if task.get("exit_code") == 0 else "failed"


def public(task: dict) -> dict:
    """One task as ``status`` prints it."""
    started, ended = task.get("started_at"), task.get("ended_at")
    elapsed = None
    if started is not None:
        elapsed = round((ended or time.time()) - started, 3)
    return {
        "task_id": task["task_id"], "submission": task["submission"], "index": task["index"],
        "name": task["name"], "config": task.get("config"), "attempt": task.get("attempt"),
        "state": task["state"], "outcome": task.get("outcome"), "exit_code": task.get("exit_code"),
        "reason": task.get("reason"), "start": iso_time(started), "end": iso_time(ended), "elapsed_s": elapsed,
        "pid": task.get("pid"), "pid_start": task.get("pid_start"), "host": task.get("host"),
        "gpu_ids": task.get("gpu_ids"), "cuda_visible_devices": task.get("cuda_visible_devices"),
        "slot": task.get("slot"),
    }
