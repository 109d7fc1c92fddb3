"""The scheduler adapter contract.

An adapter is argv builders plus pure output parsers: it never runs a process itself. The one place that
runs scheduler commands is :mod:`hpc_sweep.common.shell`, so every parser here is tested against captured output.

Vocabulary shared by all adapters:

- A *submission* is one call of the submit command: one job script, usually an array. Its id is what the
  scheduler printed (Slurm ``42``, PBS ``123[].server``, Torque ``123[].host``).
- A *task* is one array element (or the plain job). Its id is the scheduler's own spelling: Slurm ``42_3``,
  PBS ``123[3].server``, a plain job ``42`` / ``124.server``.
- States are normalised to :data:`STATES` so the rest of the tool never sees scheduler spellings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from hpc_sweep.common.shell import CommandResult  # noqa: F401  (what every parser reads; made by shell.run)

# Our normalised scheduler-side states. "unknown" means the scheduler answered but we could not map it.
PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, OOM, CANCELLED, NODE_FAIL, PREEMPTED, UNKNOWN = (
    "pending", "running", "completed", "failed", "timeout", "oom", "cancelled", "node_fail", "preempted", "unknown",
)
STATES = (PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, OOM, CANCELLED, NODE_FAIL, PREEMPTED, UNKNOWN)
FINAL_STATES = frozenset({COMPLETED, FAILED, TIMEOUT, OOM, CANCELLED, NODE_FAIL, PREEMPTED})


@dataclass(frozen=True)
class TaskRecord:
    """One task as a live-queue or accounting query reports it."""

    task_id: str                      # the scheduler's id of this task: "42_3", "123[3].server", "124.server"
    submission_id: str                # the id submit printed: "42", "123[].server", "124.server"
    index: Optional[int]              # array index, None for a plain job
    name: Optional[str]               # job name as the scheduler reports it
    state: str                        # one of STATES
    raw_state: str                    # the scheduler's own word ("PENDING", "Q", "CANCELLED by 1000", ...)
    reason: Optional[str] = None      # pending reason or scheduler comment worth showing
    exit_code: Optional[int] = None   # the job's exit code when known
    elapsed_s: Optional[float] = None
    start: Optional[str] = None       # ISO 8601 when known
    end: Optional[str] = None
    host: Optional[str] = None


@dataclass(frozen=True)
class QueueLimits:
    """What the scheduler (or the site profile, as fallback) says about how much we may queue."""

    max_queued: Optional[int] = None      # per-user cap on queued+running tasks (every array task counts)
    max_array_size: Optional[int] = None  # Slurm: indices must be < this; PBS: max subjobs per array
    max_job_count: Optional[int] = None   # controller-wide job cap (Slurm MaxJobCount)
    throttle_supported: bool = True       # PBS Pro before 22.05 rejects "%N"


class SchedulerError(Exception):
    """A scheduler command failed. ``kind`` says what the caller may do about it.

    - ``"limit"``: the submission was refused because of a queue limit; nothing was queued, retry later.
    - ``"transient"``: the controller did not answer (time-out, connection refused); the outcome of a submit is
      unknown and must be reconciled by job name before any retry.
    - ``"rejected"``: the scheduler refused the request for a reason retrying will not fix (bad partition,
      walltime above the queue's maximum...); the message says why.
    - ``"unknown_job"``: a query named jobs the scheduler no longer knows (not an error for a poll).
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class SubmitSpec:
    """What one submission asks for: the rendered script does the rest (its directives carry resources)."""

    script: str                  # absolute path of the rendered job script
    job_name: str                # unique per submission: "<prefix>-<group>-<seq>"
    workdir: str                 # the sweep folder
    indices: Sequence[int] = field(default_factory=tuple)  # array indices; empty = plain job


class Scheduler:
    """Base class. Subclasses set ``name`` and implement the argv builders and parsers they support."""

    name = "base"
    # Environment variable holding the array index inside a task, and the id of the task itself.
    index_env = ""
    task_id_env = ""
    # Variable holding the id submit printed (Slurm's SLURM_JOB_ID is the task's own raw id, not the array's):
    # the start marker records it so a crashed submit can be reconciled from markers alone.
    submission_env = ""

    # -- submit ---------------------------------------------------------------------------------------
    def submit_argv(self, spec: SubmitSpec) -> list[str]:
        raise NotImplementedError

    def parse_submit(self, result: CommandResult) -> str:
        """Return the submission id, or raise SchedulerError (kind limit/transient/rejected)."""
        raise NotImplementedError

    # -- live queue: ONE call for all of the user's jobs ---------------------------------------------------
    def live_argv(self, user: str, submission_ids: Sequence[str] = ()) -> list[str]:
        raise NotImplementedError

    def parse_live(self, result: CommandResult) -> list[TaskRecord]:
        """Every task of the user's jobs, one record per task (arrays expanded). Raise SchedulerError
        (kind transient) when the controller could not be reached: the caller then changes no state."""
        raise NotImplementedError

    # -- accounting: ONE batched call for this sweep's jobs that left the live queue --------------------------
    def accounting_argv(self, submission_ids: Sequence[str]) -> Optional[list[str]]:
        """None where the scheduler keeps no separate accounting (the live query already covers history)."""
        return None

    def parse_accounting(self, result: CommandResult) -> list[TaskRecord]:
        return []

    # -- cancel: exact ids only, never by user or name pattern ----------------------------------------------
    def cancel_argv(self, task_or_submission_ids: Sequence[str]) -> list[str]:
        raise NotImplementedError

    # -- finding a submission by its unique name ------------------------------------------------------------------
    # Where the live query lists every job of the user with its name (Slurm, Torque, the local runner), a job in the
    # queue is found there; :meth:`lookup_argv` then asks only what the live query cannot see (Slurm: jobs that
    # already left the queue, from accounting). PBS's live query names recorded ids only: it asks by name.
    live_lists_names = False

    def lookup_argv(self, user: str, job_name: str, since: Optional[float] = None) -> Optional[list[str]]:
        """The command that lists the submissions named ``job_name`` (submitted after ``since``, a Unix time),
        or None where the live query is the whole answer."""
        return None

    def parse_lookup(self, result: CommandResult) -> list[str]:
        """Submission ids found by :meth:`lookup_argv` (empty: none of that name). Raise SchedulerError when the
        command failed: "not there" must be an answer, never a guess."""
        return []

    def cancel_by_name_argv(self, user: str, job_name: str) -> Optional[list[str]]:
        """Cancel the user's jobs of exactly this name (a submission whose id never reached us), or None where the
        scheduler cannot: the caller then needs an id from a lookup."""
        return None

    # -- limits --------------------------------------------------------------------------------------------
    def limits_argvs(self, user: str, queue: Optional[str] = None) -> list[list[str]]:
        """Commands whose outputs, in order, :meth:`parse_limits` reads."""
        return []

    def parse_limits(self, results: Sequence[CommandResult]) -> QueueLimits:
        return QueueLimits()

    # -- helpers used by submit/poll -------------------------------------------------------------------------
    def uses_array(self, ntasks: int) -> bool:
        """Whether a submission of ``ntasks`` tasks is an array (PBS needs two indices for one)."""
        return True

    def task_id(self, submission_id: str, index: int, is_array: bool) -> str:
        """The id of one task: Slurm "42_3", PBS/Torque "123[3].server", a plain job its own id."""
        if not is_array:
            return submission_id
        if "[]" in submission_id:
            return submission_id.replace("[]", f"[{index}]", 1)
        return f"{submission_id}_{index}"

    def submission_of(self, task_id: str) -> str:
        """The inverse of :meth:`task_id`: "42_3" -> "42", "123[3].server" -> "123[].server"."""
        if "[" in task_id:
            head, _, rest = task_id.partition("[")
            return f"{head}[]{rest.partition(']')[2]}"
        return task_id.split("_", 1)[0]

    def array_spec(self, indices: Sequence[int], throttle: Optional[int]) -> str:
        """The array argument in this scheduler's syntax ("0-9%4", "0-9:2"...)."""
        raise NotImplementedError
