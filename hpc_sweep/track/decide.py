"""One attempt's state, decided by a poll: the scheduler's record (live queue, else accounting) against the job's
own markers, then the task's output for why it died (:mod:`hpc_sweep.track.failure`).

The scheduler's word comes first while the task is in the queue; an exit marker ends a run the scheduler no longer
knows (accounting missing or disabled); a task that left the queue with no word on how it ended is *lost* only
after :data:`GONE_GRACE_S` (accounting lag, NFS attribute caching), and a lost one is followed for
:data:`RECHECK_LOST_S` more (a late exit marker or accounting record corrects it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from hpc_sweep.schedulers import base as scheduler
from hpc_sweep.schedulers.base import FINAL_STATES, TaskRecord
from hpc_sweep.state.rows import AttemptRow
from hpc_sweep.state.states import ConfigState
from hpc_sweep.track.markers import Markers

if TYPE_CHECKING:
    from hpc_sweep.session import Session


GONE_GRACE_S = 600          # a task that just left the queue may be in no accounting yet (slurmdbd lag), and its
                            # exit marker may not be visible yet (NFS attribute caching)
RECHECK_LOST_S = 86400      # a lost task's accounting is asked again for a day: it may still turn up

# The states decide returns, bound once (it runs for every followed attempt of a poll).
COMPLETED, FAILED, RUNNING, LOST = ConfigState.COMPLETED, ConfigState.FAILED, ConfigState.RUNNING, ConfigState.LOST
# What a task's own output can say ended it while the scheduler said nothing.
ENDED_BY_THE_SYSTEM = frozenset({ConfigState.TIMEOUT, ConfigState.OOM, ConfigState.NODE_FAIL, ConfigState.PREEMPTED,
                                 ConfigState.CANCELLED})


def task_output(session: Session, att: AttemptRow) -> str:
    """The tail of what the task printed: our run log and the scheduler's own output file."""
    from hpc_sweep.common.logtail import tail_lines

    paths = session.paths
    texts = []
    run_log = paths.logs / f"{att.config}.{att.attempt}.log"
    texts += tail_lines(run_log, 40)
    if att.submission:
        for candidate in paths.logs.glob(f"{att.submission}_{att.task_index}.out*"):
            texts += tail_lines(candidate, 40)
        texts += [line for p in paths.logs.glob(f"{att.submission}.o*-{att.task_index}")
                  for line in tail_lines(p, 40)]
    return "\n".join(texts)


def decide(session: Session, att: AttemptRow, live: Optional[TaskRecord], acct: Optional[TaskRecord], markers: Markers,
           now: float) -> tuple[str, Optional[str], dict]:
    """(state, reason, attempt fields) for one active attempt."""
    from hpc_sweep.track.failure import diagnose

    key = f"{att.config}.{att.attempt}"
    end = markers.load(key, "exit")
    fields: dict = {}
    if live is None and att.left_queue_at is None and att.state != LOST:
        fields["left_queue_at"] = now
    if live is not None and live.state == scheduler.RUNNING and live.elapsed_s is not None and end is None:
        # The live answer knows when and where it started: no need to open 10,000 start markers.
        start = None
        if att.started_at is None:
            fields["started_at"], fields["host"] = now - live.elapsed_s, live.host
    else:
        start = markers.load(key, "start") if att.started_at is None or live is None else None
    if start:
        fields["started_at"] = start.get("time")
        fields["host"] = start.get("host")
    if end:
        fields["ended_at"] = end.get("time")
        fields["exit_code"] = end.get("exit_code")
    record = live if live is not None else acct
    if record is not None and record.state == scheduler.CANCELLED and record.exit_code is None and end is not None:
        record = None  # a task that wrote its exit before the array was deleted: its own marker is the truth
    if record is not None and record.state in FINAL_STATES and _claimed_by_another_job(att, markers, key):
        record = None  # our task was a duplicate the claim guard stopped: the markers of the run that holds it decide
    if record is not None and record.state not in FINAL_STATES and record.state != scheduler.UNKNOWN:
        if end is None or live is not None:
            return record.state, record.reason, fields
    if record is not None and record.state in FINAL_STATES:
        if record.exit_code is not None and "exit_code" not in fields:
            fields["exit_code"] = record.exit_code
        if record.elapsed_s is not None:
            fields["elapsed"] = record.elapsed_s
        state, reason = record.state, None
        if state != COMPLETED:
            found = diagnose(task_output(session, att))
            if found:
                kind, reason = found
                if state == FAILED and kind in (ConfigState.OOM, ConfigState.TIMEOUT):
                    state = kind
            # The scheduler's own word last (the local runner says "time limit", "needs 3 GPUs; ...").
            reason = reason or _exit_reason(state, fields.get("exit_code")) or record.reason
        return state, reason, fields
    if end is not None:
        code = end.get("exit_code")
        if code == 0:
            return COMPLETED, None, fields
        found = diagnose(task_output(session, att))
        if found:
            return found[0], found[1], fields
        return FAILED, _exit_reason(FAILED, code), fields
    if att.state == LOST:
        return LOST, att.reason, fields  # nothing new: a late exit marker or accounting record would say
    # Gone from the queue with no word on how it ended: wait GONE_GRACE_S from when it left the queue (not from
    # its start) before calling it lost.
    left_at = att.left_queue_at or now
    if start is not None:
        found = diagnose(task_output(session, att))
        if found and found[0] in ENDED_BY_THE_SYSTEM:
            return found[0], found[1], fields
        if now - left_at < GONE_GRACE_S:
            return RUNNING, att.reason, fields  # it started; accounting or the exit marker may still come
        return LOST, f"started on {start.get('host')} but no exit was recorded and the scheduler has no record", \
            fields
    if now - max(left_at, att.submitted_at or 0) < GONE_GRACE_S:
        return att.state, att.reason, fields
    return LOST, "the scheduler has no record of this task and it never started", fields


def _claimed_by_another_job(att: AttemptRow, markers: Markers, key: str) -> bool:
    """Whether the (config, attempt) was run by a task of another job than the recorded one (whose task then found
    the claim taken and exited at once without running)."""
    if not any(name.startswith(f"{key}.duplicate.") for name in markers.duplicates):
        return False
    start = markers.load(key, "start")
    return bool(start and start.get("job_name") and start.get("job_name") != att.submission)


def _exit_reason(state: str, code: Optional[int]) -> Optional[str]:
    if code is None:
        return None
    if code > 128 and code < 160:
        return f"{state}: killed by signal {code - 128}"
    if code > 256:
        return f"{state}: killed by signal {code - 256}"
    return f"exit code {code}"
