"""Adaptive search (issue #16 item 2) on the real test Slurm: ``[search] method = "tpe"`` asks configs as room
appears under the user's cap, each written as the next configNNN holding exactly its trial's parameters and run
whole by Slurm; each run's outcome is told from its own log; the budget holds. hpc-sweep runs as the cluster's
test user, whose venv has the search extra (Optuna)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from cluster_sweeps import SLURM_SITE, by_config, hpc, make_user_sweep, status
from test_early_stop_local import logged_epochs

from hpc_sweep.common.formats import tomllib
from hpc_sweep.state.states import UNFINISHED

pytestmark = pytest.mark.slurm

LR = "process.train.optimizer.init_learning_rate"
BUDGET = 4
MAX_EPOCH = 3
BODY = f"""
[fixed]
"process.train.max_epoch" = {MAX_EPOCH}
"process.train.dataloader.train_size" = 40
"process.train.dataloader.validate_size" = 16
"model.advanced.num_blocks" = 1

[search]
method = "tpe"
budget = {BUDGET}
seed = 7

[search.params]
"{LR}" = {{ dist = "loguniform", low = 1e-4, high = 1e-1 }}
"""


def test_a_tpe_search_asks_configs_as_room_appears_and_runs_each_whole(slurm_cluster):
    cluster = slurm_cluster
    # The cluster installs the search extra into the test user's venv: without Optuna this test has nothing to do.
    optuna = cluster.run_as_user([str(cluster.user_bin / "python"), "-c", "import optuna"])
    assert optuna.returncode == 0, f"the test user's venv has no Optuna: {optuna.stderr[-300:]}"
    root = make_user_sweep(cluster, "search", "DEMO_EPOCH_SLEEP=0 {python} {train} {{config}}", BODY,
                           site=SLURM_SITE, generate=True, walltime="00:05:00", max_retries=0)
    cluster.set_user_limit(2)
    first = hpc(cluster, root, "submit")
    assert first.returncode == 0, first.stderr

    def done():
        result = hpc(cluster, root, "poll", "--force")
        assert result.returncode == 0, result.stdout + result.stderr
        snapshot = status(cluster, root)
        ended = snapshot["configs"] and not any(c["state"] in UNFINISHED for c in snapshot["configs"])
        return snapshot if ended and len(snapshot["configs"]) == BUDGET else None

    configs = by_config(cluster.wait_for(done, timeout=300, interval=1, what="the search's budget to run"))
    assert sorted(configs) == [f"config{n:03d}" for n in range(1, BUDGET + 1)]
    conn = sqlite3.connect(f"file:{root / '.hpc_sweep' / 'state.db'}?mode=ro", uri=True)
    try:
        trials = conn.execute("SELECT number, config, params, state, value FROM search_trials ORDER BY number").fetchall()
    finally:
        conn.close()
    assert [row[0] for row in trials] == list(range(BUDGET))
    rates = set()
    for _, config, params, state, value in trials:
        written = tomllib.loads((root / "configs" / f"{config}.toml").read_text())
        rate = written["process"]["train"]["optimizer"]["init_learning_rate"]
        assert rate == json.loads(params)[LR] and 1e-4 <= rate <= 1e-1
        rates.add(rate)
        assert configs[config]["state"] == "completed" and state == "complete", (config, configs[config], state)
        assert logged_epochs(root, config) == list(range(1, MAX_EPOCH + 1))  # Slurm ran it whole
        assert value == pytest.approx(configs[config]["best_val_loss"], rel=1e-6)
    assert len(rates) == BUDGET
    assert hpc(cluster, root, "poll", "--force").returncode == 0  # the budget holds: nothing more is asked
    assert not (root / "configs" / f"config{BUDGET + 1:03d}.toml").exists()
