"""`hpc-sweep submit`: group configs by resource shape, chunk to the array limits, fit under the user's queue cap,
and submit each chunk as one array — never twice.

The queries are in :mod:`hpc_sweep.submit.queries`, the chunks in :mod:`hpc_sweep.submit.planning`, the files of
a chunk in :mod:`hpc_sweep.submit.chunks`; here is the command and the intent → send → record of each chunk.

The protocol that makes a crash or a controller time-out harmless (the records and their rules are in
:mod:`hpc_sweep.submit.intents`): a submission is recorded as an *intent* (its unique job name, map and script) and
committed BEFORE the submit command runs; only then is the command run and its id recorded. A command whose
outcome is unknown leaves the submission *unknown*: its configs are held until a lookup by name answers, and it is
sent again (under a new name) only after a lookup answered "not there".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

from hpc_sweep.common import faults, shell
from hpc_sweep.common.errors import UserError
from hpc_sweep.schedulers.base import QueueLimits, SchedulerError, SubmitSpec
from hpc_sweep.state.rows import SubmissionRow
from hpc_sweep.state.states import ConfigState
from hpc_sweep.state.states import SubmissionStatus as Status
from hpc_sweep.submit import intents
from hpc_sweep.submit.chunks import Premade, chunk_files, job_name
from hpc_sweep.submit.planning import Chunk, candidates, may_submit, plan_chunks, submittable_names
from hpc_sweep.submit.scripts import check_directive_path
from hpc_sweep.submit.resources import Unfit, check_chunks, resources_line, task_resources
from hpc_sweep.submit.queries import (
    cached_limits,
    limits_argvs,
    live_records_or_none,
    query_scheduler,
    queue_limits,
    room_in_queue,
)

if TYPE_CHECKING:
    from hpc_sweep.session import Session


@dataclass
class Planned:
    """A submission a dry run would make: its name, array, configs and the texts it would write."""

    name: str
    array: Optional[str]
    configs: list
    script_text: str
    map_text: str
    resources: Optional[str] = None  # "2 CPUs and 2711M per task (cpus_per_gpu: 2 from the nodes of ...)"


@dataclass
class SubmitReport:
    submitted: list = field(default_factory=list)    # (job name, scheduler id, number of tasks)
    waiting: int = 0
    reason: Optional[str] = None
    reconciled: intents.Reconciled = field(default_factory=intents.Reconciled)
    planned: list = field(default_factory=list)      # dry run: Planned
    starts: dict = field(default_factory=dict)       # config -> how its new attempt starts ("resumed ...", "fresh")
    errors: list = field(default_factory=list)


# -- one chunk: intent → send → record ------------------------------------------------------------------------------
def submit_chunk(session: Session, chunk: Chunk, limits: QueueLimits, report: SubmitReport, dry_run: bool) -> bool:
    """Intent → submit → record. Returns False when submitting should stop (a limit, or the scheduler's silence)."""
    throttle = session.spec.throttle or session.profile.array_throttle
    if throttle and not limits.throttle_supported:
        throttle = None
    n = len(chunk.configs)
    array = session.scheduler.array_spec(list(range(n)), throttle) if session.scheduler.uses_array(n) else None
    if dry_run:
        name = job_name(session, chunk, offset=len(report.planned), persist=False)
        files = chunk_files(session, chunk, name, array, write=False)
        fit = task_resources(session, chunk.configs[0].gpus, chunk.shape.split(":")[0], chunk.walltime_s)
        report.planned.append(Planned(name, array, [e.name for e in files.entries], files.script_text,
                                      files.map_text, resources_line(fit)))
        return True
    for paths in (session.paths.script, session.paths.markers, session.paths.logs):
        paths.mkdir(parents=True, exist_ok=True)
    for send in range(SEND_TRIES):
        if send:
            time.sleep(2 ** send)  # the controller said the last one is not there: give it a moment
        sub = _record_intent(session, chunk, array, report)
        outcome = _send(session, sub, report)
        if outcome != RESEND:
            return outcome == GO_ON
    report.errors.append(f"{sub.name}: the scheduler answered that {SEND_TRIES} submissions never arrived; "
                         "the configs wait for the next submit or poll")
    return False


SEND_TRIES = 3
GO_ON, STOP, RESEND = "go on", "stop", "resend"


def _record_intent(session: Session, chunk: Chunk, array: Optional[str], report: SubmitReport) -> SubmissionRow:
    """Write the chunk's files and commit the intent (a fresh job name each time) before anything is sent."""
    store = session.store
    with store.transaction():
        name = job_name(session, chunk)
        files = chunk_files(session, chunk, name, array, write=True)
        intents.record_intent(store, name, chunk.shape, str(files.script_file), str(files.map_file),
                              len(files.entries))
        intents.hold_attempts(store, name, files.entries, [row.next_mode for row in chunk.configs])
        for config, start in files.starts.items():
            store.add_event("run_config", f"attempt {chunk.configs[0].attempt + 1}: {start}", config)
    report.starts.update(files.starts)
    return store.submission(name)


def _send(session: Session, sub: SubmissionRow, report: SubmitReport) -> str:
    """Run the submit command once and settle what it did. An unknown outcome is looked up by name at once:
    found → recorded; not there → RESEND (a new name); no answer → the configs stay held (STOP)."""
    adapter = session.scheduler
    spec = SubmitSpec(script=sub.script, job_name=sub.name, workdir=str(session.paths.root),
                      indices=tuple(range(sub.ntasks)))
    faults.point("before_submit")
    result = shell.run(adapter.submit_argv(spec), timeout=150, cwd=spec.workdir, die_with_us=True)
    faults.point("after_submit")
    try:
        scheduler_id = adapter.parse_submit(result)
    except SchedulerError as exc:
        if exc.kind != "transient":
            _refused(session, sub, exc, report)
            return STOP if exc.kind == "limit" else GO_ON
        intents.record_unknown(session, sub, exc.message)
        found = intents.lookup(session, sub, live_records_or_none(session))
        if found.verdict == intents.ABSENT:
            with session.store.transaction():
                intents.release(session, sub, Status.ABANDONED,
                                "its submission never reached the scheduler; sent again",
                                note=f"{exc.message}; then {found.detail}")
            return RESEND
        if found.verdict == intents.UNKNOWN:
            report.reconciled.still_open.append((sub.name, f"{intents.short(exc.message)}; lookup: {found.detail}"))
            return STOP
        scheduler_id = found.scheduler_id
    with session.store.transaction():
        intents.record_submitted(session, sub, scheduler_id)
    report.submitted.append((sub.name, scheduler_id, sub.ntasks))
    return GO_ON


def _refused(session: Session, sub: SubmissionRow, exc: SchedulerError, report: SubmitReport) -> None:
    """The scheduler answered that it queued nothing: the configs wait (limit) or carry the refusal (rejected)."""
    reason = ("queue limit reached: " if exc.kind == "limit" else "submission refused: ") + exc.message
    with session.store.transaction():
        intents.release(session, sub, Status.REFUSED, reason, note=exc.message)
        session.store.add_event("refused", f"{sub.name}: {exc.message}")
    if exc.kind != "limit":
        report.errors.append(f"{sub.name}: {exc.message}")
    report.reason = reason


# -- the command ----------------------------------------------------------------------------------------------
def submit(session: Session, only: Optional[Sequence[str]] = None, dry_run: bool = False,
           records: Optional[list] = None, reconciled: Optional[intents.Reconciled] = None,
           refuse_unfit: bool = True) -> SubmitReport:
    """Submit what fits. The caller holds the sweep lock. ``records`` lets poll pass its live answer, and
    ``reconciled`` what it already settled with it (the open submissions are not looked up twice).

    A shape the cluster can never hold (:mod:`hpc_sweep.submit.resources`) is checked before any intent is
    recorded: ``refuse_unfit`` (the ``submit`` command) makes it a UserError and nothing is submitted; otherwise
    (a poll topping up the queue) its configs wait with the reason, and the rest go."""
    report = _submit(session, only, dry_run, records, reconciled, refuse_unfit)
    settled = report.reconciled
    if not dry_run and (report.submitted or settled.found or settled.abandoned or settled.adopted or
                        settled.still_open):
        # The copy a corrupt database is restored from must know every submission, or one would be made twice.
        session.store.backup()
    return report


def _submit(session: Session, only: Optional[Sequence[str]], dry_run: bool, records: Optional[list],
            reconciled: Optional[intents.Reconciled], refuse_unfit: bool) -> SubmitReport:
    report = SubmitReport()
    session.scheduler  # the site profile is read (and checked) before anything is written
    check_directive_path(session)
    # Stale limits are asked for only where anything may be submitted (reconciling can only take candidates away).
    names, limit_argvs = [], []
    if cached_limits(session) is None:
        names = submittable_names(session, only)
        if names or may_submit(session, only):
            limit_argvs = limits_argvs(session)
    limit_results, premade = None, Premade()
    if records is None or limit_argvs:
        records, limit_results, premade = query_scheduler(session, records, limit_argvs, [] if dry_run else names)
    folders_used: set = set()
    try:
        if not dry_run:  # a dry run changes nothing, settling included
            report.reconciled = reconciled if reconciled is not None else intents.reconcile(session, records)
        if report.reconciled.held:
            report.errors.append(report.reconciled.held)
            return report
        rows = candidates(session, only)
        if not rows:
            return report
        limits = queue_limits(session, limit_results)
        room = room_in_queue(limits, records)
        chunks = plan_chunks(session, rows, limits, room)
        # A refusal is not made on an answer older than this command: submit asks again first. A poll's top-up
        # trusts the hour's answer (asking every poll while unfit configs wait would be asking too often).
        unfit = check_chunks(session, chunks, fresh=limit_results is not None or not refuse_unfit)
        if unfit and refuse_unfit:
            if not dry_run:
                session.store.backup()  # what reconciling settled above is in the copy too
            raise UserError("nothing submitted: " + " | ".join(dict.fromkeys(p for u in unfit for p in u.problems)))
        chunks = _set_aside(chunks, unfit, report)
        placed = 0
        for chunk in chunks:
            folders_used.update(row.name for row in chunk.configs)  # chunk_files makes them
            if not submit_chunk(session, chunk, limits, report, dry_run):
                break
            placed += len(chunk.configs)
    finally:
        premade.remove_unused(folders_used)
    if dry_run:
        report.waiting = len(rows) - placed
        return report
    left = candidates(session, only)
    reason = report.reason or (f"queue cap {limits.max_queued} reached" if room is not None else None)
    unfit_reasons = {row.name: u.reason for u in unfit for row in u.chunk.configs}
    with session.store.transaction():
        for row in left:
            why = unfit_reasons.get(row.name, reason)
            if row.state == ConfigState.GENERATED or (why and row.reason != why):
                session.store.set_config_state(row.name, ConfigState.WAITING, why or "not submitted yet")
    report.waiting = len(left)
    return report


def _set_aside(chunks: list, unfit: list[Unfit], report: SubmitReport) -> list:
    """The chunks that can run; the others' configs wait with the reason, said once (when it is new to them)."""
    if not unfit:
        return chunks
    for u in unfit:
        if any(row.reason != u.reason for row in u.chunk.configs):
            report.errors.append(f"{len(u.chunk.configs)} config(s) of shape {u.chunk.shape} not submitted: "
                                 + " | ".join(u.problems))
    skipped = {id(u.chunk) for u in unfit}
    return [chunk for chunk in chunks if id(chunk) not in skipped]
