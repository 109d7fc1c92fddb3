"""Adaptive search end to end on the local backend (issue #16 item 2): ``[search] method = "tpe"`` with
``[early_stop]``, the CLI, the detached runner and the demo trainer. Configs are asked as room appears, written as
the next configNNN holding exactly the parameters recorded for their trial, never past the budget; outcomes are
told from the runs' own curves (stopped runs as pruned); the sampler's state is the sweep's SQLite and nothing
else. Plus the one-line refusals: a grid beside [search], and Optuna missing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from test_early_stop_local import logged_epochs, poll_until_final
from test_local_runner import BASE, TINY, Sweep, base_env, trainer_command

from hpc_sweep.common.formats import tomllib

LR = "process.train.optimizer.init_learning_rate"
BUDGET = 6
MAX_EPOCH = 9


def search_sweep(tmp_path: Path, extra: dict, env: dict) -> Sweep:
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text(BASE.read_text())
    (root / "inputs").mkdir()
    (root / "site.toml").write_text(tomli_w.dumps({"scheduler": "local", "cpu_slots": 2, "poll_min_interval": "1s"}))
    data = {"sweep": {"name": "search-test", "program": "deeph", "base": "configs/.base_config.toml",
                      "command": trainer_command(0.2), "site": "site.toml", "walltime": "5m"},
            "fixed": {**TINY, "process.train.max_epoch": MAX_EPOCH}, **extra}
    (root / "sweep.toml").write_text(tomli_w.dumps(data))
    return Sweep(root, env)


SEARCH = {"early_stop": {"rule": "asha", "min_epochs": 3, "reduction": 3},
          "search": {"method": "tpe", "budget": BUDGET, "seed": 3,
                     "params": {LR: {"dist": "loguniform", "low": 1e-6, "high": 1e-1}}}}


def trials(root: Path) -> list:
    conn = sqlite3.connect(f"file:{root / '.hpc_sweep' / 'state.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT number, config, params, state, value FROM search_trials ORDER BY number").fetchall()
    finally:
        conn.close()


def test_a_search_asks_as_room_appears_and_learns_from_the_runs(tmp_path: Path, sweeps) -> None:
    pytest.importorskip("optuna")
    sweep = search_sweep(tmp_path, SEARCH, base_env())
    sweeps.append(sweep)
    out = sweep.cli("generate", str(sweep.root)).stdout
    assert "2 configs in" in out, out  # as many as the two slots run at once, not the whole budget
    sweep.cli("submit", str(sweep.root))
    states = poll_until_final(sweep, 150)
    while len(states) < BUDGET:  # a poll that ended the last runs asks for more
        states = poll_until_final(sweep, 150)

    assert sorted(states) == [f"config{n:03d}" for n in range(1, BUDGET + 1)]
    recorded = trials(sweep.root)
    assert [row[0] for row in recorded] == list(range(BUDGET))
    for number, config, params, state, value in recorded:
        written = tomllib.loads((sweep.root / "configs" / f"{config}.toml").read_text())
        assert written["process"]["train"]["optimizer"]["init_learning_rate"] == json.loads(params)[LR]
        ended = states[config]["state"]
        assert (ended, state) in {("completed", "complete"), ("stopped", "pruned")}, (config, ended, state)
        if ended == "completed":  # told from the run's own curve: its best value, as the status read it
            assert value == pytest.approx(states[config]["best_val_loss"], rel=1e-6)
        epochs = logged_epochs(sweep, config)
        assert epochs[-1] == MAX_EPOCH if ended == "completed" else epochs[-1] < MAX_EPOCH
    # The sampler's state is the sweep's SQLite: no study file of Optuna's anywhere in the sweep.
    assert not [p for p in sweep.root.rglob("*") if p.suffix in (".db", ".sqlite", ".log") and "optuna" in p.name]
    # The budget holds: a later poll asks for nothing more.
    sweep.cli("poll", str(sweep.root), "--force")
    assert len(trials(sweep.root)) == BUDGET and not (sweep.root / "configs" / "config007.toml").exists()

    # A stopped config brought back by hand: its trial runs again and is told how the new run ended.
    stopped = sorted(name for name, c in states.items() if c["state"] == "stopped")
    assert stopped, states
    sweep.cli("resubmit", str(sweep.root), stopped[0])
    states = poll_until_final(sweep, 150)
    assert states[stopped[0]]["state"] == "completed" and logged_epochs(sweep, stopped[0])[-1] == MAX_EPOCH
    told = {config: (state, value) for _, config, _, state, value in trials(sweep.root)}
    assert told[stopped[0]] == ("complete", pytest.approx(states[stopped[0]]["best_val_loss"], rel=1e-6))
    assert len(trials(sweep.root)) == BUDGET


def test_a_grid_beside_search_is_refused_in_one_line(tmp_path: Path) -> None:
    sweep = search_sweep(tmp_path, {**SEARCH, "grid": {"process.train.dataloader.batch_size": [8, 16]}}, base_env())
    done = sweep.cli("generate", str(sweep.root), check=False)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "sweep.toml" in done.stderr and "[grid]" in done.stderr and "Traceback" not in done.stderr
    assert not (sweep.root / ".hpc_sweep").exists()


def test_search_without_optuna_is_refused_in_one_line(tmp_path: Path) -> None:
    hide = tmp_path / "no-optuna"
    (hide / "optuna").mkdir(parents=True)
    (hide / "optuna" / "__init__.py").write_text("raise ImportError('No module named optuna')\n")
    sweep = search_sweep(tmp_path, SEARCH, base_env(PYTHONPATH=str(hide)))
    done = sweep.cli("generate", str(sweep.root), check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "needs Optuna" in done.stderr and "pip install 'hpc-sweep[search]'" in done.stderr
    assert not list((sweep.root / "configs").glob("config*")) and not (sweep.root / ".hpc_sweep").exists()
