"""One array task of the stand-in Slurm: bash running the real job script, in its own process group, and the
trainer it starts (the user's command), which waits at a gate until the test lets it finish."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

_sleep = time.sleep        # the model test replaces time.sleep inside the tool; waits here stay real
_monotonic = time.monotonic

TRAINER = """#!/bin/sh
# The user's command in the model tests. It says it started (one ledger line per run: a duplicate shows), writes an
# epoch (its validation loss ranks the configs: configNNN has 2.NNN), waits at its gate (a FIFO; the stand-in writes
# the exit code into it), writes a second epoch and, only on exit code 0, the file it writes last: its presence
# proves the command ran whole.
name=$1 out=$2 attempt=${{HPCS_ATTEMPT:?}} task=${{SLURM_JOB_ID:?}}
echo "$name $attempt $task" >> {ledger}
echo "epoch 1 train_loss 1.0 val_loss 2.${{name#config}}" >> "$out/train.log"
read code < {gates}/"$task"
echo "epoch 2 train_loss 0.5 val_loss 1.0" >> "$out/train.log"
if [ "$code" = 0 ]; then echo "$task" > "$out/finished.$attempt"; fi
exit "$code"
"""

DATE_SHIM = """#!/bin/sh
# The stand-in cluster's clock (standin.slurm.Clock): seconds since the epoch are read from {now}.
if [ "$1" = "+%s" ]; then cat {now}; else exec /bin/date "$@"; fi
"""


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.005):
    """Poll ``predicate`` with real sleeps until it returns a truthy value; TimeoutError naming ``what``."""
    deadline = _monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if _monotonic() > deadline:
            raise TimeoutError(f"stand-in: timed out after {timeout:.0f} s waiting for {what}")
        _sleep(interval)


class Workspace:
    """The stand-in's own folder: the trainer, its ledger, the gates, the clock shim, hidden exit markers."""

    def __init__(self, root: Path):
        self.root = root
        self.gates = root / "gates"
        self.bin = root / "bin"
        self.hidden = root / "hidden-markers"
        self.ledger = root / "ledger.txt"
        self.trainer = root / "trainer.sh"
        self.clock_file = root / "clock"
        for folder in (self.gates, self.bin, self.hidden):
            folder.mkdir(parents=True, exist_ok=True)
        self.ledger.touch()
        self.trainer.write_text(TRAINER.format(ledger=shlex.quote(str(self.ledger)),
                                               gates=shlex.quote(str(self.gates))))
        (self.bin / "date").write_text(DATE_SHIM.format(now=shlex.quote(str(self.clock_file))))
        (self.bin / "date").chmod(0o755)

    def ledger_lines(self) -> list:
        """(config, attempt, task id) per run the trainer started."""
        return [tuple(line.split()) for line in self.ledger.read_text().splitlines() if line.strip()]


class TaskProcess:
    """bash <script> for one task, output appended to the task's output file, in a new session (its own group,
    so signals reach the trainer too, as slurmstepd signals every process of the job)."""

    def __init__(self, workspace: Workspace, script: str, cwd: str, output: Path, env: dict, task_id: str):
        self.workspace, self.task_id = workspace, task_id
        self.gate = workspace.gates / task_id
        os.mkfifo(self.gate)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "ab") as out:
            self.proc = subprocess.Popen(["bash", script], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_started(self) -> bool:
        """Until the trainer wrote its ledger line (True) or bash ended without starting it (False)."""
        wanted = f" {self.task_id}"

        def settled():
            if any(line.endswith(wanted) for line in self.workspace.ledger.read_text().splitlines()):
                return "started"
            return "ended" if not self.alive() else None

        return wait_until(settled, 30, f"task {self.task_id} to start its trainer or end") == "started"

    def release(self, code: int) -> Optional[int]:
        """Open the gate with this exit code and wait for bash to end; its exit status."""
        def opened():
            try:
                return os.open(self.gate, os.O_WRONLY | os.O_NONBLOCK) + 1  # +1: fd 0 is a valid answer
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet (the trainer is on its way to the gate)
                    raise
                return None if self.alive() else -1

        fd = wait_until(opened, 30, f"the trainer of task {self.task_id} to wait at its gate") - 1
        if fd >= 0:
            try:
                os.write(fd, f"{code}\n".encode())
            finally:
                os.close(fd)
        return self.wait()

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float = 30) -> int:
        """bash's exit status; SIGKILL to the group when it takes longer than ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL to every process of the task's session (node failure, clean-up: as slurmstepd kills the job's
        cgroup; the job script runs the command in a process group of its own) and reap bash."""
        self.signal(signal.SIGKILL)
        for pid in _session_members(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def remove_gate(self) -> None:
        try:
            self.gate.unlink()
        except FileNotFoundError:
            pass


def _session_members(sid: int) -> list:
    """Pids of the processes in session ``sid`` (field 6 of /proc/PID/stat, after the command's parentheses)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            members.append(int(entry))
    return members
