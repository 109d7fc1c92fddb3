"""Process identity through /proc, and signalling only processes that are still ours.

A run is recorded by its pid AND its start time (``/proc/<pid>/stat`` field 22), and carries a random launch token
in its environment (``HPC_SWEEP_LAUNCH``): a runner restarted after ``kill -9`` adopts runs whose (pid, start time)
still match, finds a launch it never recorded by its token, and never signals a process whose identity does not
match what it recorded (a reused pid is never signalled).
"""

from __future__ import annotations

import os
from typing import Optional


LAUNCH_ENV = "HPC_SWEEP_LAUNCH"


def proc_stat(pid: int) -> Optional[tuple[str, int, int]]:
    """(state, session id, start time in clock ticks since boot) from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields we want follow the last ")".
    rest = text[text.rfind(")") + 2:].split()
    try:
        return rest[0], int(rest[3]), int(rest[19])
    except (IndexError, ValueError):
        return None


def proc_start(pid: int) -> Optional[int]:
    stat = proc_stat(pid)
    return stat[2] if stat else None


def is_alive(pid: Optional[int], start: Optional[int]) -> bool:
    """The process we recorded is still there: same pid AND same start time, and not a zombie."""
    if pid is None or start is None:
        return False
    stat = proc_stat(pid)
    return stat is not None and stat[2] == start and stat[0] not in ("Z", "X")


def _has_token(pid: int, token: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return f"{LAUNCH_ENV}={token}".encode() in handle.read().split(b"\0")
    except OSError:
        return False


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def session_members(sid: int, token: str) -> list[int]:
    """Live processes of a run's session that carry its launch token: only ours, even after the leader died."""
    found = []
    for pid in _pids():
        stat = proc_stat(pid)
        if stat and stat[1] == sid and stat[0] not in ("Z", "X") and _has_token(pid, token):
            found.append(pid)
    return found


def find_launched(token: str) -> Optional[int]:
    """The session leader started with this launch token (a launch the runner died before recording)."""
    for pid in _pids():
        stat = proc_stat(pid)
        if stat and stat[1] == pid and stat[0] not in ("Z", "X") and _has_token(pid, token):
            return pid
    return None


def signal_run(task: dict, sig: int, whole_group: bool) -> bool:
    """Signal a run only if it is still the process we started. SIGTERM goes to the job script (it forwards it
    to the command); SIGKILL to the whole group. Returns whether anything was signalled."""
    pid, start, token = task.get("pid"), task.get("pid_start"), task.get("launch")
    try:
        if is_alive(pid, start):
            if whole_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
            return True
        if pid is None or not token:
            return False
        members = session_members(pid, token)  # the script is gone but its command may linger
        for member in members:
            os.kill(member, sig)
        return bool(members)
    except (ProcessLookupError, PermissionError):
        return False
