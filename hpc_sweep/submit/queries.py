"""What submit asks the scheduler: the ONE live-queue query for all of the user's jobs, the queue limits (cached an
hour in the state, the site profile filling the gaps) and the room under the user's cap. The live query and the
limit queries run at once (:func:`query_scheduler`), and the output folders of the configs likely submitted are made
while they run.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from typing import TYPE_CHECKING, Optional, Sequence

from hpc_sweep.common import shell
from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.schedulers.base import FINAL_STATES, CommandResult, QueueLimits, SchedulerError, TaskRecord
from hpc_sweep.submit.chunks import Premade

if TYPE_CHECKING:
    from hpc_sweep.session import Session


LIMITS_CACHE_S = 3600


LIVE_TIMEOUT_S = 120


LIMITS_TIMEOUT_S = 60


def live_records(session: Session) -> list[TaskRecord]:
    """ONE live-queue query for all of the user's jobs. Raises SchedulerError (transient) when unreachable."""
    return session.scheduler.parse_live(shell.run(_live_argv(session), cwd=str(session.paths.root)))


def _live_argv(session: Session) -> list[str]:
    ids = [s.scheduler_id for s in session.store.submissions() if s.scheduler_id]
    return session.scheduler.live_argv(getpass.getuser(), ids)


def live_records_or_none(session: Session) -> Optional[list]:
    """The live queue's answer, or None when the scheduler did not answer."""
    try:
        return live_records(session)
    except SchedulerError:
        return None


def cached_limits(session: Session) -> Optional[dict]:
    cached = session.store.get_meta("limits")
    data = json.loads(cached) if cached else None
    return data if data and time.time() - data.get("at", 0) <= LIMITS_CACHE_S else None


def limits_argvs(session: Session) -> list:
    return session.scheduler.limits_argvs(getpass.getuser(), session.profile.partition or session.profile.queue)


def queue_limits(session: Session, results: Optional[Sequence[CommandResult]] = None) -> QueueLimits:
    """The scheduler's limits (cached an hour in the state), the profile's values filling the gaps. ``results``:
    the answers of the limit queries (in :meth:`limits_argvs` order) when they were already run, at once with the
    live query; a query that failed leaves its limits to the profile, as always."""
    store, profile, adapter = session.store, session.profile, session.scheduler
    data = cached_limits(session)
    if data is None or results is not None:
        if results is None:
            argvs = limits_argvs(session)
            results = shell.run_many(argvs, timeout=LIMITS_TIMEOUT_S) if argvs else []
        found = adapter.parse_limits(results) if results else QueueLimits()
        data = {"at": time.time(), "max_queued": found.max_queued, "max_array_size": found.max_array_size,
                "max_job_count": found.max_job_count, "throttle_supported": found.throttle_supported}
        with store.transaction():
            store.set_meta("limits", json.dumps(data))
    throttle_ok = data["throttle_supported"] if profile.throttle_supported is None else profile.throttle_supported
    # The scheduler's own cap wins (the profile's is the fallback where it cannot be read); the profile's array
    # size overrides, for sites whose submit filters are stricter than MaxArraySize.
    return QueueLimits(
        max_queued=data["max_queued"] if data["max_queued"] is not None else profile.max_queued,
        max_array_size=profile.max_array_size if profile.max_array_size is not None else data["max_array_size"],
        max_job_count=data["max_job_count"], throttle_supported=throttle_ok)


def room_in_queue(limits: QueueLimits, records: Sequence[TaskRecord]) -> Optional[int]:
    """Cap minus ALL of the user's queued and running tasks (hand-submitted ones count too). None = no cap."""
    if limits.max_queued is None:
        return None
    active = sum(1 for r in records if r.state not in FINAL_STATES)
    return max(0, limits.max_queued - active)


def query_scheduler(session: Session, records: Optional[list], limit_argvs: list, names: Sequence[str]) -> tuple:
    """The live query (unless the caller brought its answer) and the limit queries are independent: they run at
    once, so the wall time is the slowest one's, not the sum. A live query that failed stops the submit as it
    always did (the limit answers are then dropped, not cached); a limit query that failed leaves its limits to
    the profile. Returns the records, the limit results (None when none were asked) and the folders premade."""
    live = [_live_argv(session)] if records is None else []
    timeouts = [LIVE_TIMEOUT_S] * len(live) + [LIMITS_TIMEOUT_S] * len(limit_argvs)
    premade = Premade()
    try:
        with shell.start_many(live + limit_argvs, timeouts, cwd=str(session.paths.root)) as running:
            if limit_argvs:  # the slow ones (sacctmgr: a fifth of a second): work meanwhile
                _prepare_while_waiting(session, running, names, premade)
            results = running.results()
        if live:
            try:
                records = session.scheduler.parse_live(results[0])
            except SchedulerError as exc:
                raise RuntimeFailure(f"the scheduler could not be reached ({exc.message}); nothing was submitted") \
                    from None
    except BaseException:
        premade.remove_unused(set())
        raise
    return records, (results[len(live):] if limit_argvs else None), premade


def _prepare_while_waiting(session: Session, running, names: Sequence[str], premade: Premade) -> None:
    """Work that does not depend on the answers, done until they are all in: the output folders of the configs
    likely submitted are made (in submission order; the slowest part of a large submit on a busy file system),
    then the job template is compiled. Folders of configs not submitted in the end are removed again. The
    answers are collected between folders, so each call's logged seconds stay its own."""
    from hpc_sweep.submit.scripts import load_template

    root = str(session.paths.outputs)
    for i, name in enumerate(names):
        if i % 4 == 0 and running.poll():
            return
        if i == 0 and not os.path.isdir(root):
            try:
                os.makedirs(root)
            except OSError:
                break
            premade.root = root
        path = os.path.join(root, name)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError:
            break  # left to chunk_files, which reports it as before
        premade.folders[name] = path
    if not running.poll():
        load_template(session.profile)
