"""Submission: group configs by resource shape, chunk to the array limits, fit under the user's queue cap,
and submit each chunk as one array — never twice.

The protocol that makes a crash or a controller time-out harmless (the records and their rules are in
:mod:`hpc_sweep.submit.intents`): a submission is recorded as an *intent* (its unique job name, map and script) and
committed BEFORE the submit command runs; only then is the command run and its id recorded. A command whose
outcome is unknown leaves the submission *unknown*: its configs are held until a lookup by name answers, and it is
sent again (under a new name) only after a lookup answered "not there".
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from hpc_sweep.common import faults, shell
from hpc_sweep.submit import intents
from hpc_sweep.common.atomicio import write_atomic
from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.programs import task_environment
from hpc_sweep.common.jobmap import MapEntry, map_text
from hpc_sweep.submit.scripts import render_script, script_context
from hpc_sweep.schedulers.base import (
    FINAL_STATES,
    CommandResult,
    QueueLimits,
    SchedulerError,
    SubmitSpec,
    TaskRecord,
)

SUBMITTABLE = ("generated", "waiting")
LIMITS_CACHE_S = 3600
TRANSIENT_RETRIES = 3
LIVE_TIMEOUT_S = 120
LIMITS_TIMEOUT_S = 60


@dataclass
class Planned:
    """A submission a dry run would make: its name, array, configs and the texts it would write."""

    name: str
    array: Optional[str]
    configs: list
    script_text: str
    map_text: str


@dataclass
class SubmitReport:
    submitted: list = field(default_factory=list)    # (job name, scheduler id, number of tasks)
    waiting: int = 0
    reason: Optional[str] = None
    reconciled: intents.Reconciled = field(default_factory=intents.Reconciled)
    planned: list = field(default_factory=list)      # dry run: Planned
    starts: dict = field(default_factory=dict)       # config -> how its new attempt starts ("resumed ...", "fresh")
    errors: list = field(default_factory=list)


@dataclass
class Chunk:
    shape: str
    walltime_s: int
    configs: list  # config rows


def live_records(session) -> list[TaskRecord]:
    """ONE live-queue query for all of the user's jobs. Raises SchedulerError (transient) when unreachable."""
    return session.scheduler.parse_live(shell.run(_live_argv(session), cwd=str(session.paths.root)))


def _live_argv(session) -> list[str]:
    ids = [s["scheduler_id"] for s in session.store.submissions() if s["scheduler_id"]]
    return session.scheduler.live_argv(getpass.getuser(), ids)


# -- limits and room -----------------------------------------------------------------------------------------
def _cached_limits(session) -> Optional[dict]:
    cached = session.store.get_meta("limits")
    data = json.loads(cached) if cached else None
    return data if data and time.time() - data.get("at", 0) <= LIMITS_CACHE_S else None


def _limits_argvs(session) -> list:
    return session.scheduler.limits_argvs(getpass.getuser(), session.profile.partition or session.profile.queue)


def queue_limits(session, results: Optional[Sequence[CommandResult]] = None) -> QueueLimits:
    """The scheduler's limits (cached an hour in the state), the profile's values filling the gaps. ``results``:
    the answers of the limit queries (in :meth:`limits_argvs` order) when they were already run, at once with the
    live query; a query that failed leaves its limits to the profile, as always."""
    store, profile, adapter = session.store, session.profile, session.scheduler
    data = _cached_limits(session)
    if data is None or results is not None:
        if results is None:
            argvs = _limits_argvs(session)
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


# -- planning ------------------------------------------------------------------------------------------------
def candidates(session, only: Optional[Sequence[str]] = None) -> list[dict]:
    """Configs that may be submitted: generated or waiting, in the definition, not held by an open submission."""
    held = intents.held_configs(session)
    rows = [r for r in session.store.configs(states=SUBMITTABLE) if r["in_definition"] and r["name"] not in held]
    if only:
        wanted = set(only)
        session.store.require_names(wanted)
        rows = [r for r in rows if r["name"] in wanted]
    return rows


def plan_chunks(session, rows: list[dict], limits: QueueLimits, room: Optional[int]) -> list[Chunk]:
    walltime_default = session.spec.walltime_s or session.profile.walltime_s
    groups: dict = {}
    for row in rows:
        key = (row["shape"], row["walltime_s"] or walltime_default)
        groups.setdefault(key, []).append(row)
    max_size = limits.max_array_size or 1001
    if limits.max_job_count:
        max_size = min(max_size, limits.max_job_count)
    chunks = []
    left = room
    for (shape, walltime), members in groups.items():
        start = 0
        while start < len(members) and (left is None or left > 0):
            size = min(max_size, len(members) - start, left if left is not None else len(members))
            chunks.append(Chunk(shape, walltime, members[start:start + size]))
            start += size
            if left is not None:
                left -= size
    return chunks


# -- one chunk -----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _allocation_view(device: str) -> str:
    """The allocation view of a device string, worked out once per distinct string (a sweep has a few)."""
    from hpc_sweep.sweep.device import allocation_view, parse_device

    return allocation_view(parse_device(device))


def _run_config(session, row: dict, attempt: int, write: bool = True) -> tuple:
    """The config file this attempt runs, the device string it carries (allocation view on a cluster), for a
    resubmission how it starts ("resumed from its checkpoint" or a fresh restart and why), and the config itself
    when it is a copy of its own (None: the generated file as it is). ``write=False``: work it out, write nothing
    (a dry run)."""
    from hpc_sweep.common.dotted import set_dotted
    from hpc_sweep.common.formats import dump_structured, format_of, load_structured

    program = session.program
    path = Path(row["path"])
    local = session.profile.scheduler == "local"
    device = row["device"] if local else _allocation_view(row["device"])
    key = program.device_key()
    needs_device = key is not None and not local and device != row["device"]
    mode = row["next_mode"]
    if not needs_device and mode is None and attempt == 1:
        return str(path), device, None, None
    config = load_structured(path)
    if needs_device:
        set_dotted(config, key, device)
    start = None
    if mode == "resume":
        resumed = program.resume_config(config, session.paths.config_outputs(row["name"])) if write else None
        if resumed is not None:
            config, start = resumed, "resumed from its checkpoint"
        else:
            start = "restarted fresh: no checkpoint found" if write else "resumed from its checkpoint if it has one"
    if mode in ("fresh", None) and attempt > 1:
        if hasattr(program, "fresh_config"):
            config = program.fresh_config(config)
        start = start or "restarted fresh"
    suffix = "yaml" if format_of(path) == "yaml" else "toml"
    target = session.paths.script / "run" / f"{row['name']}.a{attempt}.{suffix}"
    if write:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, dump_structured(config, format_of(path), like=path), fsync=False)
    return str(target), device, start, config


def _job_name(session, chunk: Chunk, offset: int = 0, persist: bool = True) -> str:
    store = session.store
    seq = int(store.get_meta("submission_seq", "0")) + 1 + offset
    if persist:
        store.set_meta("submission_seq", str(seq))
    tag = chunk.shape.replace(":", "").replace("*", "")
    return f"{session.prefix}-{tag}-{seq}"


def _make_folder(path: str) -> None:
    """os.makedirs(path, exist_ok=True) in one system call where the parent exists (the usual case)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)


@dataclass
class ChunkFiles:
    entries: list
    script_file: Path
    map_file: Path
    script_text: str
    map_text: str
    starts: dict  # config -> how its attempt starts (resubmissions only)


def chunk_files(session, chunk: Chunk, name: str, array: Optional[str], write: bool) -> ChunkFiles:
    """The run configs, the index map and the job script of one submission; ``write=False`` (a dry run) only
    works out their texts: nothing is written into the sweep."""
    paths = session.paths
    outputs_root = str(paths.outputs)
    entries, starts = [], {}
    for index, row in enumerate(chunk.configs):
        outputs = os.path.join(outputs_root, row["name"])  # paths.config_outputs, without a Path per config
        if write:
            _make_folder(outputs)  # the trainer writes there from its start
        attempt = row["attempt"] + 1
        config_file, device, start, run_config = _run_config(session, row, attempt, write=write)
        if start:
            starts[row["name"]] = start
        env = task_environment(session.program, row["next_mode"], run_config, outputs)
        entries.append(MapEntry(index, row["name"], attempt, config_file, outputs, device, row["gpus"], env))
    map_file = paths.script / f"{name}.map"
    script_file = paths.script / f"{name}.sh"
    context = script_context(session, name, array, len(entries), chunk.configs[0]["gpus"],
                             chunk.shape.split(":")[0], chunk.walltime_s, map_file)
    # Both texts first: a template or map error leaves no file behind.
    files = ChunkFiles(entries, script_file, map_file, render_script(session, context), map_text(entries), starts)
    if write:
        write_atomic(map_file, files.map_text)
        write_atomic(script_file, files.script_text, mode=0o755)
    return files


def submit_chunk(session, chunk: Chunk, limits: QueueLimits, report: SubmitReport, dry_run: bool) -> bool:
    """Intent → submit → record. Returns False when submitting should stop (a limit, or the scheduler's silence)."""
    throttle = session.spec.throttle or session.profile.array_throttle
    if throttle and not limits.throttle_supported:
        throttle = None
    n = len(chunk.configs)
    array = session.scheduler.array_spec(list(range(n)), throttle) if session.scheduler.uses_array(n) else None
    if dry_run:
        name = _job_name(session, chunk, offset=len(report.planned), persist=False)
        files = chunk_files(session, chunk, name, array, write=False)
        report.planned.append(Planned(name, array, [e.name for e in files.entries], files.script_text,
                                      files.map_text))
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
    report.errors.append(f"{sub['name']}: the scheduler answered that {SEND_TRIES} submissions never arrived; "
                         "the configs wait for the next submit or poll")
    return False


SEND_TRIES = 3
GO_ON, STOP, RESEND = "go on", "stop", "resend"


def _record_intent(session, chunk: Chunk, array: Optional[str], report: SubmitReport) -> dict:
    """Write the chunk's files and commit the intent (a fresh job name each time) before anything is sent."""
    store = session.store
    with store.transaction():
        name = _job_name(session, chunk)
        files = chunk_files(session, chunk, name, array, write=True)
        store.conn.execute(
            "INSERT INTO submissions (name, shape, script, map, status, ntasks, created_at) "
            "VALUES (?, ?, ?, ?, 'intent', ?, ?)",
            (name, chunk.shape, str(files.script_file), str(files.map_file), len(files.entries), time.time()))
        store.conn.executemany(
            "INSERT OR REPLACE INTO attempts (config, attempt, submission, task_index, state, run_config, "
            "resumed_from) VALUES (?, ?, ?, ?, 'submitting', ?, ?)",
            [(entry.name, entry.attempt, name, entry.index, entry.config_file, chunk.configs[entry.index]["next_mode"])
             for entry in files.entries])
        for config, start in files.starts.items():
            store.add_event("run_config", f"attempt {chunk.configs[0]['attempt'] + 1}: {start}", config)
    report.starts.update(files.starts)
    return store.rows("SELECT * FROM submissions WHERE name = ?", (name,))[0]


def _send(session, sub: dict, report: SubmitReport) -> str:
    """Run the submit command once and settle what it did. An unknown outcome is looked up by name at once:
    found → recorded; not there → RESEND (a new name); no answer → the configs stay held (STOP)."""
    adapter = session.scheduler
    spec = SubmitSpec(script=sub["script"], job_name=sub["name"], workdir=str(session.paths.root),
                      indices=tuple(range(sub["ntasks"])))
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
                intents.release(session, sub, "abandoned", "its submission never reached the scheduler; sent again",
                                note=f"{exc.message}; then {found.detail}")
            return RESEND
        if found.verdict == intents.UNKNOWN:
            report.reconciled.still_open.append((sub["name"], f"{_short(exc.message)}; lookup: {found.detail}"))
            return STOP
        scheduler_id = found.scheduler_id
    with session.store.transaction():
        intents.record_submitted(session, sub, scheduler_id)
    report.submitted.append((sub["name"], scheduler_id, sub["ntasks"]))
    return GO_ON


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


def live_records_or_none(session) -> Optional[list]:
    """The live queue's answer, or None when the scheduler did not answer."""
    try:
        return live_records(session)
    except SchedulerError:
        return None


def _refused(session, sub: dict, exc: SchedulerError, report: SubmitReport) -> None:
    """The scheduler answered that it queued nothing: the configs wait (limit) or carry the refusal (rejected)."""
    reason = ("queue limit reached: " if exc.kind == "limit" else "submission refused: ") + exc.message
    with session.store.transaction():
        intents.release(session, sub, "refused", reason, note=exc.message)
        session.store.add_event("refused", f"{sub['name']}: {exc.message}")
    if exc.kind != "limit":
        report.errors.append(f"{sub['name']}: {exc.message}")
    report.reason = reason


# -- the command ----------------------------------------------------------------------------------------------
def submit(session, only: Optional[Sequence[str]] = None, dry_run: bool = False, records: Optional[list] = None,
           reconciled: Optional[intents.Reconciled] = None) -> SubmitReport:
    """Submit what fits. The caller holds the sweep lock. ``records`` lets poll pass its live answer, and
    ``reconciled`` what it already settled with it (the open submissions are not looked up twice)."""
    report = _submit(session, only, dry_run, records, reconciled)
    settled = report.reconciled
    if not dry_run and (report.submitted or settled.found or settled.abandoned or settled.adopted or
                        settled.still_open):
        # The copy a corrupt database is restored from must know every submission, or one would be made twice.
        session.store.backup()
    return report


def _submittable_names(session, only: Optional[Sequence[str]]) -> list[str]:
    """The configs :func:`candidates` may return, in its order, without loading the rows; reconciling intents can
    only take some away. Configs of an open intent are left out (their job may be queued already)."""
    marks = ", ".join("?" * len(SUBMITTABLE))
    names = [row[0] for row in session.store.conn.execute(
        f"SELECT name FROM configs WHERE in_definition AND state IN ({marks}) AND name NOT IN "
        "(SELECT config FROM attempts WHERE state = 'submitting') ORDER BY idx", SUBMITTABLE)]
    if only:
        wanted = set(only)
        names = [name for name in names if name in wanted]
    return names


def _may_submit(session, only: Optional[Sequence[str]]) -> bool:
    """Whether :func:`candidates` could find anything (open intents included: reconciling may abandon them)."""
    marks = ", ".join("?" * len(SUBMITTABLE))
    names = {row[0] for row in session.store.conn.execute(
        f"SELECT name FROM configs WHERE in_definition AND state IN ({marks})", SUBMITTABLE)}
    return bool(names & set(only)) if only else bool(names)


@dataclass
class _Premade:
    """Output folders made while the scheduler answered, before it was known which configs go now."""

    root: Optional[str] = None                        # the outputs folder itself, when it was made here
    folders: dict = field(default_factory=dict)       # config name -> its output folder, made here

    def remove_unused(self, used: set) -> None:
        """Remove (if still empty) the folders of configs that were not submitted, so the sweep ends exactly as
        if each folder had been made at its config's submission."""
        for name, path in self.folders.items():
            if name not in used:
                _remove_empty(path)
        if self.root is not None:
            _remove_empty(self.root)


def _remove_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # not empty, or gone: nothing of ours to undo


def _query_scheduler(session, records: Optional[list], limit_argvs: list, names: Sequence[str]) -> tuple:
    """The live query (unless the caller brought its answer) and the limit queries are independent: they run at
    once, so the wall time is the slowest one's, not the sum. A live query that failed stops the submit as it
    always did (the limit answers are then dropped, not cached); a limit query that failed leaves its limits to
    the profile. Returns the records, the limit results (None when none were asked) and the folders premade."""
    live = [_live_argv(session)] if records is None else []
    timeouts = [LIVE_TIMEOUT_S] * len(live) + [LIMITS_TIMEOUT_S] * len(limit_argvs)
    premade = _Premade()
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


def _prepare_while_waiting(session, running, names: Sequence[str], premade: _Premade) -> None:
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


def _submit(session, only: Optional[Sequence[str]], dry_run: bool, records: Optional[list],
            reconciled: Optional[intents.Reconciled]) -> SubmitReport:
    report = SubmitReport()
    session.scheduler  # the site profile is read (and checked) before anything is written
    session.ensure_prefix()  # a hand-made sweep records its job-name prefix now, outside the transactions below
    # Stale limits are asked for only where anything may be submitted (reconciling can only take candidates away).
    names, limit_argvs = [], []
    if _cached_limits(session) is None:
        names = _submittable_names(session, only)
        if names or _may_submit(session, only):
            limit_argvs = _limits_argvs(session)
    limit_results, premade = None, _Premade()
    if records is None or limit_argvs:
        records, limit_results, premade = _query_scheduler(session, records, limit_argvs, [] if dry_run else names)
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
        placed = 0
        for chunk in chunks:
            folders_used.update(row["name"] for row in chunk.configs)  # chunk_files makes them
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
    with session.store.transaction():
        for row in left:
            if row["state"] == "generated" or (reason and row["reason"] != reason):
                session.store.set_config_state(row["name"], "waiting", reason or "not submitted yet")
    report.waiting = len(left)
    return report
