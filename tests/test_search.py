"""Adaptive search (hpc_sweep/sweep/search.py): ask/tell with Optuna's TPE, rebuilt from the trials table at every poll."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_sweep.sweep import search
from hpc_sweep.common.errors import UserError
from hpc_sweep.sweep.search import (COMPLETE, FAIL, PRUNED, RUNNING, TRIALS_DDL, Told, TrialRow, ask, outcome,
                              read_trials, rebuild_study, record_asked, record_told, sampler_seed)
from hpc_sweep.sweep.options import SearchSpec
from hpc_sweep.sweep.sweepfile import RandomParam

pytest.importorskip("optuna")  # the optional extra hpc-sweep[search]

REPO = Path(__file__).resolve().parents[1]
LR = "process.train.optimizer.init_learning_rate"
SPACE = (RandomParam(LR, "loguniform", 1e-4, 1e-1), RandomParam("model.advanced.num_blocks", "int", 1, 6),
         RandomParam("model.loss_type", "choice", values=["mae", "mse"]))
SPEC = SearchSpec(method="tpe", budget=30, params=SPACE, seed=7)


def table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(TRIALS_DDL)
    return conn


def objective(params: dict) -> float:
    """A toy loss: best at lr = 1e-2, 3 blocks, mse."""
    return (math.log10(params[LR]) + 2) ** 2 + 0.1 * (params["model.advanced.num_blocks"] - 3) ** 2 + \
        (0.3 if params["model.loss_type"] == "mae" else 0.0)


def poll(conn: sqlite3.Connection, spec: SearchSpec, room: int) -> list:
    """One poll's search step as the poll will do it: rebuild from the table, ask, write configs, record."""
    suggestions = ask(spec, read_trials(conn), room)
    configs = {s.number: f"config{s.number + 1:03d}" for s in suggestions if s.same_as is None}
    record_asked(conn, suggestions, configs)
    return suggestions


def run_search(spec: SearchSpec, room: int = 3, blind: bool = False) -> list:
    """The whole search, each poll rebuilding the study from the table; every run ends before the next poll.
    ``blind``: every run is told as failed, so the sampler learns nothing (returns the losses it would have had)."""
    conn = table()
    losses = {}
    while len(read_trials(conn)) < spec.budget:
        for suggestion in poll(conn, spec, room):
            if suggestion.same_as is None:
                loss = losses[suggestion.number] = objective(suggestion.params)
                ending = "failed" if blind else "completed"
                record_told(conn, f"config{suggestion.number + 1:03d}", outcome(ending, [(1, loss + 1), (2, loss)]))
    return [row._replace(value=objective(row.params)) if blind else row for row in read_trials(conn)]


def test_the_same_table_gives_the_same_suggestions_in_any_process():
    conn = table()
    poll(conn, SPEC, 4)
    record_told(conn, "config001", Told(COMPLETE, 0.5, 10))
    record_told(conn, "config002", Told(PRUNED, 0.9, 3))
    rows = read_trials(conn)
    here = [s.params for s in ask(SPEC, rows, 3)]
    assert here == [s.params for s in ask(SPEC, rows, 3)]
    code = ("import json, sys; from tests.test_search import SPEC; from hpc_sweep.sweep.search import ask, TrialRow; "
            "rows = [TrialRow(*r) for r in json.load(sys.stdin)]; print(json.dumps([s.params for s in ask(SPEC, rows, 3)]))")
    other = subprocess.run([sys.executable, "-c", code], input=json.dumps(rows), capture_output=True, text=True,
                           cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True)
    assert json.loads(other.stdout) == here


def test_the_sampler_seed_depends_on_the_sweep_seed_and_the_trial_count():
    assert sampler_seed(1, 5) == sampler_seed(1, 5)
    assert len({sampler_seed(1, 5), sampler_seed(2, 5), sampler_seed(1, 6)}) == 3


def test_trials_are_numbered_after_the_table_and_stop_at_the_budget():
    spec = SearchSpec(method="tpe", budget=5, params=SPACE, seed=1)
    conn = table()
    assert [s.number for s in poll(conn, spec, 3)] == [0, 1, 2]
    assert [s.number for s in poll(conn, spec, 3)] == [3, 4]
    assert poll(conn, spec, 3) == []
    assert [r.state for r in read_trials(conn)] == [RUNNING] * 5


def test_suggestions_are_written_as_random_writes_them_and_fit_the_space():
    for s in ask(SPEC, [], 12):
        lr = s.params[LR]
        assert 1e-4 <= lr <= 1e-1 and float(f"{lr:.6g}") == lr
        assert isinstance(s.params["model.advanced.num_blocks"], int) and 1 <= s.params["model.advanced.num_blocks"] <= 6
        assert s.params["model.loss_type"] in ("mae", "mse")


def test_the_study_survives_being_rebuilt_from_the_table_and_learns():
    rows = run_search(SPEC)
    assert len(rows) == SPEC.budget and all(r.state == COMPLETE for r in rows)
    study = rebuild_study(SPEC, rows)
    assert [(t.number, t.params, t.value) for t in study.trials] == [(r.number, r.params, r.value) for r in rows]
    # what the table tells is what TPE learns from: after its random start, told trials land far better than
    # those of the same search told nothing (every run failed), over three seeds
    startup = search.startup_trials(SPEC.budget)
    told, blind = [], []
    for seed in (1, 2, 3):
        spec = SearchSpec(method="tpe", budget=SPEC.budget, params=SPACE, seed=seed)
        told += [r.value for r in run_search(spec)[startup:]]
        blind += [r.value for r in run_search(spec, blind=True)[startup:]]
    assert sum(told) < 0.7 * sum(blind)  # measured: about 0.45


def test_a_stopped_run_is_told_as_pruned_with_its_best_value_so_far():
    told = outcome("stopped", [(1, 3.0), (2, 2.0), (3, 2.5)])
    assert told == Told(PRUNED, 2.0, 3)
    conn = table()
    poll(conn, SPEC, 2)
    record_told(conn, "config001", told)
    record_told(conn, "config002", outcome("completed", [(1, 1.0), (2, 0.5)]))
    trials = rebuild_study(SPEC, read_trials(conn)).trials
    assert trials[0].state.name == "PRUNED" and trials[0].intermediate_values == {3: 2.0} and trials[0].value is None
    assert trials[1].state.name == "COMPLETE" and trials[1].value == 0.5


@pytest.mark.parametrize("ending, points, expected", [
    ("completed", [(1, 2.0), (2, 1.0), (3, 1.5)], Told(COMPLETE, 1.0, 3)),
    ("failed", [(1, 2.0)], Told(FAIL, None, 1)),
    ("completed", [(1, math.nan), (2, None)], Told(FAIL, None, 1)),
    ("stopped", [], Told(FAIL, None, None)),
])
def test_outcomes(ending, points, expected):
    assert outcome(ending, points) == expected


def test_a_repeated_suggestion_shares_the_earlier_config_and_its_end():
    spec = SearchSpec(method="tpe", budget=8, params=(RandomParam("a", "choice", values=[1, 2]),), seed=3)
    conn = table()
    suggestions = poll(conn, spec, 8)
    repeats = [s for s in suggestions if s.same_as is not None]
    assert repeats and all(suggestions[s.same_as].params == s.params for s in repeats)
    rows = read_trials(conn)
    owners = {r.number: r.config for r in rows}
    assert all(owners[s.number] == owners[s.same_as] for s in repeats)
    assert len({r.config for r in rows}) == 2
    record_told(conn, owners[repeats[0].number], Told(COMPLETE, 0.25, 5))
    ended = [r for r in read_trials(conn) if r.config == owners[repeats[0].number]]
    assert {(r.state, r.value) for r in ended} == {(COMPLETE, 0.25)}


def test_a_repeat_of_a_run_that_already_ended_is_recorded_with_its_outcome():
    spec = SearchSpec(method="tpe", budget=6, params=(RandomParam("a", "choice", values=[1]),), seed=3)
    conn = table()
    poll(conn, spec, 1)
    record_told(conn, "config001", Told(PRUNED, 0.75, 4))
    poll(conn, spec, 5)
    assert [(r.config, r.state, r.value, r.step) for r in read_trials(conn)] == [("config001", PRUNED, 0.75, 4)] * 6


def test_a_trial_outside_an_edited_space_is_a_user_error():
    rows = [TrialRow(0, "config001", {LR: 0.5, "model.advanced.num_blocks": 2, "model.loss_type": "mae"}, COMPLETE,
                     1.0, 10)]
    with pytest.raises(UserError, match=r"key 'search.params': search trial 0 \(config001\) does not fit"):
        rebuild_study(SPEC, rows)


def test_missing_optuna_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(UserError) as caught:
        ask(SPEC, [], 1)
    assert str(caught.value) == ("key 'search.method': [search] method = \"tpe\" needs Optuna, which is not "
                                 "installed (fix: pip install 'hpc-sweep[search]')")
