"""The submission protocol's records: a submission is written down before its command runs, and one whose outcome
is not known is settled only by an answer from the scheduler — never by a guess.

Statuses of a submission (table ``submissions``):

- ``intent``: recorded (job name, script, map) before the submit command runs; a crash may have left it either way.
- ``unknown``: the submit command ran and its outcome is unknown (a time-out, a lost reply): it may be queued.
- ``submitted``: the scheduler's id is recorded; poll follows its tasks.
- ``refused``: the scheduler answered that it did not queue it.
- ``abandoned``: a lookup answered that it is not there and no task of it ever started.
- ``cancelled``: ``hpc-sweep cancel`` cancelled it by name before its id was known.

The rules (README, "Submitting and polling"):

1. An *open* submission (intent or unknown) holds its configs: none is submitted again while it is open.
2. It is settled only by a lookup that answered: found (by its unique name in the live queue or in accounting, or
   from a start marker one of its tasks wrote) → submitted; not there → abandoned, and its configs may go again,
   under a new name. A lookup that failed leaves it open. A refusal of a later submit proves nothing about it.
3. A job in the queue that carries this sweep's job-name prefix but is not in the state is adopted through the map
   file it names (``script/<job>.map``), unless its configs are already queued or ran under another submission
   (then it is cancelled: it would run them twice); without a map file it is reported and nothing is submitted
   until it is gone.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

from hpc_sweep.common import faults, shell
from hpc_sweep.schedulers.base import SchedulerError, TaskRecord
from hpc_sweep.state.rows import SubmissionRow
from hpc_sweep.state.states import ACTIVE, OPEN, QUEUED, SUBMITTABLE, SUBMITTING, ConfigState, sql_list
from hpc_sweep.state.states import SubmissionStatus as Status

if TYPE_CHECKING:
    from hpc_sweep.session import Session
    from hpc_sweep.state.store import Store

LOOKUP_TIMEOUT_S = 60
FOUND, ABSENT, UNKNOWN = "found", "absent", "unknown"


@dataclass
class Reconciled:
    """What settling the open submissions and adopting orphans did (each a line for the user)."""

    found: list = field(default_factory=list)       # (job name, scheduler id)
    abandoned: list = field(default_factory=list)   # job names that never reached the scheduler
    still_open: list = field(default_factory=list)  # (job name, why the lookup did not answer)
    adopted: list = field(default_factory=list)     # (job name, scheduler id): unknown to the state, now followed
    cancelled: list = field(default_factory=list)   # (job name, scheduler id): duplicates of queued configs
    warnings: list = field(default_factory=list)    # anything else the user must hear of
    held: Optional[str] = None                      # why nothing may be submitted now

    def lines(self) -> list:
        out = [f"found earlier submission {name} as {sid}; recorded, not resubmitted" for name, sid in self.found]
        out += [f"submission {name} never reached the scheduler; its configs go again" for name in self.abandoned]
        out += [f"warning: submission {name}: outcome still unknown ({why}); its configs are held"
                for name, why in self.still_open]
        out += [f"warning: adopted job {sid} ({name}), which the state did not know" for name, sid in self.adopted]
        out += [f"warning: cancelled job {sid} ({name}): its configs were already queued or ran" for name, sid in
                self.cancelled]
        out += [f"warning: {text}" for text in self.warnings]
        if self.held:
            out.append(f"warning: {self.held}")
        return out


# -- looking a submission up -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lookup:
    verdict: str                   # FOUND, ABSENT or UNKNOWN
    scheduler_id: Optional[str] = None
    detail: str = ""


def lookup(session: Session, sub: SubmissionRow, records: Optional[Sequence[TaskRecord]]) -> Lookup:
    """Where is submission ``sub``? ``records``: the live queue's answer, or None when it failed or was not asked.
    FOUND needs the scheduler or a task's own marker; ABSENT needs every source to have answered."""
    adapter = session.scheduler
    if records is not None and adapter.live_lists_names:
        for rec in records:
            if rec.name == sub.name:
                return Lookup(FOUND, rec.submission_id, "in the queue")
    from_marker = _submission_from_markers(session, sub)
    if from_marker:
        return Lookup(FOUND, from_marker, "from a start marker")
    if records is None and adapter.live_lists_names:
        return Lookup(UNKNOWN, detail="the live queue did not answer")
    argv = adapter.lookup_argv(getpass.getuser(), sub.name, since=sub.created_at)
    if argv is None:
        return Lookup(ABSENT, detail="not in the queue")
    try:
        ids = adapter.parse_lookup(shell.run(argv, timeout=LOOKUP_TIMEOUT_S, cwd=str(session.paths.root)))
    except SchedulerError as exc:
        return Lookup(UNKNOWN, detail=exc.message.strip()[:200])
    if ids:
        return Lookup(FOUND, ids[0], "by name")
    return Lookup(ABSENT, detail="not in the queue nor in accounting")


def _submission_from_markers(session: Session, sub: SubmissionRow) -> Optional[str]:
    """A task of the submission that started wrote a start marker naming its job: take the id from it. A marker
    of another job name (the same config and attempt claimed by another submission) is not this one's."""
    for att in session.store.attempts(submission=sub.name):
        marker = session.paths.markers / f"{att.config}.{att.attempt}.start"
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if data.get("job_name", sub.name) != sub.name:
            continue
        if data.get("submission_id"):
            return data["submission_id"]
        if data.get("job_id"):
            return session.scheduler.submission_of(data["job_id"])
    return None


# -- changing a submission's status -------------------------------------------------------------------------------
def record_intent(store: Store, name: str, shape: str, script: str, map_file: str, ntasks: int) -> None:
    """The submission ``name`` is recorded as an intent: before its submit command runs (or, for a job adopted
    from the queue, before it is recorded as submitted). Call inside a transaction."""
    store.conn.execute("INSERT INTO submissions (name, shape, script, map, status, ntasks, created_at) "
                       f"VALUES (?, ?, ?, ?, '{Status.INTENT}', ?, ?)",
                       (name, shape, script, map_file, ntasks, time.time()))


def hold_attempts(store: Store, name: str, entries: Sequence, modes: Optional[Sequence] = None) -> None:
    """The attempts of ``entries`` (map entries) are recorded under submission ``name``, held (state
    ``submitting``) until it is settled; ``modes``: how each attempt starts (resume, fresh). Inside a transaction."""
    modes = modes if modes is not None else [None] * len(entries)
    store.conn.executemany(
        "INSERT OR REPLACE INTO attempts (config, attempt, submission, task_index, state, run_config, resumed_from) "
        f"VALUES (?, ?, ?, ?, '{SUBMITTING}', ?, ?)",
        [(e.name, e.attempt, name, e.index, e.config_file, mode) for e, mode in zip(entries, modes)])
    # Shown pending from here on: if this process dies once the command ran, the array may be queued, and status
    # must not show its configs waiting (release() sets them waiting again when nothing was queued).
    store.conn.executemany(f"UPDATE configs SET state = '{ConfigState.PENDING}', reason = ?, updated_at = ? "
                           "WHERE name = ?",
                           [(f"being submitted as {name}", time.time(), e.name) for e in entries])


def record_submitted(session: Session, sub: SubmissionRow, scheduler_id: str) -> None:
    """The submission is in the scheduler as ``scheduler_id``: its attempts become pending tasks. Call inside a
    transaction."""
    store, adapter = session.store, session.scheduler
    now = time.time()
    is_array = adapter.uses_array(sub.ntasks)
    store.conn.execute(f"UPDATE submissions SET status = '{Status.SUBMITTED}', scheduler_id = ?, submitted_at = ? "
                       "WHERE name = ?", (scheduler_id, now, sub.name))
    tasks = store.attempts(submission=sub.name)
    store.update_attempts(("state", "job_id", "submitted_at"),
                          [(ConfigState.PENDING, adapter.task_id(scheduler_id, att.task_index, is_array), now,
                            att.config, att.attempt) for att in tasks])
    store.conn.executemany(f"UPDATE configs SET state = '{ConfigState.PENDING}', attempt = ?, reason = NULL, "
                           "next_mode = NULL, updated_at = ? WHERE name = ?",
                           [(att.attempt, now, att.config) for att in tasks])
    faults.point("during_state_write")  # inside the caller's transaction: a kill here must roll all of it back


def record_unknown(session: Session, sub: SubmissionRow, message: str) -> None:
    """The submit command ran but its outcome is unknown: the configs show pending and are held."""
    store = session.store
    reason = (f"submitted as {sub.name}, not confirmed ({short(message)}); looked up by name before anything "
              "is submitted again")
    with store.transaction():
        store.conn.execute(f"UPDATE submissions SET status = '{Status.UNKNOWN}', note = ? WHERE name = ?",
                           (message, sub.name))
        store.conn.execute(f"UPDATE configs SET state = '{ConfigState.PENDING}', reason = ?, updated_at = ? WHERE name "
                           f"IN (SELECT config FROM attempts WHERE submission = ? AND state = '{SUBMITTING}')",
                           (reason, time.time(), sub.name))
        store.add_event("unknown", f"{sub.name}: {message}")


def release(session: Session, sub: SubmissionRow, status: str, reason: str, note: Optional[str] = None) -> list:
    """Nothing of ``sub`` is (or will be) queued: drop its unrecorded attempts and let its configs wait again.
    Returns the configs released. Call inside a transaction."""
    store = session.store
    names = [row[0] for row in store.conn.execute(
        f"SELECT config FROM attempts WHERE submission = ? AND state = '{SUBMITTING}'", (sub.name,))]
    store.conn.execute(f"DELETE FROM attempts WHERE submission = ? AND state = '{SUBMITTING}'", (sub.name,))
    store.conn.execute("UPDATE submissions SET status = ?, note = COALESCE(?, note) WHERE name = ?",
                       (status, note, sub.name))
    # Only configs still held by it: a config an open intent never touched (a crash before the command) keeps its
    # own state; one shown pending for it goes back to waiting.
    store.conn.executemany(f"UPDATE configs SET state = '{ConfigState.WAITING}', reason = ?, updated_at = ? "
                           f"WHERE name = ? AND state IN ({sql_list(QUEUED)}) AND name NOT IN (SELECT config "
                           f"FROM attempts WHERE state IN ({sql_list(ACTIVE | {SUBMITTING})}))",
                           [(reason, time.time(), name) for name in names])
    return names


def short(message: str) -> str:
    """A message on one line, clipped to 120 characters."""
    text = " ".join(message.split())
    return text if len(text) <= 120 else text[:117] + "..."


# -- settling every open submission ---------------------------------------------------------------------------------
def reconcile(session: Session, records: Optional[Sequence[TaskRecord]]) -> Reconciled:
    """Settle the open submissions and adopt this sweep's jobs the state does not know. ``records``: the live
    queue's answer (None when it failed: then only markers and name lookups can settle anything)."""
    done = Reconciled()
    for sub in session.store.submissions():
        if sub.status not in OPEN:
            continue
        found = lookup(session, sub, records)
        if found.verdict == UNKNOWN:
            done.still_open.append((sub.name, found.detail))
            continue
        with session.store.transaction():
            if found.verdict == FOUND:
                record_submitted(session, sub, found.scheduler_id)
                done.found.append((sub.name, found.scheduler_id))
            else:
                release(session, sub, Status.ABANDONED, f"its submission {sub.name} never reached the scheduler "
                                                   "(looked up by name); waiting to be submitted anew")
                session.store.add_event("abandoned", f"{sub.name}: {found.detail}")
                done.abandoned.append(sub.name)
    if records is not None and session.scheduler.live_lists_names:
        adopt_orphans(session, records, done)
    adopt_from_markers(session, done)
    return done


def job_name_pattern(prefix: str) -> re.Pattern:
    """This sweep's job names: <prefix>-<shape tag>-<sequence number>."""
    return re.compile(rf"{re.escape(prefix)}-[A-Za-z0-9_.]+-\d+")


def adopt_orphans(session: Session, records: Sequence[TaskRecord], done: Reconciled) -> None:
    """Jobs in the queue named like this sweep's but unknown to the state (a late-landing submit, a state restored
    from an older copy): follow them through their map file, or cancel those that would run a config twice."""
    store = session.store
    pattern = job_name_pattern(session.prefix)
    subs = {sub.name: sub for sub in store.submissions()}
    known_ids = {sub.scheduler_id for sub in subs.values() if sub.status == Status.SUBMITTED}
    orphans: dict = {}  # (name, id) -> its tasks still waiting to start, in the order the queue lists them
    for rec in records:
        if rec.name and pattern.fullmatch(rec.name) and rec.submission_id not in known_ids:
            if rec.name in subs and subs[rec.name].status in OPEN:
                continue  # it was settled above, or its lookup is still open
            waiting = orphans.setdefault((rec.name, rec.submission_id), [])
            if rec.state == ConfigState.PENDING:
                waiting.append(rec.task_id)
    for (name, sid), waiting in orphans.items():
        _adopt(session, name, sid, subs.get(name), done, cancel_waiting=waiting)


def adopt_from_markers(session: Session, done: Reconciled) -> None:
    """Runs the state does not know that started anyway (their job may have left the queue long ago): a start
    marker of an unknown (config, attempt) names its job, which is adopted through its map file. Without this, a
    state restored from an older copy would submit those configs again under the same attempt number."""
    try:
        names = os.listdir(session.paths.markers)
    except FileNotFoundError:
        return
    starts = [name[:-len(".start")] for name in names if name.endswith(".start")]
    if not starts:
        return
    store = session.store
    known = {f"{config}.{attempt}" for config, attempt in store.conn.execute("SELECT config, attempt FROM attempts")}
    subs = {sub.name: sub for sub in store.submissions()}
    jobs: dict = {}
    for key in starts:
        if key in known:
            continue
        try:
            data = json.loads((session.paths.markers / f"{key}.start").read_text())
        except (OSError, ValueError):
            continue  # being written: the next poll reads it
        name = data.get("job_name")
        sid = data.get("submission_id") or (session.scheduler.submission_of(data["job_id"]) if data.get("job_id")
                                            else None)
        if name and sid and (name not in subs or subs[name].status not in OPEN | {Status.SUBMITTED}):
            jobs[name] = sid
    for name, sid in jobs.items():
        _adopt(session, name, sid, subs.get(name), done, cancel_waiting=None)


def _adopt(session: Session, name: str, sid: str, sub: Optional[SubmissionRow], done: Reconciled,
           cancel_waiting: Optional[list]) -> None:
    """Follow job ``sid`` (named ``name``, unknown to the state) through its map file. When its configs are queued
    or ran under another submission, its tasks still waiting to start (``cancel_waiting``, from the live queue)
    are cancelled; tasks already running are left to the job script's claim guard, which lets each (config,
    attempt) run once, and the poll follows whichever task holds the claim through the markers."""
    from hpc_sweep.common.jobmap import parse_map

    store = session.store
    map_file = session.paths.script / f"{name}.map"
    try:
        entries = parse_map(map_file.read_text())
    except (OSError, ValueError):
        done.held = (f"job {sid} ({name}) carries this sweep's job name but the state does not know it and "
                     f"{map_file} is missing; nothing is submitted until it is gone (cancel it by hand: it may run "
                     "configs twice)")
        return
    taken = {(row[0], row[1]) for row in store.conn.execute(
        "SELECT config, attempt FROM attempts WHERE submission IS NOT NULL AND submission != ?", (name,))}
    configs = {row[0]: (row[1], row[2]) for row in store.conn.execute("SELECT name, attempt, state FROM configs")}
    clash = [e for e in entries if (e.name, e.attempt) in taken or e.name not in configs
             or configs[e.name][0] >= e.attempt or configs[e.name][1] not in SUBMITTABLE]
    if clash:
        if cancel_waiting:
            _cancel_orphan(session, name, sid if len(cancel_waiting) == len(entries) else None, cancel_waiting,
                           done)
        else:
            with store.transaction():
                store.add_event("orphan", f"{name} as {sid}: started runs of configs recorded under another "
                                          "submission; not adopted")
            done.warnings.append(f"job {sid} ({name}) runs or ran configs recorded under another submission; not "
                                 "adopted (the claim guard let each run once)")
        return
    is_array = session.scheduler.uses_array(len(entries))
    with store.transaction():
        if sub is None:
            record_intent(store, name, "adopted", str(session.paths.script / f"{name}.sh"), str(map_file),
                          len(entries))
        hold_attempts(store, name, entries)
        record_submitted(session, store.submission(name)._replace(ntasks=len(entries)), sid)
        store.add_event("adopted", f"{name} as {sid}: {len(entries)} task(s){'' if is_array else ' (plain job)'}")
    done.adopted.append((name, sid))


def _cancel_orphan(session: Session, name: str, sid: Optional[str], waiting: list, done: Reconciled) -> None:
    """Cancel the waiting tasks of a job whose configs are queued or ran under another submission (the whole job
    by its id ``sid`` when none of it started)."""
    ids = [sid] if sid else waiting
    result = shell.run(session.scheduler.cancel_argv(ids), timeout=120, cwd=str(session.paths.root))
    with session.store.transaction():
        session.store.add_event("orphan", f"{name} as {sid}: duplicate of queued configs; cancel "
                                          f"{'sent' if result.returncode == 0 else 'failed: ' + result.stderr[:200]}")
    if result.returncode == 0:
        done.cancelled.append((name, " ".join(ids)))
    else:
        done.held = (f"job {sid} ({name}) duplicates configs of this sweep and could not be cancelled "
                     f"({short(result.stderr or result.stdout)}); cancel it by hand")


def open_submissions(session: Session) -> list:
    return [sub for sub in session.store.submissions() if sub.status in OPEN]


def held_configs(session: Session) -> set:
    """Configs an open submission holds (never submitted again while it is open)."""
    return {row[0] for row in session.store.conn.execute(
        f"SELECT config FROM attempts WHERE state = '{SUBMITTING}'")}
