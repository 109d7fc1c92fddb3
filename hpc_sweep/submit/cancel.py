"""`hpc-sweep cancel`: cancel this sweep's jobs by their exact ids (or, for a submission whose id never reached us,
its exact job name) — never by user or by name pattern."""

from __future__ import annotations

import getpass
import re
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple, Optional, Sequence

from hpc_sweep.common import shell
from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.state.states import ACTIVE, UNFINISHED, ConfigState, SubmissionStatus, sql_list
from hpc_sweep.submit import intents
from hpc_sweep.submit.queries import live_records_or_none
from hpc_sweep.submit.runcontrol import STOP, control_path, request_stop

if TYPE_CHECKING:
    from hpc_sweep.session import Session


class Cancelled(NamedTuple):
    ids: list        # ids or job names passed to the scheduler
    marked: list     # configs marked cancelled
    asked: tuple     # attempts (AttemptRow) asked to stop inside a packed task that goes on (EndedRuns.asked)


def cancel(session: Session, names: Optional[Sequence[str]] = None) -> Cancelled:
    """Returns what was passed to the scheduler, cancelled and asked to stop. The caller holds the sweep
    lock. Submissions whose outcome is unknown are settled first, and cancelled by name where they stay unknown:
    a job that may be queued is never left behind."""
    store = session.store
    if names:
        store.require_names(names)
    wanted = set(names) if names else store.config_names()
    cancelled = _cancel_open_submissions(session, wanted)
    configs = {c.name: c for c in store.configs()}
    active = [a for a in store.attempts() if a.state in ACTIVE and a.config in wanted
              and configs[a.config].attempt == a.attempt and a.job_id]
    ended = end_runs(session, active, ConfigState.CANCELLED, "cancelled by hpc-sweep cancel")
    marked = []
    with store.transaction():
        for name in sorted(wanted - {a.config for a in ended.left_to_poll}):
            if configs[name].state in UNFINISHED or name in cancelled:
                store.set_config_state(name, ConfigState.CANCELLED, "cancelled by hpc-sweep cancel")
                marked.append(name)
        store.add_event("cancel", f"{len(ended.ids)} id(s): {' '.join(ended.ids)[:500]}")
    store.backup()  # a restored older copy must not bring cancelled configs back to the queue
    return Cancelled(ended.ids + [f"name={sub}" for sub in cancelled.values()], marked, tuple(ended.asked))


class EndedRuns(NamedTuple):
    ids: list            # the ids passed to the scheduler's cancel command
    ended: list          # the attempts (AttemptRow) now in the state asked for
    left_to_poll: list   # attempts that had ended on their own first: the next poll records how
    asked: tuple = ()    # of ``ended``: the runs asked to stop inside a packed task that goes on


def end_runs(session: Session, attempts: Sequence, state: str, reason: str,
             reasons: Optional[Mapping[str, str]] = None,
             also_record: Optional[Callable[[list], None]] = None) -> EndedRuns:
    """End these active attempts (recorded, with a job id) in the scheduler and record them, and their configs
    where it is the config's current attempt, as ``state`` with ``reason`` (``reasons``: config -> its own reason,
    where it has one): the one way this tool stops a run early (cancel, an early stop). A whole submission is
    cancelled by its id where all its active tasks end, its tasks one by one otherwise. A run of a packed task whose
    other runs go on is asked to stop instead (:mod:`hpc_sweep.submit.runcontrol`: that run's process group only);
    a packed task is cancelled only where all its runs end. ``also_record(ended)`` runs inside the same
    transaction (what the caller keeps of them is written with their state, or not at all). The caller holds the
    sweep lock. Raises RuntimeFailure, recording nothing, when the scheduler refuses."""
    store, adapter = session.store, session.scheduler
    attempts = [a for a in attempts if a.job_id]
    # A task that ended on its own first is not ended by us: how it ended (completed whole, perhaps) is the next
    # poll's to record. Its exit marker is looked for before the scancel (a killed task writes one too).
    ended_first = {(a.config, a.attempt) for a in attempts
                   if (session.paths.markers / f"{a.config}.{a.attempt}.exit").exists()}
    to_end = [a for a in attempts if (a.config, a.attempt) not in ended_first]
    reasons = reasons or {}
    asked = _in_going_tasks(session, to_end)
    # Every run ended here gets its stop record (state, reason) among the markers before the scheduler is asked:
    # for a run of a packed task that goes on it is the request its launcher acts on; for the others, only a
    # record, which hpc-sweep repair reads to tell a run we ended from one killed by something else.
    recorded = [att for att in to_end if request_stop(session.paths.markers, att.config, att.attempt,
                                                      reasons.get(att.config, reason), state=state)]
    ids = _ids_to_cancel(session, [a for a in to_end if a not in asked])
    if ids:
        argv = adapter.cancel_argv(ids)
        result = shell.run(argv, timeout=120)
        if result.returncode != 0 and not _only_finished_jobs(result):
            # Nothing was cancelled: no record may say otherwise. A packed task's launcher may have acted on its
            # runs' records already; those stay, and the poll records such a run as it was asked to end.
            packed = _packed_job_ids(session, recorded)
            _withdraw(session, [a for a in recorded if a not in asked and a.job_id not in packed])
            raise RuntimeFailure(f"{' '.join(argv)[:200]} failed: {(result.stderr or result.stdout).strip()[:300]}")
        finished_ids = set(_FINISHED_ID.findall(result.stderr + result.stdout))
        ended_first |= {(a.config, a.attempt) for a in attempts if a.job_id in finished_ids or
                        _submission_id(session, a) in finished_ids}
        _withdraw(session, [a for a in recorded if a not in asked and (a.config, a.attempt) in ended_first])
    left = [a for a in attempts if (a.config, a.attempt) in ended_first]
    ended = [a for a in attempts if (a.config, a.attempt) not in ended_first]
    current = {c.name: c.attempt for c in store.configs()}
    with store.transaction():
        for att in ended:
            why = reasons.get(att.config, reason)
            store.update_attempt(att.config, att.attempt, state=state, reason=why)
            if current.get(att.config) == att.attempt:
                store.set_config_state(att.config, state, why)
        if also_record is not None:
            also_record(ended)
    return EndedRuns(ids, ended, left, tuple(asked))


def _withdraw(session: Session, attempts: list) -> None:
    """Remove the stop records just written for runs this call did not end after all (the scheduler refused, or
    they had ended on their own): they ended however they ended, which the poll records."""
    for att in attempts:
        try:
            control_path(session.paths.markers, att.config, att.attempt, STOP).unlink()
        except FileNotFoundError:
            pass


def _packed_job_ids(session: Session, attempts: list) -> set:
    """The job ids among these attempts' that several attempts share: packed tasks, whose launcher reads .stop."""
    shared = session.store.query("SELECT job_id FROM attempts WHERE job_id IS NOT NULL GROUP BY job_id "
                                 "HAVING COUNT(*) > 1")  # only after a refusal: no need to be quick
    return {row[0] for row in shared} & {a.job_id for a in attempts}


def _in_going_tasks(session: Session, attempts: list) -> list:
    """The attempts whose task (packed) also runs active attempts that are not among them: that task goes on."""
    ending = {(a.config, a.attempt) for a in attempts}
    job_ids = {a.job_id for a in attempts}
    going = {a.job_id for a in session.store.attempts(states=ACTIVE)
             if a.job_id in job_ids and (a.config, a.attempt) not in ending}
    return [a for a in attempts if a.job_id in going]


def _cancel_open_submissions(session: Session, wanted: set) -> dict:
    """Settle the open submissions that hold wanted configs (a live query and lookups by name); those still of
    unknown outcome are cancelled by their exact job name. Returns config -> the submission cancelled by name.
    Raises (changing nothing more) when one can neither be settled nor cancelled."""
    store, adapter = session.store, session.scheduler

    def holding() -> list:
        return [sub for sub in intents.open_submissions(session)
                if wanted & {att.config for att in store.attempts(submission=sub.name)}]

    if not holding():
        return {}
    # Found ones are cancelled by their id below; absent ones hold nothing any more.
    intents.reconcile(session, live_records_or_none(session))
    by_config: dict = {}
    for sub in holding():
        argv = adapter.cancel_by_name_argv(getpass.getuser(), sub.name)
        result = shell.run(argv, timeout=120) if argv is not None else None
        if result is None or result.returncode != 0:
            why = "the scheduler cannot cancel by name" if result is None else \
                (result.stderr or result.stdout).strip()[:200] or f"exit status {result.returncode}"
            raise RuntimeFailure(f"submission {sub.name} may be queued but the scheduler did not say ({why}); "
                                 "nothing more was cancelled: run hpc-sweep cancel again")
        with store.transaction():
            for config in intents.release(session, sub, SubmissionStatus.CANCELLED, "cancelled by hpc-sweep cancel",
                                          note="cancelled by name"):
                by_config[config] = sub.name
    return by_config


def _ids_to_cancel(session: Session, active: list) -> list:
    """Whole submissions by their id where every task of it is being cancelled, single tasks otherwise."""
    by_submission: dict = {}
    for att in active:
        by_submission.setdefault(att.submission, []).append(att)
    subs = {s.name: s for s in session.store.submissions()}
    ids = []
    for sub_name, atts in by_submission.items():
        sub = subs.get(sub_name)
        all_tasks = session.store.conn.execute(
            f"SELECT COUNT(*) FROM attempts WHERE submission = ? AND state IN ({sql_list(ACTIVE)})",
            (sub_name,)).fetchone()[0]
        if sub and sub.scheduler_id and all_tasks == len(atts):
            ids.append(sub.scheduler_id)
        else:
            ids.extend(dict.fromkeys(a.job_id for a in atts))  # a packed task's runs share its id
    return ids


# scancel's word for an id that has already ended (or that it no longer knows): nothing of it was cancelled.
_FINISHED_ID = re.compile(r"job id (\S+): (?:Job/step already completing or completed|Invalid job id)", re.I)


def _submission_id(session: Session, att) -> Optional[str]:
    sub = session.store.submission(att.submission) if att.submission else None
    return sub.scheduler_id if sub else None


def _only_finished_jobs(result) -> bool:
    text = (result.stderr + result.stdout).lower()
    return "already completing or completed" in text or "invalid job id" in text or "unknown job id" in text \
        or "job has finished" in text
