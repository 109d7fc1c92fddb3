"""Local adapter: the "scheduler" of a bare GPU box is our own detached runner (:mod:`hpc_sweep.local.runner`).

It is driven through commands exactly like Slurm or PBS, so submit, poll and cancel need no special case:

- ``python -m hpc_sweep.local.runner submit --sweep DIR --name JOB SCRIPT 0-9`` queues the tasks in the runner's spool
  (``.hpc_sweep/runner/``), prints the submission id ``local-<n>`` and starts the runner when none is running;
- ``... status --sweep DIR`` prints every task of the spool as JSON (queued, running, finished with exit code)
  and restarts a runner that died while work is left: poll calls it exactly once per poll;
- ``... cancel --sweep DIR ID...`` ends the named submissions or tasks, signalling only process groups whose
  recorded (pid, start time) still match.

Task ids are ``local-<n>_<index>`` (the base class's Slurm-like spelling). Finished tasks stay in the status
output, so there is no separate accounting query.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from hpc_sweep.schedulers.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    TIMEOUT,
    UNKNOWN,
    CommandResult,
    Scheduler,
    SchedulerError,
    SubmitSpec,
    TaskRecord,
)
from hpc_sweep.schedulers.arrays import compress_indices

RUNNER_MODULE = "hpc_sweep.local.runner"
# The runner's spool states and outcomes -> our normalised states.
_STATES = {"queued": PENDING, "running": RUNNING, "completed": COMPLETED, "failed": FAILED, "timeout": TIMEOUT,
           "cancelled": CANCELLED}
_TRANSIENT_RCS = {124, 137, 143}  # shell.run's time-out, SIGKILL, SIGTERM: the outcome is unknown


class LocalScheduler(Scheduler):
    name = "local"
    index_env = "HPC_SWEEP_INDEX"
    task_id_env = "HPC_SWEEP_TASK_ID"

    def __init__(self, sweep_dir: Optional[Union[str, Path]] = None):
        # The spool lives in the sweep folder; "." works for calls run with cwd = the sweep (submit, poll).
        self.sweep_dir = str(Path(sweep_dir).resolve()) if sweep_dir is not None else "."

    def _runner(self, command: str, sweep: Optional[str] = None) -> list[str]:
        return [sys.executable, "-m", RUNNER_MODULE, command, "--sweep", sweep or self.sweep_dir]

    # -- submit -------------------------------------------------------------------------------------------------
    def submit_argv(self, spec: SubmitSpec) -> list[str]:
        indices = list(spec.indices) or [0]
        return self._runner("submit", spec.workdir) + ["--name", spec.job_name, spec.script,
                                                       self.array_spec(indices, None)]

    def parse_submit(self, result: CommandResult) -> str:
        text = result.stdout.strip()
        if result.returncode == 0 and text.startswith("local-"):
            return text.split()[0]
        message = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        if result.returncode in _TRANSIENT_RCS:
            raise SchedulerError("transient", message)
        raise SchedulerError("rejected", message)

    # -- live queue (every task of the spool, finished ones included) -------------------------------------------
    live_lists_names = True

    def live_argv(self, user: str, submission_ids: Sequence[str] = ()) -> list[str]:
        return self._runner("status")

    def parse_live(self, result: CommandResult) -> list[TaskRecord]:
        if result.returncode != 0:
            raise SchedulerError("transient", (result.stderr or result.stdout).strip() or
                                 f"runner status exited {result.returncode}")
        try:
            data = json.loads(result.stdout)
            return [_record(task) for task in data["tasks"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise SchedulerError("transient", f"unreadable runner status: {exc}") from None

    def accounting_argv(self, submission_ids: Sequence[str]) -> Optional[list[str]]:
        return None  # status already reports finished tasks

    # -- cancel ---------------------------------------------------------------------------------------------------
    def cancel_argv(self, task_or_submission_ids: Sequence[str]) -> list[str]:
        return self._runner("cancel") + list(task_or_submission_ids)

    # -- limits: none, the runner queues everything and starts runs as slots free ---------------------------------
    def limits_argvs(self, user: str, queue: Optional[str] = None) -> list[list[str]]:
        return []

    def array_spec(self, indices: Sequence[int], throttle: Optional[int]) -> str:
        """A compact index list ("0-9,12"); the runner has no throttle: the slots are the throttle."""
        return compress_indices(indices)


def _record(task: dict) -> TaskRecord:
    state = task["state"]
    if state == "finished":
        state = task.get("outcome") or "failed"
    return TaskRecord(
        task_id=task["task_id"], submission_id=task["submission"], index=task.get("index"), name=task.get("name"),
        state=_STATES.get(state, UNKNOWN), raw_state=state, reason=task.get("reason"),
        exit_code=task.get("exit_code"), elapsed_s=task.get("elapsed_s"), start=task.get("start"),
        end=task.get("end"), host=task.get("host"))
