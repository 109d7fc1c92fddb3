"""The poll's early-stopping step (sweep.toml ``[early_stop]``): apply the rule to the curves the poll just read,
and end the losers through the scheduler, each by its own task, as ``stopped``.

It runs after the attempts are decided and the logs read, and before the top-up, so the room a stopped run frees
goes to waiting configs in the same poll. The rule itself is pure (:mod:`hpc_sweep.track.early_stop`); this module
gathers its input from the state and writes its outcome:

- each config's curve of the rule's metric is one curve across its attempts (a resumed run's epochs continue its
  curve; an epoch logged again by a later attempt takes the later value);
- a running config (its current attempt running, with a job id) may be stopped; every other config with a curve is
  evidence (finished); a config resubmitted by hand after a stop is never stopped again (``early_stops.exempt``);
- asha's record of the rung each run was judged at and kept is stored (``early_stops.rung``) between polls, and so
  are the epoch a run was stopped at and its planned last epoch (the epochs saved);
- a loser is ended by :func:`hpc_sweep.submit.cancel.end_runs`, the one way this tool ends a run early: only its
  own task is cancelled, and a run whose exit marker is already in sight is left to the next poll.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.state.states import ACTIVE, ConfigState
from hpc_sweep.submit.cancel import end_runs
from hpc_sweep.track.early_stop import FINISHED, RUNNING, STOPPED, Curve, decide

if TYPE_CHECKING:
    from hpc_sweep.session import Session
    from hpc_sweep.track.poll import PollReport

# How an attempt our stop ended may have been recorded by a poll that did not know of the stop.
# How a run our stop ended looks to a poll: cancelled (the scheduler's word), or, without accounting, its exit
# marker's TERM. A timeout, an OOM, a node failure or another exit code is the run's own end, not our stop.
_TERM = "killed by signal 15"
_METRIC_COLUMNS = {"val_loss": "val_loss", "train_loss": "train_loss"}  # a metric names the epochs column it reads


def stop_losers(session: Session, report: PollReport) -> set:
    """Apply ``[early_stop]`` once. Returns the job ids of the tasks it ended (their room is free now)."""
    spec = session.spec.early_stop
    store = session.store
    if spec is None:
        return set()
    # A decision changes only with new epochs: none read since the last one, nothing to judge (and no curve read).
    read_at = store.query("SELECT MAX(updated_at) FROM progress")[0][0]
    if read_at is None or str(read_at) == store.get_meta("early_stop_judged_at"):
        return set()
    rows = store.query("SELECT name, state, attempt FROM configs")
    configs = {name: (state, attempt) for name, state, attempt in rows}
    if not any(state == ConfigState.RUNNING for state, _ in configs.values()):
        return set()
    kept = store.early_stops()
    curves, lasts = _curves(session, configs, kept, _METRIC_COLUMNS[spec.metric])
    max_epochs = _max_epochs(session)
    passed = {name: row.rung for name, row in kept.items() if row.rung is not None}
    decision = decide(curves, spec, passed, max(max_epochs.values(), default=None))
    newly_passed = [(rung, name) for name, rung in decision.passed.items() if passed.get(name) != rung]
    stops = {stop.name: stop for stop in decision.stops}
    ended: list = []
    asked: set = set()
    now = time.time()

    def record(attempts: list) -> None:  # inside end_runs' transaction: kept with the stopped state, or not at all
        for att in attempts:
            store.update_attempt(att.config, att.attempt, ended_at=att.ended_at or now)
            store.add_event("early_stop", stops[att.config].reason, att.config)
        store.set_early_stops(("rung",), newly_passed)
        store.set_early_stops(("stopped_epoch", "max_epoch"),
                              [(lasts.get(a.config), max_epochs.get(a.config), a.config) for a in attempts])
        store.set_early_stops(("stopping_attempt", "stopping_reason"), [(None, None, a.config) for a in running])
        store.set_meta("early_stop_judged_at", str(read_at))

    running = [a for a in store.attempts(states=[ConfigState.RUNNING])
               if a.config in stops and a.job_id and a.attempt == configs[a.config][1]]
    if running:
        # The stops are written down before the scheduler is asked: a poll killed between the two leaves the
        # cancelled tasks to settle_stops, which records them as stopped rather than cancelled.
        with store.transaction():
            store.set_early_stops(("stopping_attempt", "stopping_reason"),
                                  [(a.attempt, stops[a.config].reason, a.config) for a in running])
        try:
            result = end_runs(session, running, ConfigState.STOPPED, "early stop",
                              reasons={name: stop.reason for name, stop in stops.items()}, also_record=record)
            ended, asked = result.ended, set(result.asked)
        except RuntimeFailure as exc:  # the scheduler refused: nothing was recorded; the next poll judges again
            report.notes.append(f"early stop: could not end {', '.join(sorted(stops))}: {exc}")
            with store.transaction():
                store.set_early_stops(("stopping_attempt", "stopping_reason"),
                                      [(None, None, a.config) for a in running])
            return set()
    if not running:
        with store.transaction():
            record([])
    for att in ended:
        report.changes.append((att.config, ConfigState.RUNNING, ConfigState.STOPPED, stops[att.config].reason))
    if ended:
        saved = sum(max(0, max_epochs[a.config] - lasts[a.config]) for a in ended
                    if a.config in max_epochs and a.config in lasts)
        report.notes.append(f"early stop: {len(ended)} run(s) stopped, {saved} epochs not trained; "
                            "their room goes to waiting configs (hpc-sweep resubmit NAME brings one back)")
    # A packed task whose other runs go on (its stopped run was only asked to stop) keeps its room.
    return {att.job_id for att in ended if att not in asked}


def settle_stops(session: Session, report: PollReport) -> None:
    """Stops sent by a poll that did not live to record them: an attempt that ended as our stop ends a run since
    (the scheduler's CANCELLED for our cancel, or its exit marker's TERM) was stopped, and is recorded so; one
    still running, or that ended its own way (completed, timed out, out of memory...; the poll may have died before
    its scancel), never got the stop and keeps its own end or is judged again. Runs before resume_ended, so
    a stopped run is never taken for one to resume."""
    if session.spec.early_stop is None:
        return
    store = session.store
    sent = store.query("SELECT e.config, e.stopping_attempt, e.stopping_reason, a.state, c.attempt, a.reason "
                       "FROM early_stops e "
                       "JOIN attempts a ON a.config = e.config AND a.attempt = e.stopping_attempt "
                       "JOIN configs c ON c.name = e.config WHERE e.stopping_attempt IS NOT NULL")
    settled = [row for row in sent if row[3] not in ACTIVE]
    if not settled:
        return
    with store.transaction():
        for config, attempt, reason, state, current, why in settled:
            if state == ConfigState.CANCELLED or (state == ConfigState.FAILED and _TERM in (why or "")):
                store.update_attempt(config, attempt, state=ConfigState.STOPPED, reason=reason)
                if current == attempt:
                    store.set_config_state(config, ConfigState.STOPPED, reason)
                store.add_event("early_stop", reason, config)
                report.changes.append((config, state, ConfigState.STOPPED, reason))
        store.set_early_stops(("stopping_attempt", "stopping_reason"), [(None, None, row[0]) for row in settled])


def _curves(session: Session, configs: dict, kept: dict, column: str) -> tuple:
    """The rule's curves (one per config with any epoch) and each config's last epoch."""
    points: dict = {}
    for config, _attempt, epoch, value in session.store.query(
            f"SELECT config, attempt, epoch, {column} FROM epochs ORDER BY config, attempt, epoch"):
        points.setdefault(config, {})[epoch] = value   # a later attempt's epoch replaces an earlier one's
    running = _running_with_job(session)
    curves, lasts = [], {}
    for name, (state, _) in configs.items():
        curve = points.get(name)
        if not curve:
            continue
        lasts[name] = max(curve)
        if state == ConfigState.STOPPED:
            kind = STOPPED
        elif state == ConfigState.RUNNING and name in running:
            kind = RUNNING
        else:
            kind = FINISHED
        exempt = bool(kept[name].exempt) if name in kept else False
        curves.append(Curve(name, kind, tuple(sorted(curve.items())), keep=exempt))
    return curves, lasts


def _running_with_job(session: Session) -> set:
    """Configs whose current attempt is running with a job id (what can be stopped)."""
    return {row[0] for row in session.store.query(
        "SELECT c.name FROM configs c JOIN attempts a ON a.config = c.name AND a.attempt = c.attempt "
        f"WHERE a.state = '{ConfigState.RUNNING}' AND a.job_id IS NOT NULL")}


def _max_epochs(session: Session) -> dict:
    """Config -> its planned last epoch, as its log or config said (progress.max_epoch)."""
    return {row[0]: row[1] for row in session.store.query(
        "SELECT config, max_epoch FROM progress WHERE max_epoch IS NOT NULL")}
