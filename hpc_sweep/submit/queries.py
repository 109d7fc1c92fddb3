"""What submit asks the scheduler: the ONE live-queue query for all of the user's jobs, the queue limits and the
cluster's shape (partitions, their nodes, the user's accounts and QOS; cached an hour in the state together with
the scheduler's version, the site profile filling the gaps) and the room under the user's cap. The live query and
the limit and shape queries run at once (:func:`query_scheduler`), and the output folders of the configs likely
submitted are made while they run.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import time
from typing import TYPE_CHECKING, Optional, Sequence

from hpc_sweep.common import shell
from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.schedulers.base import FINAL_STATES, CommandResult, QueueLimits, SchedulerError, TaskRecord
from hpc_sweep.schedulers.cluster import ClusterShape, parse_shape, shape_argvs, shape_from_data, shape_to_data
from hpc_sweep.submit.chunks import Premade

if TYPE_CHECKING:
    from hpc_sweep.session import Session


LIMITS_CACHE_S = 3600  # the limits, the cluster's shape and the scheduler's version


LIVE_TIMEOUT_S = 120


LIMITS_TIMEOUT_S = 60


def live_records(session: Session) -> list[TaskRecord]:
    """ONE live-queue query for all of the user's jobs. Raises SchedulerError (transient) when unreachable."""
    result = shell.run(_live_argv(session), cwd=str(session.paths.root))
    try:
        return session.scheduler.parse_live(result)
    except SchedulerError as exc:
        if not _older_squeue(session, exc):
            raise
    return session.scheduler.parse_live(shell.run(_live_argv(session), cwd=str(session.paths.root)))


def _older_squeue(session: Session, exc: SchedulerError) -> bool:
    """A Slurm before 20.11 refused ``squeue --me`` (its version not known yet): ask with ``-u USER`` from now on,
    and remember it, so the query is not taken for an unreachable controller poll after poll."""
    adapter = session.scheduler
    if exc.kind != "rejected" or not getattr(adapter, "supports_me", False):
        return False
    adapter.me_refused = True
    if session.store.writable:
        with session.store.transaction():
            session.store.set_meta("squeue_me", "refused")
    return True


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
    """The limits cached less than an hour ago, or None -- None too when the cluster's shape, read and cached with
    them, is missing or as old: the caller then asks for both (:func:`limits_argvs`)."""
    cached = session.store.get_meta("limits")
    data = json.loads(cached) if cached else None
    if not data or time.time() - data.get("at", 0) > LIMITS_CACHE_S or data.get("site") != _site_key(session):
        return None
    if _shape_argvs(session) and cached_shape(session) is None:
        return None
    return data


def cached_shape(session: Session, max_age_s: Optional[float] = LIMITS_CACHE_S) -> Optional[ClusterShape]:
    """The cluster's shape as the last query read it (``max_age_s`` None: however old), or None."""
    cached = session.store.get_meta("cluster")
    data = json.loads(cached) if cached else None
    if not data or data.get("site") != _site_key(session) or \
            (max_age_s is not None and time.time() - data.get("at", 0) > max_age_s):
        return None
    return _shape(cached)


@functools.lru_cache(maxsize=4)
def _shape(text: str) -> ClusterShape:
    """The shape of a cached text, read once per process (a submit renders a script per chunk)."""
    return shape_from_data(json.loads(text)["shape"])


def _site_key(session: Session) -> str:
    """What the cached answers were asked for: another profile, partition or account asks again."""
    profile = session.profile
    return "|".join(str(part or "") for part in (profile.name, profile.scheduler, profile.partition or profile.queue,
                                                  profile.account, profile.qos))


def _shape_argvs(session: Session) -> list:
    return _profile_shape_argvs(session.profile, getpass.getuser())


def _profile_shape_argvs(profile, user: str) -> list:
    # The QOS each association may use only sacctmgr lists (0.3 s through slurmdbd): asked where a QOS is.
    return shape_argvs(profile.scheduler, user, associations=bool(profile.qos))


def limits_argvs(session: Session) -> list:
    """The limit queries, then the shape queries they do not already make (see :func:`fact_argvs`)."""
    return fact_argvs(session.scheduler, session.profile, getpass.getuser())[0]


def fact_argvs(adapter, profile, user: str) -> tuple[list, int]:
    """(argvs, how many of them are the limit queries): the limit queries, then the shape queries they do not
    already make (Slurm's ``scontrol show config`` is both; its ``sacctmgr show qos`` is asked once, with the
    columns both read)."""
    limits = adapter.limits_argvs(user, profile.partition or profile.queue)
    shape = _profile_shape_argvs(profile, user)
    merged = [next((s for s in shape if argv[0] == "sacctmgr" and s[:5] == argv[:5]), argv) for argv in limits]
    return merged + [argv for argv in shape if argv not in merged], len(limits)


def read_facts(adapter, profile, user: str, results: Sequence[CommandResult]
               ) -> tuple[QueueLimits, Optional[ClusterShape]]:
    """The limits and the shape (None where the scheduler has none: local) from the answers of
    :func:`fact_argvs`, in its order."""
    count = fact_argvs(adapter, profile, user)[1]
    found = adapter.parse_limits(results[:count]) if results[:count] else QueueLimits()
    asked = _profile_shape_argvs(profile, user)
    # The limits' assoc_mgr answer is read too: the user's associations where sacctmgr was not asked for them.
    shape = parse_shape(profile.scheduler, [r for r in results if list(r.argv) in asked
                                            or list(r.argv[:3]) == ["scontrol", "show", "assoc_mgr"]]) if asked else None
    return found, shape


def queue_limits(session: Session, results: Optional[Sequence[CommandResult]] = None) -> QueueLimits:
    """The scheduler's limits (cached an hour in the state), the profile's values filling the gaps. ``results``:
    the answers of :func:`limits_argvs` (in its order) when they were already run, at once with the live query;
    a query that failed leaves its limits to the profile, as always. The shape and version they also hold are
    cached with the limits."""
    profile = session.profile
    data = cached_limits(session)
    if data is None or results is not None:
        if results is None:
            argvs = limits_argvs(session)
            results = shell.run_many(argvs, timeout=LIMITS_TIMEOUT_S) if argvs else []
        data = record_facts(session, results)
    throttle_ok = data["throttle_supported"] if profile.throttle_supported is None else profile.throttle_supported
    # The scheduler's own cap wins (the profile's is the fallback where it cannot be read); the profile's array
    # size overrides, for sites whose submit filters are stricter than MaxArraySize.
    return QueueLimits(
        max_queued=data["max_queued"] if data["max_queued"] is not None else profile.max_queued,
        max_array_size=profile.max_array_size if profile.max_array_size is not None else data["max_array_size"],
        max_job_count=data["max_job_count"], throttle_supported=throttle_ok)


def record_facts(session: Session, results: Sequence[CommandResult]) -> dict:
    """Read the answers of :func:`limits_argvs` and cache them: the limits, the shape and the scheduler's version.
    Returns the limits as cached."""
    store, adapter = session.store, session.scheduler
    found, shape = read_facts(adapter, session.profile, getpass.getuser(), results)
    now = time.time()
    data = {"at": now, "max_queued": found.max_queued, "max_array_size": found.max_array_size,
            "max_job_count": found.max_job_count, "throttle_supported": found.throttle_supported,
            "site": _site_key(session)}
    with store.transaction():
        store.set_meta("limits", json.dumps(data))
        if shape is not None:
            store.set_meta("cluster", json.dumps({"at": now, "site": _site_key(session),
                                                  "shape": shape_to_data(shape)}))
            if shape.version:
                store.set_meta("scheduler_version", ".".join(map(str, shape.version)))
    if shape is not None and shape.version:
        adapter.version = shape.version
    return data


def shape_now(session: Session) -> ClusterShape:
    """The shape, asked now (and cached with the limits): for a check that must not trust an older answer."""
    queue_limits(session, shell.run_many(limits_argvs(session), timeout=LIMITS_TIMEOUT_S))
    return cached_shape(session, None) or ClusterShape(scheduler=session.profile.scheduler)


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
                records = _live_again(session, exc)
    except BaseException:
        premade.remove_unused(set())
        raise
    return records, (results[len(live):] if limit_argvs else None), premade


def _live_again(session: Session, exc: SchedulerError) -> list:
    """The live query asked again with ``-u USER`` where an older Slurm refused ``--me``; otherwise (or when that
    fails too) submit stops, nothing submitted."""
    try:
        if _older_squeue(session, exc):
            return live_records(session)
    except SchedulerError as again:
        exc = again
    raise RuntimeFailure(f"the scheduler could not be reached ({exc.message}); nothing was submitted") from None


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
