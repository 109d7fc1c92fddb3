"""Submission: group configs by resource shape, chunk to the array limits, fit under the user's queue cap,
and submit each chunk as one array — never twice.

The protocol that makes a crash harmless: a submission is recorded as an *intent* (its unique job name, map
and script) and committed BEFORE the submit command runs; only then is the command run and its id recorded.
An intent left behind by a crash or a controller time-out is reconciled by job name against the live queue
(and the job-written markers) before anything new is submitted.
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

from hpc_sweep import faults, shell
from hpc_sweep.atomicio import write_atomic
from hpc_sweep.errors import RuntimeFailure
from hpc_sweep.programs import task_environment
from hpc_sweep.render import MapEntry, map_text, render_script, script_context
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
class SubmitReport:
    submitted: list = field(default_factory=list)    # (job name, scheduler id, number of tasks)
    waiting: int = 0
    reason: Optional[str] = None
    reconciled: list = field(default_factory=list)   # intents found again
    abandoned: list = field(default_factory=list)    # intents that never reached the scheduler
    planned: list = field(default_factory=list)      # dry run: (job name, array, configs)
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


# -- reconciliation -----------------------------------------------------------------------------------------
def reconcile_intents(session, records: Sequence[TaskRecord], report: SubmitReport) -> None:
    """Intents whose job is in the queue (by name) or left a marker are recorded; the rest are dropped."""
    store = session.store
    by_name: dict = {}
    for rec in records:
        if rec.name:
            by_name.setdefault(rec.name, rec.submission_id)
    for sub in store.submissions("intent"):
        found = by_name.get(sub["name"]) or _lookup_by_name(session, sub["name"]) or \
            _submission_from_markers(session, sub)
        with store.transaction():
            if found:
                _record_submitted(session, sub, found)
                report.reconciled.append((sub["name"], found))
            else:
                store.conn.execute("DELETE FROM attempts WHERE submission = ? AND state = 'submitting'", (sub["name"],))
                store.conn.execute("UPDATE submissions SET status = 'abandoned' WHERE name = ?", (sub["name"],))
                report.abandoned.append(sub["name"])


def _lookup_by_name(session, job_name: str) -> Optional[str]:
    """Schedulers whose live query names only recorded ids (PBS) are asked by name. A failed lookup raises:
    an intent is never dropped on a guess."""
    adapter = session.scheduler
    argv = adapter.lookup_argv(getpass.getuser(), job_name)
    if argv is None:
        return None
    found = adapter.parse_lookup(shell.run(argv, timeout=60))
    return found[0] if found else None


def _submission_from_markers(session, sub: dict) -> Optional[str]:
    """A job that already ran and left the queue still wrote start markers: take its id from them."""
    for att in session.store.conn.execute("SELECT config, attempt FROM attempts WHERE submission = ?",
                                          (sub["name"],)):
        marker = session.paths.markers / f"{att['config']}.{att['attempt']}.start"
        if marker.exists():
            try:
                data = json.loads(marker.read_text())
            except (ValueError, OSError):
                continue
            if data.get("submission_id"):
                return data["submission_id"]
            if data.get("job_id"):
                return session.scheduler.submission_of(data["job_id"])
    return None


def _record_submitted(session, sub: dict, scheduler_id: str) -> None:
    store, adapter = session.store, session.scheduler
    now = time.time()
    is_array = sub["ntasks"] > 1 or session.profile.scheduler != "pbspro"
    store.conn.execute("UPDATE submissions SET status = 'submitted', scheduler_id = ?, submitted_at = ? "
                       "WHERE name = ?", (scheduler_id, now, sub["name"]))
    rows = store.conn.execute("SELECT config, attempt, task_index FROM attempts WHERE submission = ?",
                              (sub["name"],)).fetchall()
    store.conn.executemany("UPDATE attempts SET state = 'pending', job_id = ?, submitted_at = ? "
                           "WHERE config = ? AND attempt = ?",
                           [(adapter.task_id(scheduler_id, row["task_index"], is_array), now, row["config"],
                             row["attempt"]) for row in rows])
    store.conn.executemany("UPDATE configs SET state = 'pending', attempt = ?, reason = NULL, next_mode = NULL, "
                           "updated_at = ? WHERE name = ?", [(row["attempt"], now, row["config"]) for row in rows])
    faults.point("during_state_write")  # inside the caller's transaction: a kill here must roll all of it back


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
    rows = [r for r in session.store.configs(states=SUBMITTABLE) if r["in_definition"]]
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
    from hpc_sweep.device import allocation_view, parse_device

    return allocation_view(parse_device(device))


def _run_config(session, row: dict, attempt: int, record: bool = True) -> tuple[str, str]:
    """The config file this attempt runs and the device string it carries (allocation view on a cluster)."""
    from hpc_sweep.dotted import set_dotted
    from hpc_sweep.formats import dump_structured, format_of, load_structured

    program = session.program
    path = Path(row["path"])
    local = session.profile.scheduler == "local"
    device = row["device"] if local else _allocation_view(row["device"])
    key = program.device_key()
    needs_device = key is not None and not local and device != row["device"]
    mode = row["next_mode"]
    if not needs_device and mode is None and attempt == 1:
        return str(path), device
    config = load_structured(path)
    if needs_device:
        set_dotted(config, key, device)
    notes = ""
    if mode == "resume":
        resumed = program.resume_config(config, session.paths.config_outputs(row["name"]))
        if resumed is not None:
            config, notes = resumed, "resume"
        else:
            notes = "no checkpoint: fresh restart"
    if mode in ("fresh", None) and attempt > 1 and hasattr(program, "fresh_config"):
        config = program.fresh_config(config)
    run_dir = session.paths.script / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / f"{row['name']}.a{attempt}.{'yaml' if format_of(path) == 'yaml' else 'toml'}"
    write_atomic(target, dump_structured(config, format_of(path), like=path), fsync=False)
    if notes and record:
        session.store.add_event("run_config", f"attempt {attempt}: {notes}", row["name"])
    return str(target), device


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


def _write_chunk_files(session, chunk: Chunk, name: str, array: Optional[str], dry_run: bool):
    """The run configs, the index map and the job script of one submission."""
    paths = session.paths
    outputs_root = str(paths.outputs)
    entries = []
    for index, row in enumerate(chunk.configs):
        outputs = os.path.join(outputs_root, row["name"])  # paths.config_outputs, without a Path per config
        _make_folder(outputs)  # the trainer writes there from its start
        attempt = row["attempt"] + 1
        config_file, device = _run_config(session, row, attempt, record=not dry_run)
        env = task_environment(session.program, row["next_mode"], config_file, row["path"], outputs)
        entries.append(MapEntry(index, row["name"], attempt, config_file, outputs, device, row["gpus"], env))
    map_file = paths.script / f"{name}.map"
    script_file = paths.script / f"{name}.sh"
    context = script_context(session, name, array, len(entries), chunk.configs[0]["gpus"],
                             chunk.shape.split(":")[0], chunk.walltime_s, map_file)
    # Both texts first: a template or map error leaves no file behind.
    text_map, text_script = map_text(entries), render_script(session, context)
    write_atomic(map_file, text_map)
    write_atomic(script_file, text_script, mode=0o755)
    return entries, script_file, map_file


def submit_chunk(session, chunk: Chunk, limits: QueueLimits, report: SubmitReport, dry_run: bool) -> bool:
    """Intent → submit → record. Returns False when submitting should stop (limit or unreachable)."""
    store, adapter, paths = session.store, session.scheduler, session.paths
    paths.script.mkdir(parents=True, exist_ok=True)
    paths.markers.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    throttle = session.spec.throttle or session.profile.array_throttle
    if throttle and not limits.throttle_supported:
        throttle = None
    n = len(chunk.configs)
    is_array = n > 1 or session.profile.scheduler != "pbspro"  # PBS needs two indices for an array
    array = adapter.array_spec(list(range(n)), throttle) if is_array else None
    if dry_run:
        name = _job_name(session, chunk, offset=len(report.planned), persist=False)
        entries, script_file, map_file = _write_chunk_files(session, chunk, name, array, dry_run=True)
        report.planned.append((name, array, [e.name for e in entries]))
        return True
    with store.transaction():
        name = _job_name(session, chunk)
        entries, script_file, map_file = _write_chunk_files(session, chunk, name, array, dry_run=False)
        store.conn.execute(
            "INSERT INTO submissions (name, shape, script, map, status, ntasks, created_at) "
            "VALUES (?, ?, ?, ?, 'intent', ?, ?)", (name, chunk.shape, str(script_file), str(map_file), n, time.time()))
        store.conn.executemany(
            "INSERT OR REPLACE INTO attempts (config, attempt, submission, task_index, state, run_config, "
            "resumed_from) VALUES (?, ?, ?, ?, 'submitting', ?, ?)",
            [(entry.name, entry.attempt, name, entry.index, entry.config_file, chunk.configs[entry.index]["next_mode"])
             for entry in entries])
    spec = SubmitSpec(script=str(script_file), job_name=name, workdir=str(paths.root), indices=tuple(range(n)))
    return _submit_with_retries(session, spec, report)


def _submit_with_retries(session, spec: SubmitSpec, report: SubmitReport) -> bool:
    store, adapter = session.store, session.scheduler
    sub = next(s for s in store.submissions("intent") if s["name"] == spec.job_name)
    for attempt in range(TRANSIENT_RETRIES):
        faults.point("before_submit")
        result = shell.run(adapter.submit_argv(spec), timeout=150, cwd=spec.workdir, die_with_us=True)
        faults.point("after_submit")
        try:
            scheduler_id = adapter.parse_submit(result)
        except SchedulerError as exc:
            if exc.kind == "transient":
                # The job may exist anyway: look it up by its unique name before trying again.
                found = _find_by_name(session, spec.job_name)
                if found:
                    scheduler_id = found
                else:
                    time.sleep(2 ** (attempt + 1))
                    continue
            else:
                _refused(session, sub, exc, report)
                return exc.kind != "limit"
        with store.transaction():
            _record_submitted(session, sub, scheduler_id)
        report.submitted.append((spec.job_name, scheduler_id, sub["ntasks"]))
        return True
    report.errors.append(f"{spec.job_name}: the scheduler did not answer; the intent is kept and reconciled by "
                         "name on the next submit or poll")
    return False


def _find_by_name(session, job_name: str) -> Optional[str]:
    try:
        records = live_records(session)
    except SchedulerError:
        return None
    for rec in records:
        if rec.name == job_name:
            return rec.submission_id
    return None


def _refused(session, sub: dict, exc: SchedulerError, report: SubmitReport) -> None:
    """Nothing was queued: drop the intent; the configs wait (limit) or carry the refusal (rejected)."""
    store = session.store
    reason = ("queue limit reached: " if exc.kind == "limit" else "submission refused: ") + exc.message
    with store.transaction():
        names = [r["config"] for r in store.conn.execute("SELECT config FROM attempts WHERE submission = ?",
                                                          (sub["name"],))]
        store.conn.execute("DELETE FROM attempts WHERE submission = ? AND state = 'submitting'", (sub["name"],))
        store.conn.execute("UPDATE submissions SET status = 'refused', note = ? WHERE name = ?",
                           (exc.message, sub["name"]))
        store.conn.executemany("UPDATE configs SET state = 'waiting', reason = ? WHERE name = ?",
                               [(reason, name) for name in names])
        store.add_event("refused", f"{sub['name']}: {exc.message}")
    if exc.kind != "limit":
        report.errors.append(f"{sub['name']}: {exc.message}")
    report.reason = reason


# -- the command ----------------------------------------------------------------------------------------------
def submit(session, only: Optional[Sequence[str]] = None, dry_run: bool = False,
           records: Optional[list] = None) -> SubmitReport:
    """Submit what fits. The caller holds the sweep lock. ``records`` lets poll pass its live answer."""
    report = _submit(session, only, dry_run, records)
    if not dry_run and (report.submitted or report.reconciled or report.abandoned):
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
    from hpc_sweep.render import load_template

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
            break  # left to _write_chunk_files, which reports it as before
        premade.folders[name] = path
    if not running.poll():
        load_template(session.profile)


def _submit(session, only: Optional[Sequence[str]], dry_run: bool, records: Optional[list]) -> SubmitReport:
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
        records, limit_results, premade = _query_scheduler(session, records, limit_argvs, names)
    folders_used: set = set()
    try:
        reconcile_intents(session, records, report)
        rows = candidates(session, only)
        if not rows:
            return report
        limits = queue_limits(session, limit_results)
        room = room_in_queue(limits, records)
        chunks = plan_chunks(session, rows, limits, room)
        placed = 0
        for chunk in chunks:
            folders_used.update(row["name"] for row in chunk.configs)  # _write_chunk_files makes them
            if not submit_chunk(session, chunk, limits, report, dry_run):
                break
            placed += len(chunk.configs)
    finally:
        premade.remove_unused(folders_used)
    left = [r for r in candidates(session, only)]
    if not dry_run:
        reason = report.reason or (f"queue cap {limits.max_queued} reached" if room is not None else None)
        with session.store.transaction():
            for row in left:
                if row["state"] == "generated" or (reason and row["reason"] != reason):
                    session.store.set_config_state(row["name"], "waiting", reason or "not submitted yet")
    report.waiting = len(left) if not dry_run else len(rows) - placed
    return report
