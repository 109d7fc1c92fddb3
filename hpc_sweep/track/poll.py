"""`hpc-sweep poll`: refresh states, read new log lines, resume, top up the queue, write the snapshots.

This module is the poll's order of work; each step has its own module: one attempt's state
(:mod:`~hpc_sweep.track.decide`), the markers (:mod:`~hpc_sweep.track.markers`), pending tasks that can never
start (:mod:`~hpc_sweep.track.stuck`), the logs (:mod:`~hpc_sweep.track.progress`), evidence of training
(:mod:`~hpc_sweep.track.evidence`), resuming (:mod:`~hpc_sweep.track.resume`), edited configs and duplicate tasks
(:mod:`~hpc_sweep.track.edited`, :mod:`~hpc_sweep.track.duplicates`), early stopping
(:mod:`~hpc_sweep.track.stopping`, before the top-up so the room it frees is used at once), adaptive search
(:mod:`~hpc_sweep.track.searching`: new configs asked as room appears, before the top-up), status.json/status.md
(:mod:`~hpc_sweep.track.snapshot`).

Manners: ONE live-queue query and at most ONE batched accounting query per poll, whatever the number of jobs;
no scheduler query at all sooner than the minimum interval; back off after controller time-outs; a failed
query changes no state. Job-written markers decide where accounting is missing or disabled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from hpc_sweep.common import faults, shell
from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.schedulers import base as scheduler
from hpc_sweep.schedulers.base import SchedulerError
from hpc_sweep.state.states import ACTIVE, FOLLOWED, UNFINISHED, ConfigState, SubmissionStatus, sql_list
from hpc_sweep.submit import intents
from hpc_sweep.track.decide import RECHECK_LOST_S, decide
from hpc_sweep.track.duplicates import check_duplicates
from hpc_sweep.track.edited import check_edited
from hpc_sweep.track.markers import read_markers
from hpc_sweep.track.resume import resume_ended
from hpc_sweep.track.searching import grow_search
from hpc_sweep.track.snapshot import write_snapshots
from hpc_sweep.track.stopping import settle_stops, stop_losers
from hpc_sweep.track.stuck import mark_stuck

if TYPE_CHECKING:
    from hpc_sweep.session import Session
    from hpc_sweep.state.rows import AttemptRow
    from hpc_sweep.state.store import Store
    from hpc_sweep.track.markers import Markers
    from hpc_sweep.track.progress import LogReading

MAX_BACKOFF_S = 3600
BACKUP_EVERY_S = 600


@dataclass
class PollReport:
    changes: list = field(default_factory=list)       # (config, old state, new state, reason)
    queried: bool = False
    scheduler_error: Optional[str] = None
    resumed: list = field(default_factory=list)
    submitted: list = field(default_factory=list)
    new_epochs: int = 0
    bytes_read: int = 0
    notes: list = field(default_factory=list)
    snapshot_error: Optional[str] = None              # status.json/status.md could not be written
    reconciled: Optional[intents.Reconciled] = None   # what settling the open submissions did (handed to submit)
    starts: dict = field(default_factory=dict)        # config -> how its resubmitted attempt starts


# -- the poll ----------------------------------------------------------------------------------------------------
def _scheduler_due(session: Session, now: float, force: bool) -> bool:
    store = session.store
    interval = session.spec.poll_min_interval_s or session.profile.poll_min_interval_s
    last = float(store.get_meta("scheduler_queried_at", "0"))
    backoff_until = float(store.get_meta("backoff_until", "0"))
    return force or (now - last >= interval and now >= backoff_until)


def _note_failure(session: Session, exc: SchedulerError, now: float) -> str:
    store = session.store
    failures = int(store.get_meta("scheduler_failures", "0")) + 1
    interval = session.spec.poll_min_interval_s or session.profile.poll_min_interval_s
    wait = min(MAX_BACKOFF_S, interval * 2 ** failures)
    note = (f"the scheduler could not be reached at {time.strftime('%Y-%m-%d %H:%M', time.localtime(now))} "
            f"({exc.message.strip()[:200]}); states are as last known; next try in {wait:.0f} s")
    with store.transaction():
        store.set_meta("scheduler_failures", str(failures))
        store.set_meta("backoff_until", str(now + wait))
        store.set_meta("scheduler_note", note)
    return note


def refresh_states(session: Session, report: PollReport, records: list, now: float) -> None:
    store, adapter = session.store, session.scheduler
    report.reconciled = intents.reconcile(session, records)
    report.notes += report.reconciled.lines()
    submitted = store.submissions(SubmissionStatus.SUBMITTED)
    ours = {s.scheduler_id for s in submitted}
    live = {r.task_id: r for r in records if r.submission_id in ours}
    active = _followed_attempts(store)
    gone = [a for a in active if a.job_id not in live and
            (a.state != ConfigState.LOST or now - (a.left_queue_at or 0) < RECHECK_LOST_S)]
    acct: dict = {}
    if gone:
        gone_subs = {a.submission for a in gone}
        sub_ids = sorted({s.scheduler_id for s in submitted if s.name in gone_subs})
        argv = adapter.accounting_argv(sub_ids) if sub_ids else None
        if argv is not None:
            try:
                acct = {r.task_id: r for r in adapter.parse_accounting(shell.run(argv, timeout=120))}
            except SchedulerError as exc:
                report.notes.append(f"accounting unavailable ({exc.message.strip()[:120]}); markers decide")
    markers = read_markers(session.paths.markers)
    _apply(session, report, active, live, acct, markers, now)


def _packed_tasks(store: Store) -> set:
    """(submission, task index) of the tasks that run several attempts (packed: hpc_sweep.submit.packing). Only
    submissions with more attempts than tasks are grouped (counting by the submission index is cheap: a poll of
    10,000 unpacked attempts spends a fraction of a millisecond here)."""
    packed = [row[0] for row in store.conn.execute(
        "SELECT name FROM submissions s WHERE ntasks < (SELECT COUNT(*) FROM attempts a WHERE a.submission = s.name)")]
    found: set = set()
    for name in packed:
        found.update(store.conn.execute("SELECT submission, task_index FROM attempts WHERE submission = ? "
                                        "GROUP BY task_index HAVING COUNT(*) > 1", (name,)).fetchall())
    return found


def _followed_attempts(store: Store) -> list:
    """The attempts a poll decides: pending and running ones, and lost ones (a late exit marker or accounting
    record corrects them)."""
    return store.attempts(states=FOLLOWED)


def apply_markers_only(session: Session, report: PollReport, now: float) -> None:
    """Between scheduler queries, and while the scheduler does not answer, the jobs' own markers still move
    attempts: an exit marker ends one, a start marker makes a pending one running."""
    markers = read_markers(session.paths.markers)
    active = _followed_attempts(session.store)
    finished = [a for a in active if markers.has(f"{a.config}.{a.attempt}", "exit") or
                markers.has(f"{a.config}.{a.attempt}", "skipped")]  # a packed task left it unstarted
    started = [a for a in active if a.state == ConfigState.PENDING and a not in finished and
               markers.load(f"{a.config}.{a.attempt}", "start")]
    _apply(session, report, finished, {}, {}, markers, now, scheduler_known=False)
    if not started:
        return
    with session.store.transaction():
        for att in started:
            start = markers.load(f"{att.config}.{att.attempt}", "start")
            session.store.update_attempt(att.config, att.attempt, state=ConfigState.RUNNING,
                                         started_at=start.get("time"), host=start.get("host"))
            session.store.set_config_state(att.config, ConfigState.RUNNING)
            report.changes.append((att.config, ConfigState.PENDING, ConfigState.RUNNING, None))


def _apply(session: Session, report: PollReport, attempts: list[AttemptRow], live: dict, acct: dict, markers: Markers,
           now: float, scheduler_known: bool = True) -> None:
    """Decide every attempt and write what changed, in one transaction: an attempt whose state, reason and
    fields are as stored is not written again (a steady poll of 10,000 running tasks writes nothing)."""
    store = session.store
    configs = {row[0]: (row[1], row[2], row[3]) for row in
               store.conn.execute("SELECT name, attempt, state, reason FROM configs")}
    attempt_updates: dict = {}   # column names -> [(values..., config, attempt)]
    config_updates, unstarted = [], []
    stamp = time.time()
    lost = ConfigState.LOST
    packed = _packed_tasks(store) if attempts else set()
    for att in attempts:
        state, reason, fields = decide(session, att, live.get(att.job_id), acct.get(att.job_id), markers, now,
                                       packed=(att.submission, att.task_index) in packed,
                                       scheduler_known=scheduler_known)
        if state == scheduler.UNKNOWN or (not scheduler_known and state == lost):
            continue
        fields = {k: v for k, v in fields.items() if v is not None and getattr(att, k) != v}
        if state != att.state or reason != att.reason:
            fields.update(state=state, reason=reason)
        if fields:
            attempt_updates.setdefault(tuple(fields), []).append((*fields.values(), att.config, att.attempt))
        attempt, old_state, old_reason = configs.get(att.config, (None, None, None))
        if attempt == att.attempt and (old_state != state or old_reason != reason):
            config_updates.append((state, reason, stamp, att.config))
            if state == ConfigState.WAITING:  # left unstarted by its packed task: goes again as it would have
                unstarted.append((att.resumed_from, att.config))
            if old_state != state:
                report.changes.append((att.config, old_state, state, reason))
    if not attempt_updates and not config_updates:
        return
    with store.transaction() as conn:
        for columns, values in attempt_updates.items():
            store.update_attempts(columns, values)
        conn.executemany("UPDATE configs SET state = ?, reason = ?, updated_at = ? WHERE name = ?", config_updates)
        conn.executemany("UPDATE configs SET next_mode = ? WHERE name = ?", unstarted)
        faults.point("poll_mid_write")  # a kill inside the transaction: the next poll finds the old states


def poll(session: Session, verbose: bool = False, force: bool = False, submit_waiting: bool = True) -> PollReport:
    """One poll. The caller holds the sweep lock."""
    from hpc_sweep.track.progress import LogReading

    with LogReading(session) as reading:  # a large poll's log reading starts now, in workers
        return _poll(session, reading, force, submit_waiting)


def _poll(session: Session, reading: LogReading, force: bool, submit_waiting: bool) -> PollReport:
    from hpc_sweep.track.evidence import check_completed
    from hpc_sweep.track.progress import update_progress
    from hpc_sweep.submit.queries import live_records

    report = PollReport()
    now = time.time()
    store = session.store
    records = None
    meta = {"polled_at": str(now)}  # written in the poll's last transaction
    check_edited(session, report)
    check_duplicates(session, report)
    work_left = store.conn.execute(f"SELECT 1 FROM configs WHERE state IN ({sql_list(UNFINISHED)}) "
                                   "LIMIT 1").fetchone() is not None
    work_left = work_left or bool(intents.open_submissions(session))
    if not work_left:  # every config is final: a note that states are as last known no longer applies
        meta.update(scheduler_failures="0", backoff_until="0", scheduler_note="")
    elif _scheduler_due(session, now, force):
        try:
            records = live_records(session)
            report.queried = True
            # A poll killed before its end did not record the query: the next one asks again, which is harmless.
            meta.update(scheduler_queried_at=str(now), scheduler_failures="0", backoff_until="0", scheduler_note="")
        except SchedulerError as exc:
            report.scheduler_error = _note_failure(session, exc, now)
    if records is not None:
        refresh_states(session, report, records, now)
        mark_stuck(session, report)  # pending for a reason waiting cannot clear: said once, with the fix
    else:  # within the minimum interval, or the scheduler did not answer: the markers still end runs
        apply_markers_only(session, report, now)
    update_progress(session, report, reading)
    check_completed(session, report)  # "completed" needs evidence of training, from the logs just read
    settle_stops(session, report)  # stops a killed poll sent but did not record: before any resume
    resume_ended(session, report)
    if records is not None:  # the scheduler answered: the states are fresh and a loser's task can be ended
        stopped = stop_losers(session, report)
        records = [r for r in records if r.task_id not in stopped]  # their room goes to waiting configs now
        grow_search(session, report.notes)  # [search]: tell how runs ended, ask for configs as room appears
    if submit_waiting and records is not None:
        from hpc_sweep.submit.submitting import submit

        sub = submit(session, records=records, reconciled=report.reconciled, refuse_unfit=False)
        report.submitted = sub.submitted
        report.starts = sub.starts
        report.notes += [line for line in sub.reconciled.lines() if line not in report.notes] + sub.errors
    backup = _backup_due(session, report, now)
    if backup:
        meta["backup_at"] = str(now)
    with store.transaction():
        for key, value in meta.items():
            store.set_meta(key, value)
    try:
        write_snapshots(session)
    except RuntimeFailure as exc:  # the state is committed; the caller reports it after the summary
        report.snapshot_error = str(exc)
    if backup:
        store.backup()
    return report


def _backup_due(session: Session, report: PollReport, now: float) -> bool:
    """Whether to refresh the copy a corrupt database is recovered from: at once when this poll submitted or
    resumed anything (what a restored copy must not forget, or runs would be submitted twice); otherwise at most
    every BACKUP_EVERY_S while anything changed: states and curves lost with an older copy are found again by the
    next poll from the scheduler, the markers and the logs."""
    store = session.store
    settled = report.reconciled
    vital = report.submitted or report.resumed or (settled is not None and (
        settled.found or settled.abandoned or settled.adopted or settled.cancelled))
    changed = report.changes or report.new_epochs
    last = float(store.get_meta("backup_at", "0"))
    return bool(vital or (changed and now - last > BACKUP_EVERY_S) or now - last > 3600 or
                not session.paths.db_backup.exists())


GROUP_CHANGES_OVER = 20


def change_lines(changes: list) -> list:
    """One line per change; past a screenful, one line per transition (cron mails every line printed).
    Failures always get their own line: their reason matters."""
    if len(changes) <= GROUP_CHANGES_OVER:
        return [f"{c}: {old} -> {new}" + (f" ({why})" if why else "") for c, old, new, why in changes]
    lines, grouped = [], {}
    for config, old, new, reason in changes:
        if reason and new not in ACTIVE | {ConfigState.COMPLETED}:
            lines.append(f"{config}: {old} -> {new} ({reason})")
        else:
            grouped.setdefault((old, new), []).append(config)
    for (old, new), names in grouped.items():
        shown = ", ".join(names[:3]) + (f" ... {names[-1]}" if len(names) > 3 else "")
        lines.insert(0, f"{len(names)} configs: {old} -> {new} ({shown})")
    return lines


def summary_lines(report: PollReport, verbose: bool) -> list:
    lines = []
    if report.scheduler_error:
        lines.append(f"warning: {report.scheduler_error}")
    lines += change_lines(report.changes)
    for name in report.resumed:
        if name in report.starts:
            lines.append(f"{name}: resubmitted, {report.starts[name]}")
        else:
            lines.append(f"{name}: will be resubmitted when there is room (resumed from its checkpoint if it has one)")
    for job, sid, n in report.submitted:
        lines.append(f"submitted {job} as {sid} ({n} task{'s' if n != 1 else ''})")
    lines += report.notes
    if verbose:
        lines.append(f"scheduler queried: {'yes' if report.queried else 'no (min interval)'}; "
                     f"new epochs: {report.new_epochs}; log bytes read: {report.bytes_read}")
    return lines

