"""Early stopping on a real single-node Slurm (issue #16): a losing task is ended by cancelling only its own
task while the winner in the same array trains to its last epoch, and the room a stop frees under the user's cap
goes to a waiting config in the same poll. Each run's own log is read, not only its state."""

from __future__ import annotations

import re

import pytest
from cluster_sweeps import SLURM_SITE, by_config, hpc, make_user_sweep, status
from test_early_stop_local import logged_epochs

from hpc_sweep.state.states import UNFINISHED

pytestmark = pytest.mark.slurm

MAX_EPOCH = 10
# config001 trains well and quickly; the others barely move and are slower per epoch, so the winner always reaches
# each rung first and the rule always has a run better than theirs to compare with.
RUNNER = """#!/bin/bash
if [ "$HPCS_NAME" = config001 ]; then export DEMO_EPOCH_SLEEP=0.3; else export DEMO_EPOCH_SLEEP=1.2; fi
exec {python} {train} "$1"
"""
BODY = f"""
[grid]
"process.train.optimizer.init_learning_rate" = [3e-2, 1e-6, 2e-6, 3e-6]

[fixed]
"process.train.max_epoch" = {MAX_EPOCH}
"process.train.dataloader.train_size" = 40
"process.train.dataloader.validate_size" = 16
"model.advanced.num_blocks" = 1

[early_stop]
rule = "asha"
min_epochs = 3
reduction = 3
"""
def test_a_losing_task_is_stopped_alone_and_its_room_used_in_the_same_poll(slurm_cluster):
    cluster = slurm_cluster
    root = make_user_sweep(cluster, "estop", "{root}/run.sh {{config}}", BODY, site=SLURM_SITE,
                           scripts={"run.sh": RUNNER}, generate=True, walltime="00:05:00", max_retries=0)
    cluster.set_user_limit(2)
    first = hpc(cluster, root, "submit")
    assert first.returncode == 0, first.stderr
    assert status(cluster, root)["counts"].get("waiting") == 2, first.stdout

    outputs = []

    def final():
        result = hpc(cluster, root, "poll", "--force")
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout)
        snapshot = status(cluster, root)
        return None if any(c["state"] in UNFINISHED for c in snapshot["configs"]) else snapshot

    snapshot = cluster.wait_for(final, timeout=300, interval=1, what="every config to end")
    configs = by_config(snapshot)
    assert configs["config001"]["state"] == "completed", configs["config001"]
    assert logged_epochs(root, "config001") == list(range(1, MAX_EPOCH + 1))
    losers = ["config002", "config003", "config004"]
    for name in losers:
        assert configs[name]["state"] == "stopped", configs[name]
        epochs = logged_epochs(root, name)
        assert epochs and epochs[-1] < MAX_EPOCH, (name, epochs)
        assert configs[name]["reason"].startswith("early stop: best val "), configs[name]["reason"]
    # A stop freed room under the cap of 2 and the waiting config went in that same poll.
    assert any(re.search(r"-> stopped", out) and "submitted " in out for out in outputs), outputs

    # Slurm's own word: the stopped tasks were cancelled one by one; config001, in the same array as config002,
    # ran to its end.
    ids = {name: configs[name]["job_id"] for name in configs}
    rows = cluster.sacct_settled({i.split("_")[0] for i in ids.values()}, fmt="JobID,State", expect=4, timeout=60)
    states = {row[0]: row[1] for row in rows}
    assert states[ids["config001"]] == "COMPLETED", states
    assert ids["config001"].split("_")[0] == ids["config002"].split("_")[0]
    for name in losers:
        assert states[ids[name]].startswith("CANCELLED"), (name, states)
