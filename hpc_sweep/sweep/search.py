"""Adaptive search (``[search] method = "tpe"``): ask Optuna's TPE for new configs, tell it how runs ended.

No daemon and no Optuna storage: the sweep's SQLite keeps one row per trial (``search_trials`` below), and each
poll rebuilds an in-memory study from those rows — every finished trial added with ``add_trial`` — then asks for
as many new configs as there is room. The sampler's seed is derived from the sweep's seed and the number of trials
recorded, so the same table always yields the same suggestions, whichever process or poll asks.

Trials and configs: trial N is asked, written as the next configNNN and recorded (state running). A suggestion
whose parameters some earlier trial already has (likely once a choice space is small) starts no run: it is
recorded against that trial's config and ends as that config ends, as Optuna's own advice for repeated points
goes. Outcomes (:func:`outcome`): a completed run is told its best value; a run stopped by ``[early_stop]`` is told
as pruned with its best value so far at its last epoch (TPE ranks pruned trials by how far they got, then by
that value); a run that failed for good is told as failed (TPE leaves it out).

Optuna is an optional extra (``pip install 'hpc-sweep[search]'``), imported only when a search runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, NamedTuple, Optional

from hpc_sweep.common.errors import UserError
from hpc_sweep.state.schema import SCHEMA, table_of
from hpc_sweep.state.states import FINAL, ConfigState, sql_list
from hpc_sweep.sweep.expand import params_key

if TYPE_CHECKING:
    from hpc_sweep.common.layout import SweepPaths
    from hpc_sweep.state.store import Store
    from hpc_sweep.sweep.options import SearchSpec
    from hpc_sweep.sweep.sweepfile import SweepSpec

TRIALS_DDL = next(s for s in SCHEMA if table_of(s) == "search_trials")  # the state's schema holds the table
RUNNING, COMPLETE, PRUNED, FAIL = "running", "complete", "pruned", "fail"
TRIAL_STATES = (RUNNING, COMPLETE, PRUNED, FAIL)
ENDINGS = ("completed", "stopped", "failed")   # how a config ended, as :func:`outcome` is asked


class TrialRow(NamedTuple):
    number: int
    config: str
    params: dict
    state: str = RUNNING
    value: Optional[float] = None
    step: Optional[int] = None


@dataclass(frozen=True)
class Suggestion:
    number: int
    params: dict
    same_as: Optional[int] = None   # an earlier trial with these parameters: record its config, start no run


@dataclass(frozen=True)
class Told:
    state: str
    value: Optional[float] = None
    step: Optional[int] = None


# --- the pure part ------------------------------------------------------------------------------------------

def sampler_seed(seed: int, trials: int) -> int:
    """The sampler's seed for a study rebuilt from ``trials`` rows: stable across processes and Python versions
    (hash() is salted per process), different at every step so a rebuilt study does not repeat its first draws."""
    digest = hashlib.sha256(f"hpc-sweep search {seed} {trials}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def startup_trials(budget: int) -> int:
    """Random trials before TPE models anything: Optuna's 10, fewer for a small budget (a quarter of it)."""
    return min(10, max(2, budget // 4))


def outcome(ending: str, points: Iterable[tuple]) -> Told:
    """What to tell about a config that ended (``ending``: completed, stopped, failed) from its curve of the
    search's metric, (epoch, value) pairs."""
    if ending not in ENDINGS:
        raise ValueError(f"ending {ending!r} is not one of {ENDINGS}")
    curve = sorted((int(e), float(v)) for e, v in points if v is not None)
    finite = [(e, v) for e, v in curve if math.isfinite(v)]
    if ending == "failed" or not finite:
        return Told(FAIL, step=curve[-1][0] if curve else None)
    best = min(v for _, v in finite)
    if ending == "completed":
        return Told(COMPLETE, value=best, step=curve[-1][0])
    return Told(PRUNED, value=best, step=curve[-1][0])


def ask(spec: "SearchSpec", rows: list, room: int) -> list:
    """Up to ``room`` new suggestions (never past the budget), numbered after the recorded ``rows``."""
    room = min(room, spec.budget - len(rows))
    if room <= 0:
        return []
    optuna = _optuna()
    study = rebuild_study(spec, rows)
    dists = distributions(spec)
    known = {params_key(row.params): row.number for row in rows}
    suggestions = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for _ in range(room):
            trial = study.ask(dists)
            params = _as_written(spec, trial.params)
            key = params_key(params)
            suggestions.append(Suggestion(trial.number, params, same_as=known.get(key)))
            known.setdefault(key, trial.number)
    return suggestions


def rebuild_study(spec: "SearchSpec", rows: list):
    """An in-memory study holding every recorded trial, in number order, with a sampler seeded from the table."""
    optuna = _optuna()
    numbers = sorted(row.number for row in rows)
    if numbers != list(range(len(rows))):
        raise ValueError(f"search trials are not numbered 0..{len(rows) - 1}: {numbers}")
    dists = distributions(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=sampler_seed(spec.seed, len(rows)),
                                             n_startup_trials=startup_trials(spec.budget),
                                             multivariate=True, constant_liar=True)
        study = optuna.create_study(direction="minimize", sampler=sampler)
        for row in sorted(rows, key=lambda r: r.number):
            study.add_trial(_frozen(optuna, row, dists))
    return study


def distributions(spec: "SearchSpec") -> dict:
    """[search.params] as Optuna distributions: uniform/loguniform floats, int (bounds included), choice."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists: dict = {}
    for param in spec.params:
        if param.dist == "choice":
            dists[param.key] = CategoricalDistribution(list(param.values))
        elif param.dist == "int":
            dists[param.key] = IntDistribution(int(param.low), int(param.high))
        else:
            dists[param.key] = FloatDistribution(float(param.low), float(param.high), log=param.dist == "loguniform")
    return dists


def _frozen(optuna, row: TrialRow, dists: dict):
    state = {RUNNING: optuna.trial.TrialState.RUNNING, COMPLETE: optuna.trial.TrialState.COMPLETE,
             PRUNED: optuna.trial.TrialState.PRUNED, FAIL: optuna.trial.TrialState.FAIL}[row.state]
    intermediate = {row.step: row.value} if row.state == PRUNED and row.step is not None else None
    try:
        return optuna.trial.create_trial(state=state, value=row.value if row.state == COMPLETE else None,
                                         params=row.params, distributions=dists, intermediate_values=intermediate)
    except ValueError as exc:  # the parameters do not fit the distributions any more
        raise UserError(f"search trial {row.number} ({row.config}) does not fit [search.params] any more: {exc}",
                        key="search.params", fix="restore the parameters and ranges the search started with, "
                        "or start a new sweep") from None


def _as_written(spec: "SearchSpec", params: dict) -> dict:
    """Floats to six significant digits, as [random] writes them (readable configs), kept inside the bounds."""
    written = {}
    for param in spec.params:
        value = params[param.key]
        if param.dist in ("uniform", "loguniform"):
            value = min(max(float(f"{value:.6g}"), param.low), param.high)
        written[param.key] = value
    return written


def require_optuna() -> None:
    """Raise the one-line UserError when Optuna is missing (checked before a search sweep writes anything)."""
    _optuna()


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("[search] method = \"tpe\" needs Optuna, which is not installed", key="search.method",
                        fix="pip install 'hpc-sweep[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --- the table ----------------------------------------------------------------------------------------------

def read_trials(conn: sqlite3.Connection) -> list:
    rows = conn.execute("SELECT number, config, params, state, value, step FROM search_trials ORDER BY number")
    return [TrialRow(n, c, json.loads(p), s, v, st) for n, c, p, s, v, st in rows]


def record_asked(conn: sqlite3.Connection, suggestions: list, configs: dict) -> None:
    """Record suggestions as running trials; ``configs``: trial number -> the config written for it. A repeated
    suggestion gets its earlier trial's config, and its outcome where that run already ended."""
    now = time.time()
    earlier = {row.number: row for row in read_trials(conn)}
    rows = []
    for s in suggestions:
        if s.same_as is None:
            rows.append((s.number, configs[s.number], s.params, RUNNING, None, None))
        elif s.same_as in earlier:
            first = earlier[s.same_as]
            rows.append((s.number, first.config, s.params, first.state, first.value, first.step))
        else:  # repeats a suggestion of this same batch
            rows.append((s.number, configs[s.same_as], s.params, RUNNING, None, None))
    conn.executemany("INSERT INTO search_trials (number, config, params, state, value, step, asked_at, told_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [(n, c, json.dumps(p, sort_keys=True), st, v, step, now, None if st == RUNNING else now)
                      for n, c, p, st, v, step in rows])


def reopen(conn: sqlite3.Connection, configs: Iterable[str]) -> None:
    """Configs run again (resubmit): their trials are running again, and told again when the new run ends."""
    conn.executemany("UPDATE search_trials SET state = ?, told_at = NULL WHERE config = ?",
                     [(RUNNING, config) for config in configs])


def record_told(conn: sqlite3.Connection, config: str, told: Told) -> None:
    """Every running trial of ``config`` (its own and repeats of it) ends as ``told``."""
    conn.execute("UPDATE search_trials SET state = ?, value = ?, step = ?, told_at = ? "
                 "WHERE config = ? AND state = ?", (told.state, told.value, told.step, time.time(), config, RUNNING))


# --- the sweep: configs asked, outcomes told -----------------------------------------------------------------

def recorded_param_sets(store: Optional["Store"]) -> list:
    """What a search sweep's configs are (generate writes them as it writes a grid's): the configs it has, in
    number order, then the parameter sets of recorded trials not written yet, each once, in trial order. (A state
    rebuilt by ``hpc-sweep repair`` gets one trial per config back, from the files.)"""
    if store is None:
        return []
    sets = [row.params for row in sorted(store.configs(), key=lambda row: row.idx)]
    seen = {params_key(params) for params in sets}
    conn = getattr(store, "conn", None)  # repair plans with a stand-in that only lists configs
    for row in read_trials(conn) if conn is not None else ():
        key = params_key(row.params)
        if key not in seen:
            seen.add(key)
            sets.append(row.params)
    return sets


def ask_configs(spec: "SweepSpec", store: "Store", paths: "SweepPaths", room: int) -> list:
    """Ask the sampler for up to ``room`` new configs (never past the budget) and write them as the next
    configNNN. Every new config is checked first (nothing written on a bad one); the trials are recorded before
    the files, so a crash in between leaves trials that the next generate writes. Returns the configs written."""
    from hpc_sweep.sweep.generate import config_name, generate, plan

    suggestions = ask(spec.search, read_trials(store.conn), room)
    new = [s for s in suggestions if s.same_as is None]
    if not suggestions:
        return []
    plan(spec, store, paths, extra=[s.params for s in new])  # raises UserError before anything is written
    next_idx = max((row.idx for row in store.configs()), default=0) + 1
    names = {s.number: config_name(next_idx + i) for i, s in enumerate(new)}
    with store.transaction() as conn:
        record_asked(conn, suggestions, names)
    return generate(spec, store, paths).written


def tell_ended(spec: "SweepSpec", store: "Store", states: Iterable[str] = FINAL) -> list:
    """Tell the sampler how the configs of running trials ended, from their curves of the search's metric:
    completed, stopped (pruned), or failed (any other final state). ``states``: only configs in these states.
    Returns (config, Told) of those told."""
    column = {"val_loss": "val_loss", "train_loss": "train_loss"}[spec.search.metric]
    ended = store.query("SELECT DISTINCT t.config, c.state FROM search_trials t JOIN configs c ON c.name = t.config "
                        f"WHERE t.state = '{RUNNING}' AND c.state IN ({sql_list(set(states) & set(FINAL))})")
    if not ended:
        return []
    told = []
    for config, state in ended:
        ending = {ConfigState.COMPLETED: "completed", ConfigState.STOPPED: "stopped"}.get(state, "failed")
        points = {epoch: value for epoch, value in store.query(
            f"SELECT epoch, {column} FROM epochs WHERE config = ? ORDER BY attempt, epoch", (config,))}
        told.append((config, outcome(ending, points.items())))
    with store.transaction() as conn:
        for config, result in told:
            record_told(conn, config, result)
    return told
