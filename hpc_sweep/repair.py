"""`hpc-sweep repair`: rebuild the state database from what the sweep folder holds, when it and its last good copy
are lost or damaged.

What is on disk says almost everything the state knew:

- configs/configNNN.*: the configs (numbers from the file names; parameters matched to the sweep definition as
  generate matches them; a file the definition no longer makes is kept as "no longer in the definition");
- script/<job>.map (and .sh): every submission: its job name, and per task the index, config, attempt, run config,
  outputs folder, device and GPUs. The job names give back the job-name prefix and the last sequence number;
- .hpc_sweep/markers/<config>.<attempt>.start|exit: which tasks started (job id, submission id, host, time) and
  how they ended (exit code, time);
- .hpc_sweep/markers/<config>.<attempt>.stop: the runs this tool ended (cancel, an early stop), with the state and
  reason they were ended with (:func:`hpc_sweep.submit.cancel.end_runs` writes it before the scheduler is asked).

A submission a start marker names gets that scheduler id (``submitted``); any other is an ``intent``: the next
submit or poll looks it up by its job name before anything is submitted again. Attempts that ended are decided
from their exit markers as a poll decides them, except a run that ended without success after its stop record,
or never started: it is restored as it was ended (stopped, cancelled) with its reason. The rest are pending or
running until the next poll asks the scheduler (a stopped run still running then is settled by that poll, as a
stop a killed poll sent). The logs are read as a poll reads them; from them and the stop records, what
[early_stop] keeps of the stopped runs (the epochs they did not train; a stopped config brought back by hand is
never stopped again), and for [search] its trials: one per config, in config order, with the parameters its file
holds, told as ended (completed: the metric's best; stopped: pruned) or running. Nothing is submitted by repair
itself. The new database is built beside state.db and moved into place at the end, under the writers' lock; what
it replaces is kept (state.db.corrupt-<time>).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional

from hpc_sweep.common.errors import UserError
from hpc_sweep.state.states import SUBMITTING, ConfigState
from hpc_sweep.state.states import SubmissionStatus as Status
from hpc_sweep.submit.packing import task_count

if TYPE_CHECKING:
    from hpc_sweep.common.layout import SweepPaths
    from hpc_sweep.session import Session
    from hpc_sweep.state.lock import SweepLock
    from hpc_sweep.sweep.sweepfile import SweepSpec

CONFIG_FILE = re.compile(r"config(\d+)")
JOB_NAME = re.compile(r"(?P<prefix>.+)-(?P<tag>[A-Za-z0-9_.]+)-(?P<seq>\d+)")
MARKER = re.compile(r"(?P<config>.+)\.(?P<attempt>\d+)\.(?P<kind>start|exit|stop)")
# A run's exit marker holds whole seconds of the node's clock; its stop record the controller's time.
STOP_CLOCK_SLACK_S = 2.0
ENDED_BY_US = (ConfigState.STOPPED, ConfigState.CANCELLED)
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")


@dataclass
class RepairReport:
    set_aside: list = field(default_factory=list)       # file names kept aside
    configs: int = 0
    retired: list = field(default_factory=list)         # configs whose file the definition no longer makes
    submissions: Counter = field(default_factory=Counter)  # status -> number
    attempts: int = 0
    states: Counter = field(default_factory=Counter)    # config state -> number
    prefix: str = ""
    warnings: list = field(default_factory=list)

    def lines(self) -> list:
        out = [f"kept {name} aside" for name in self.set_aside]
        retired = f" ({len(self.retired)} no longer in the definition)" if self.retired else ""
        subs = ", ".join(f"{n} {status}" for status, n in sorted(self.submissions.items())) or "none"
        out.append(f"rebuilt the state: {self.configs} configs{retired}, submissions: {subs}, "
                   f"{self.attempts} attempts; job-name prefix {self.prefix}")
        out.append("states: " + ", ".join(f"{state} {n}" for state, n in sorted(self.states.items())))
        if self.submissions.get(Status.INTENT):
            out.append(f"{self.submissions[Status.INTENT]} submission(s) no task of which has started are looked up by "
                       "name in the scheduler before anything is submitted again")
        out += [f"warning: {line}" for line in self.warnings]
        out.append("nothing was submitted; the next poll brings the states up to date with the scheduler")
        return out


def repair(sweep_dir: Path, force: bool = False) -> RepairReport:
    """Rebuild the state of the sweep in ``sweep_dir`` under the writers' lock. A readable state with configs is
    left alone unless ``force``."""
    from hpc_sweep.common.layout import SweepPaths
    from hpc_sweep.state.lock import acquire_lock
    from hpc_sweep.sweep.sweepfile import load_sweep

    spec = load_sweep(Path(sweep_dir))
    paths = SweepPaths.at(spec.root)
    lock = acquire_lock(paths)
    try:
        condition = _condition(paths)
        if condition == "ok" and not force:
            raise UserError("the state database is readable; there is nothing to repair", file=paths.db,
                            fix="'hpc-sweep repair --force' rebuilds it from the files anyway (its event history "
                                "and anything not on disk is lost)")
        report = RepairReport()
        building = paths.state_dir / "state.db.rebuilding"
        _build(spec, paths, lock, building, report)
        _replace(paths, building, condition, report)
        from hpc_sweep.state.store import open_store

        store = open_store(paths, lock=lock)
        try:
            store.backup()
        finally:
            store.close()
    finally:
        lock.release()
    return report


def _condition(paths: SweepPaths) -> str:
    """'ok' (readable, with configs), 'empty' (readable, no config: nothing to lose), 'missing' or 'corrupt'."""
    from hpc_sweep.state.health import CORRUPT, EMPTY, examine
    from hpc_sweep.state.store import open_store

    if not paths.db.exists():
        return "missing"
    found = examine(paths.db)
    if found == CORRUPT:
        return "corrupt"
    if found == EMPTY:
        return "empty"
    store = open_store(paths)  # read only
    try:
        return "ok" if store.conn.execute("SELECT 1 FROM configs LIMIT 1").fetchone() else "empty"
    finally:
        store.close()


def _replace(paths: SweepPaths, building: Path, condition: str, report: RepairReport) -> None:
    from hpc_sweep.state.health import OK, examine, set_aside

    if paths.db.exists():
        label = "corrupt" if condition == "corrupt" else "replaced"
        report.set_aside.append(set_aside(paths.db, label).name)
    if paths.db_backup.exists():  # replaced by the new state's copy below; a good one is kept too
        label = "corrupt" if examine(paths.db_backup) != OK else "replaced"
        report.set_aside.append(set_aside(paths.db_backup, label).name)
    os.replace(building, paths.db)


def _build(spec: SweepSpec, paths: SweepPaths, lock: SweepLock, building: Path, report: RepairReport) -> None:
    from hpc_sweep.track.poll import PollReport, apply_markers_only
    from hpc_sweep.session import Session
    from hpc_sweep.state.store import fresh_store

    store = fresh_store(building, paths, lock)
    session = Session(spec, paths, store)  # no lock of its own: closing it leaves the caller's lock held
    try:
        rows = _config_rows(spec, paths, report)
        maps = _read_maps(paths, report)
        markers = _read_markers(paths)
        prefix, seq = _prefix(spec, maps, report)
        with store.transaction():
            store.add_configs(rows)
            store.set_meta("prefix", prefix)
            store.set_meta("name", spec.name)
            store.set_meta("submission_seq", str(seq))
            _insert_history(session, rows, maps, markers, report)
            store.add_event("repaired", f"state rebuilt from the files: {len(rows)} configs, "
                                        f"{sum(report.submissions.values())} submissions, {report.attempts} attempts")
        # Attempts whose exit marker is there end as a poll ends them between scheduler queries.
        apply_markers_only(session, PollReport(), time.time())
        _read_logs(session)
        _rebuild_early_stops(session, markers)
        _rebuild_trials(spec, session, rows)
        report.states = Counter(row[0] for row in store.conn.execute("SELECT state FROM configs"))
        report.configs = len(rows)
        report.prefix = prefix
    finally:
        session.close()


# -- configs ------------------------------------------------------------------------------------------------------
class _Found(NamedTuple):
    """A config file found in configs/: its number and name, and the parameters it was matched to."""

    params_key: str
    idx: int
    name: str
    path: Path
    params: Optional[dict] = None   # the parameters it was matched to (retired configs: read from the file)


class _Rebuilt(NamedTuple):
    """A config row rebuilt from its file, in the order :meth:`hpc_sweep.state.store.Store.add_configs` takes."""

    name: str
    idx: int
    params: str                     # JSON
    params_key: str
    path: str
    digest: str
    device: str
    gpus: int
    shape: str
    in_definition: int
    log_context: str


class _Known:
    """What :func:`hpc_sweep.sweep.generate.plan` asks of a state: the configs it already numbered."""

    def __init__(self, found: list[_Found]):
        self._found = found

    def configs(self) -> list[_Found]:
        return self._found


def _config_files(paths: SweepPaths) -> list:
    """(number, path) of configs/configNNN.* in number order."""
    found = []
    for path in paths.configs.iterdir() if paths.configs.is_dir() else ():
        match = CONFIG_FILE.fullmatch(path.stem)
        if match and path.suffix in CONFIG_SUFFIXES and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _config_rows(spec: SweepSpec, paths: SweepPaths, report: RepairReport) -> list[_Rebuilt]:
    """One row per config file: numbers from the file names, parameters and resources from the definition (through
    generate's own plan), the digest of the file as it is."""
    from hpc_sweep.common.dotted import get_dotted, has_dotted
    from hpc_sweep.sweep.expand import params_key
    from hpc_sweep.common.formats import load_structured
    from hpc_sweep.sweep.generate import plan

    # A search's definition is the configs it asked for: their files are its record of them (its trials are
    # rebuilt from the same files, _rebuild_trials).
    wanted = {p.key: p.params for p in plan(spec, _searched(spec, paths) if spec.search else None, paths)}
    key_sets = list(dict.fromkeys(tuple(params) for params in wanted.values()))
    known, retired, claimed = [], [], set()
    for idx, path in _config_files(paths):
        try:
            data = load_structured(path)
        except UserError as exc:
            report.warnings.append(f"{path.name} cannot be read ({exc}); left out")
            continue
        match = None
        for keys in key_sets:
            if all(has_dotted(data, key) for key in keys):
                key = params_key({k: get_dotted(data, k) for k in keys})
                if key in wanted and key not in claimed:
                    match = key
                    break
        name = path.stem
        if match is not None:
            claimed.add(match)
            known.append(_Found(match, idx, name, path, wanted[match]))
        else:
            params = {k: get_dotted(data, k) for k in spec.swept_keys if has_dotted(data, k)}
            retired.append(_Found(params_key(params), idx, name, path, params))
    retired = _unique_retired(retired, claimed, report)
    by_key = {k.params_key: k for k in known}
    rows = [_row(planned, by_key[planned.key], True) for planned in plan(spec, _Known(known + retired), paths)
            if planned.key in by_key]  # a planned config without a file was never generated: generate adds it
    if retired:
        rows += _retired_rows(spec, paths, known, retired, report)
    return sorted(rows, key=lambda row: row.idx)


def _searched(spec: SweepSpec, paths: SweepPaths) -> _Known:
    """The configs a [search] asked for, as its plan takes them: each file holding every searched key, with the
    values it holds."""
    from hpc_sweep.common.dotted import get_dotted, has_dotted
    from hpc_sweep.common.formats import load_structured
    from hpc_sweep.sweep.expand import params_key

    keys = [param.key for param in spec.search.params]
    found, seen = [], set()
    for idx, path in _config_files(paths):
        try:
            data = load_structured(path)
        except UserError:
            continue  # said where the files are matched
        if all(has_dotted(data, key) for key in keys):
            params = {key: get_dotted(data, key) for key in keys}
            if params_key(params) not in seen:
                seen.add(params_key(params))
                found.append(_Found(params_key(params), idx, path.stem, path, params))
    return _Known(found)


def _unique_retired(retired: list, claimed: set, report: RepairReport) -> list:
    kept, seen = [], set(claimed)
    for row in retired:
        if row.params_key in seen:
            report.warnings.append(f"{row.name}: its parameters are those of another config; left out")
            continue
        seen.add(row.params_key)
        kept.append(row)
    return kept


def _retired_rows(spec: SweepSpec, paths: SweepPaths, known: list[_Found], retired: list[_Found],
                  report: RepairReport) -> list[_Rebuilt]:
    """Configs whose file the definition no longer makes, planned as explicit configs of the same sweep."""
    from hpc_sweep.sweep.generate import plan

    only_these = dataclasses.replace(spec, grid={}, zips=[], explicit=[r.params for r in retired],
                                     random_count=0, random_params=[], search=None)
    try:
        planned = plan(only_these, _Known(known + retired), paths)
    except UserError as exc:
        report.warnings.append(f"configs no longer in the definition ({', '.join(r.name for r in retired)}) "
                               f"left out: {exc}")
        return []
    by_key = {p.key: p for p in planned}
    rows = []
    for row in retired:
        if row.params_key in by_key:
            rows.append(_row(by_key[row.params_key], row, False))
            report.retired.append(row.name)
    return rows


def _row(planned, found: _Found, in_definition: bool) -> _Rebuilt:
    text = found.path.read_bytes()
    return _Rebuilt(found.name, found.idx, json.dumps(planned.params), found.params_key, str(found.path),
                    hashlib.sha256(text).hexdigest(), planned.device, planned.gpus, planned.shape, int(in_definition),
                    planned.log_context)


# -- submissions and attempts ---------------------------------------------------------------------------------------
@dataclass
class _Map:
    name: str
    path: Path
    entries: list
    written_at: float
    seq: int


def _read_maps(paths: SweepPaths, report: RepairReport) -> dict:
    from hpc_sweep.common.jobmap import parse_map

    maps = {}
    for path in sorted(paths.script.glob("*.map")) if paths.script.is_dir() else ():
        try:
            entries = parse_map(path.read_text())
        except (OSError, ValueError) as exc:
            report.warnings.append(f"{path} cannot be read ({exc}); left out")
            continue
        if not entries:
            continue
        match = JOB_NAME.fullmatch(path.stem)
        maps[path.stem] = _Map(path.stem, path, entries, path.stat().st_mtime, int(match.group("seq")) if match else 0)
    return maps


def _read_markers(paths: SweepPaths) -> dict:
    """(config, attempt) -> {"start": {...}, "exit": {...}} from the markers that can be read."""
    found: dict = {}
    for name in os.listdir(paths.markers) if paths.markers.is_dir() else ():
        match = MARKER.fullmatch(name)
        if not match:
            continue
        try:
            data = json.loads((paths.markers / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.setdefault((match.group("config"), int(match.group("attempt"))), {})[match.group("kind")] = data
    return found


def _prefix(spec: SweepSpec, maps: dict, report: RepairReport) -> tuple:
    """The job-name prefix (the sweep name plus init's random suffix) and the highest sequence number, from the
    job names in script/; a new prefix where nothing was ever submitted."""
    from hpc_sweep.sweep.init import new_prefix

    named = [JOB_NAME.fullmatch(name) for name in maps]
    named = [m for m in named if m]
    if not named:
        return new_prefix(spec.name), 0
    ours = re.compile(rf"{re.escape(spec.name[:40])}-[0-9a-f]{{6}}")
    counts = Counter(m.group("prefix") for m in named)
    likely = [p for p in counts if ours.fullmatch(p)] or list(counts)
    prefix = max(likely, key=lambda p: counts[p])
    others = sorted(set(counts) - {prefix})
    if others:
        report.warnings.append(f"job names with other prefixes in script/ ({', '.join(others)}) were read as this "
                               f"sweep's submissions all the same")
    return prefix, max(int(m.group("seq")) for m in named)


def _owner(entries: list, marker: Optional[dict], maps: dict) -> Optional[str]:
    """Which of the maps holding one (config, attempt) its task ran from: the one its start marker names (job
    name, or the array index it ran as), else the newest (a re-send after a lost reply reuses the attempt)."""
    if marker:
        named = [name for name, _ in entries if name == marker.get("job_name")]
        if named:
            return named[0]
        same_index = [name for name, entry in entries if marker.get("index") == entry.index]
        if len(same_index) == 1:
            return same_index[0]
    return max(entries, key=lambda item: (maps[item[0]].seq, maps[item[0]].written_at))[0]


def _insert_history(session: Session, rows: list[_Rebuilt], maps: dict, markers: dict, report: RepairReport) -> None:
    """Submissions, attempts and each config's current attempt and state."""
    from hpc_sweep.state.store import placeholders

    store, adapter = session.store, session.scheduler
    configs = {row.name: row for row in rows}
    claims: dict = {}                                  # (config, attempt) -> [(map name, entry)]
    for name, found in maps.items():
        for entry in found.entries:
            claims.setdefault((entry.name, entry.attempt), []).append((name, entry))
    owners = {key: _owner(entries, markers.get(key, {}).get("start"), maps) for key, entries in claims.items()}
    scheduler_ids: dict = {}
    for key, owner in owners.items():
        start = markers.get(key, {}).get("start") or {}
        sid = start.get("submission_id") or (adapter.submission_of(start["job_id"]) if start.get("job_id") else None)
        if sid:
            scheduler_ids.setdefault(owner, str(sid))
    for name, found in maps.items():
        sid = scheduler_ids.get(name)
        shape = next((configs[e.name].shape for e in found.entries if e.name in configs), "unknown")
        store.conn.execute(
            "INSERT INTO submissions (name, shape, script, map, scheduler_id, status, ntasks, created_at, submitted_at,"
            " note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'rebuilt by hpc-sweep repair')",
            (name, shape, str(found.path.with_suffix(".sh")), str(found.path), sid,
             Status.SUBMITTED if sid else Status.INTENT, task_count(found.entries), found.written_at,
             found.written_at if sid else None))
        report.submissions[Status.SUBMITTED if sid else Status.INTENT] += 1
    latest: dict = {}
    for key in sorted(set(owners) | set(markers)):
        config, attempt = key
        if config not in configs:
            report.warnings.append(f"{config} attempt {attempt}: no config file; left out")
            continue
        owner = owners.get(key)
        entry = next((e for n, e in claims.get(key, ()) if n == owner), None)
        state, fields = _attempt(session, owner, entry, scheduler_ids.get(owner), maps, markers.get(key, {}))
        if state is None:
            continue
        columns = ["config", "attempt", "submission", "task_index", "state", *fields]
        store.conn.execute(f"INSERT INTO attempts ({', '.join(columns)}) VALUES ({placeholders(columns)})",
                           (config, attempt, owner, entry.index if entry else None, state, *fields.values()))
        report.attempts += 1
        if attempt >= latest.get(config, (0, ""))[0]:
            latest[config] = (attempt, state, owner, fields.get("reason"))
    for config, (attempt, state, owner, reason) in latest.items():
        if state == SUBMITTING:
            state = ConfigState.PENDING
            reason = (f"state rebuilt by hpc-sweep repair: submission {owner} is looked up by name before anything "
                      "is submitted again")
        store.set_config_state(config, state, reason, attempt=attempt)


def _attempt(session: Session, owner: Optional[str], entry, sid: Optional[str], maps: dict, marks: dict) -> tuple:
    """(state, other columns) of one rebuilt attempt: ``submitting`` under a submission no task of which is known
    to have started (an intent), else running where it started and pending where not; an exit marker is left
    for :func:`hpc_sweep.track.poll.apply_markers_only` to decide, as a poll does, but a run this tool ended (its
    stop record, :func:`_ended_by_us`) is recorded as it was ended. (Under an intent, a stop record is not read:
    the lookup by name settles that submission first.)"""
    start, end = marks.get("start") or {}, marks.get("exit") or {}
    fields: dict = {}
    if entry is not None:
        fields["run_config"] = entry.config_file
        fields["submitted_at"] = maps[owner].written_at
    if start:
        fields.update(job_id=start.get("job_id"), started_at=start.get("time"), host=start.get("host"))
    elif sid and entry is not None:
        ntasks = task_count(maps[owner].entries)  # a packed map has several lines per task
        fields["job_id"] = session.scheduler.task_id(sid, entry.index, session.scheduler.uses_array(ntasks))
    if end:
        fields.update(ended_at=end.get("time"), exit_code=end.get("exit_code"))
    if owner is not None and not sid:
        return SUBMITTING, fields
    if owner is None and not start:
        return None, fields  # an exit marker alone: nothing says which job it was
    ended_as = _ended_by_us(marks)
    if ended_as is not None:
        fields["reason"] = ended_as[1]
        return ended_as[0], fields
    return (ConfigState.RUNNING if start else ConfigState.PENDING), fields


def _ended_by_us(marks: dict) -> Optional[tuple]:
    """(state, reason) of a run this tool ended: its exit marker says it ended without success, after its stop
    record was written (a run that failed on its own first keeps its own ending), or it never started (a queued
    task cancelled, a packed run stopped before its launcher started it: never to be queued again); None
    otherwise."""
    stop, end = marks.get("stop") or {}, marks.get("exit") or {}
    if not stop or stop.get("state") not in ENDED_BY_US:
        return None
    if not end:
        return (ConfigState(stop["state"]), stop.get("why")) if not marks.get("start") else None
    if end.get("exit_code") == 0:
        return None
    ended_at, asked_at = end.get("time"), stop.get("time")
    if isinstance(ended_at, (int, float)) and isinstance(asked_at, (int, float)) and \
            ended_at < asked_at - STOP_CLOCK_SLACK_S:
        return None
    return ConfigState(stop["state"]), stop.get("why")


# -- logs, early stopping and search ----------------------------------------------------------------------------
def _read_logs(session: Session) -> None:
    """The curves, read from the logs as a poll reads them. (The verdict on runs that exited 0 without a training
    log stays the next poll's, as for any run that ended between polls.)"""
    from hpc_sweep.track.poll import PollReport
    from hpc_sweep.track.progress import update_progress

    update_progress(session, PollReport())


def _rebuild_early_stops(session: Session, markers: dict) -> None:
    """What [early_stop] keeps of the runs it stopped: the last epoch each logged and its planned last epoch (the
    epochs saved); a stopped config run again since (resubmit: the poll never resumes a stopped run) is exempt.
    A stop record of a run not known to have ended yet is left to the next poll's settle_stops: stopped if its
    run ended without success by then, judged again if it still runs. (The rungs runs passed are not on disk:
    running runs are judged again at the rungs they reach.)"""
    store = session.store
    if session.spec.early_stop is None:
        return
    current = {name: (state, attempt) for name, state, attempt in
               store.query("SELECT name, state, attempt FROM configs")}
    stopped: dict = {}
    for config, attempt in store.query("SELECT config, attempt FROM attempts WHERE state = ? ORDER BY attempt",
                                       (ConfigState.STOPPED,)):
        stopped[config] = attempt  # the latest stopped attempt of each
    last_epochs = {config: store.query("SELECT MAX(epoch) FROM epochs WHERE config = ? AND attempt <= ?",
                                       (config, attempt))[0][0] for config, attempt in stopped.items()}
    max_epochs = dict(store.query("SELECT config, max_epoch FROM progress WHERE max_epoch IS NOT NULL"))
    sent = [(attempt, found["stop"].get("why"), config) for (config, attempt), found in markers.items()
            if (found.get("stop") or {}).get("state") == ConfigState.STOPPED and config in current
            and current[config][1] == attempt and current[config][0] in (ConfigState.RUNNING, ConfigState.PENDING)]
    with store.transaction():
        store.set_early_stops(("stopped_epoch", "max_epoch"),
                              [(last_epochs.get(c), max_epochs.get(c), c) for c in stopped])
        store.set_early_stops(("exempt",), [(1, c) for c, attempt in stopped.items() if current[c][1] > attempt])
        store.set_early_stops(("stopping_attempt", "stopping_reason"), sent)


def _rebuild_trials(spec: SweepSpec, session: Session, rows: list) -> None:
    """[search]: one trial per config, numbered in config order, with the [search.params] values its file holds;
    completed and stopped configs told from their curves as a poll tells them, the rest running (a config that
    failed may yet be resumed: the next poll tells it once it is final). Repeated suggestions (a trial that shares
    an earlier config) left no file and are not rebuilt."""
    from hpc_sweep.common.dotted import get_dotted, has_dotted
    from hpc_sweep.common.formats import load_structured
    from hpc_sweep.sweep.search import RUNNING, tell_ended

    if spec.search is None:
        return
    keys = [param.key for param in spec.search.params]
    trials = []
    for row in sorted(rows, key=lambda r: r.idx):
        data = load_structured(Path(row.path))
        if not all(has_dotted(data, key) for key in keys):
            continue  # not one of the search's configs
        params = {key: get_dotted(data, key) for key in keys}
        trials.append((len(trials), row.name, json.dumps(params, sort_keys=True), RUNNING,
                       os.stat(row.path).st_mtime))
    store = session.store
    with store.transaction() as conn:
        conn.executemany("INSERT INTO search_trials (number, config, params, state, asked_at) VALUES (?, ?, ?, ?, ?)",
                         trials)
    tell_ended(spec, store, states=(ConfigState.COMPLETED, ConfigState.STOPPED))
