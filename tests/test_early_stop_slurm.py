"""Early stopping on a real single-node Slurm (issue #16): a losing task is ended by cancelling only its own
task while the winner in the same array trains to its last epoch, and the room a stop frees under the user's cap
goes to a waiting config in the same poll. Each run's own log is read, not only its state."""

from __future__ import annotations

import json
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


def test_a_loser_in_a_packed_task_is_stopped_alone_and_the_task_goes_on(slurm_cluster):
    """#16 item 5: three configs share one task (runs_per_gpu = 3); the two losers are asked to stop (their own
    process groups), the task is never cancelled, and the winner trains to its last epoch in it."""
    cluster = slurm_cluster
    site = {**SLURM_SITE, "gpu_request": "gres", "cpus_per_gpu": 1, "mem_per_gpu": "50M", "runs_per_gpu": 3}
    body = BODY.replace('[fixed]\n', '[fixed]\n"system.device" = "gpu*8:0"\n').replace(", 3e-6]", "]")
    # The winner is slower here than above, so it still runs when the losers are judged (with it done, the task
    # would hold only losers and be cancelled whole).
    runner = RUNNER.replace("DEMO_EPOCH_SLEEP=0.3", "DEMO_EPOCH_SLEEP=0.9")
    root = make_user_sweep(cluster, "estop-packed", "{root}/run.sh {{config}}", body, site=site,
                           scripts={"run.sh": runner}, generate=True, walltime="00:05:00", max_retries=0)
    first = hpc(cluster, root, "submit")
    assert first.returncode == 0, first.stderr
    assert len(cluster.squeue_user()) == 1, first.stdout  # the three configs went as one task

    def final():
        result = hpc(cluster, root, "poll", "--force")
        assert result.returncode == 0, result.stdout + result.stderr
        snapshot = status(cluster, root)
        return None if any(c["state"] in UNFINISHED for c in snapshot["configs"]) else snapshot

    configs = by_config(cluster.wait_for(final, timeout=300, interval=1, what="every config to end"))
    assert configs["config001"]["state"] == "completed", configs["config001"]
    assert logged_epochs(root, "config001") == list(range(1, MAX_EPOCH + 1))
    for name in ("config002", "config003"):
        assert configs[name]["state"] == "stopped", configs[name]
        epochs = logged_epochs(root, name)
        assert epochs and epochs[-1] < MAX_EPOCH, (name, epochs)
        assert configs[name]["job_id"] == configs["config001"]["job_id"]  # the same task
    # Slurm's own word: the shared task was never cancelled; it ended when its winner did.
    job = configs["config001"]["job_id"]
    rows = cluster.sacct_settled({job.split("_")[0]}, fmt="JobID,State", expect=1, timeout=60)
    assert {row[0]: row[1] for row in rows}[job] == "COMPLETED", rows
    for name in ("config002", "config003"):  # each loser was asked to stop, and its own run ended on TERM
        stop = json.loads((root / ".hpc_sweep" / "markers" / f"{name}.1.stop").read_text())
        assert stop["state"] == "stopped", stop
