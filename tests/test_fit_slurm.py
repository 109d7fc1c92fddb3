"""Issue #15 on the real single-node Slurm: shapes no node can hold are refused at submit (CPUs, memory, GPUs,
walltime, a missing partition, a drained node) with one line, exit 2 and nothing queued; a shape that fits runs
whole with the CPUs and memory per GPU derived from the node; a job stuck on PartitionConfig shows as stuck with its
fix; doctor passes on a good profile and fails with the fixes on a bad one.

The node's size comes from the cluster object (``cpus``, ``real_memory``, NUM_GPUS), never from this file.
"""

from __future__ import annotations

import json
from typing import Optional

import pytest
from cluster_sweeps import SLURM_SITE, TINY, by_config, hpc, make_user_sweep, poll_until_final, read_state, status
from slurm_cluster import NUM_GPUS, PARTITION

pytestmark = pytest.mark.slurm

SITE = {k: v for k, v in SLURM_SITE.items() if k not in ("cpus_per_task", "mem")}  # per GPU: from the node
TRAIN = "{python} {train} {{config}}"


def sweep(cluster, name: str, device: str = "gpu*1", walltime: str = "00:05:00", site: Optional[dict] = None,
          generate: bool = True):
    body = f'[grid]\n"process.train.optimizer.init_learning_rate" = [0.01, 0.001]\n\n[fixed]\n' \
           f'"system.device" = "{device}"\n' + "".join(f'"{k}" = {json.dumps(v)}\n' for k, v in TINY.items())
    return make_user_sweep(cluster, name, TRAIN, body, site={**SITE, **(site or {})}, walltime=walltime,
                           generate=generate)


def refused(cluster, root) -> str:
    """``submit`` refused with one line (exit 2), and nothing of it queued or recorded."""
    result = hpc(cluster, root, "submit")
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("hpc-sweep: error: nothing submitted: "), line
    assert cluster.squeue_user() == []
    assert read_state(root, "SELECT COUNT(*) FROM submissions") == [(0,)]
    assert {state for (state,) in read_state(root, "SELECT state FROM configs")} == {"generated"}
    return line


def test_four_cpus_per_gpu_refused_with_the_nodes_cpu_count_then_the_derived_default_runs(slurm_cluster):
    """Done when of #15: a profile asking for more CPUs per GPU than the node has per GPU is refused at submit
    with the node's CPU count in the message; without the key, the node's CPUs per GPU are asked and run."""
    cluster = slurm_cluster
    per_gpu = cluster.cpus // NUM_GPUS
    root = sweep(cluster, "cpus", device=f"gpu*{NUM_GPUS}", site={"cpus_per_gpu": per_gpu * 2})
    line = refused(cluster, root)
    assert f"partition {PARTITION}: no node has {per_gpu * 2 * NUM_GPUS} CPUs for one task (nodes have " \
           f"{cluster.cpus} CPUs, {cluster.real_memory}M, {NUM_GPUS} gpu)" in line, line
    assert f"set cpus_per_gpu = {per_gpu} or fewer in {root / 'site.toml'}" in line, line

    (root / "site.toml").write_text((root / "site.toml").read_text().replace(f"cpus_per_gpu = {per_gpu * 2}\n", ""))
    dry = hpc(cluster, root, "submit", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    memory = cluster.real_memory  # all eight GPUs of the node: all of its memory
    assert f"{per_gpu * NUM_GPUS} CPUs and {memory}M per task" in dry.stdout, dry.stdout
    assert f"cpus_per_gpu: {per_gpu} from the nodes of partition {PARTITION}" in dry.stdout, dry.stdout
    result = hpc(cluster, root, "submit")
    assert result.returncode == 0, result.stderr
    (script,) = root.glob("script/*.sh")
    assert f"#SBATCH --cpus-per-task={per_gpu * NUM_GPUS}\n" in script.read_text()
    final = by_config(poll_until_final(cluster, root))
    for record in final.values():  # the trainer ran whole: its epoch logged, exit 0 with evidence
        assert record["state"] == "completed" and record["epoch"] == 1, record


@pytest.mark.parametrize("case", ["memory", "gpus", "walltime", "partition"])
def test_shapes_no_node_or_partition_can_hold_are_refused(slurm_cluster, case):
    cluster = slurm_cluster
    cluster.add_partition("short", MaxTime="00:30:00")
    site, device, walltime = {}, "gpu*1", "00:05:00"
    if case == "memory":
        site = {"mem_per_gpu": f"{cluster.real_memory + 1024}M"}
    elif case == "gpus":
        device = f"gpu*{NUM_GPUS + 1}"
    elif case == "walltime":
        site, walltime = {"partition": "short"}, "01:00:00"
    else:
        site = {"partition": "nosuch"}
    line = refused(cluster, sweep(cluster, f"no-{case}", device=device, walltime=walltime, site=site))
    expected = {
        "memory": f"no node has {cluster.real_memory + 1024}M for one task (nodes have {cluster.cpus} CPUs",
        "gpus": f"no node has {NUM_GPUS + 1} gpu for one task",
        "walltime": 'partition short allows at most 00:30:00 (asked 01:00:00); set walltime = "00:30:00" or less',
        "partition": "partition nosuch does not exist (partitions: ",
    }[case]
    assert expected in line, line


def test_a_drained_node_refuses_then_resumed_it_submits(slurm_cluster):
    cluster = slurm_cluster
    root = sweep(cluster, "drained")
    cluster.drain_node()
    line = refused(cluster, root)
    assert f"partition {PARTITION}: no node takes jobs (1 drained" in line, line
    cluster.resume_node()
    # The refusal's shape was asked fresh: the next submit sees the node back (a shape found unfit is asked again).
    result = hpc(cluster, root, "submit")
    assert result.returncode == 0, result.stderr
    assert len(cluster.squeue_user()) == 2


def test_a_job_stuck_on_partition_config_shows_as_stuck_with_its_fix(slurm_cluster):
    """Submitted into a partition it fits while a job by hand holds every GPU of the node; the partition then
    shrinks below the request (MaxCPUsPerNode): Slurm keeps it PENDING with reason PartitionConfig, forever."""
    cluster = slurm_cluster
    cluster.add_partition("tight")
    blocker = cluster.run_as_user(["sbatch", "--parsable", f"--gres=gpu:{NUM_GPUS}", "--wrap", "sleep 600"])
    assert blocker.returncode == 0, blocker.stderr
    cluster.wait_for(lambda: cluster.squeue_user("%T") == ["RUNNING"], 60, what="the blocking job to run")
    root = sweep(cluster, "stuck", site={"partition": "tight", "cpus_per_gpu": 2})
    result = hpc(cluster, root, "submit")
    assert result.returncode == 0, result.stderr
    cluster.update_partition("tight", MaxCPUsPerNode="1")
    ours = read_state(root, "SELECT scheduler_id FROM submissions")[0][0]
    cluster.wait_for(lambda: [line for line in cluster.squeue_user("%F|%r") if line.startswith(f"{ours}|")] ==
                     [f"{ours}|PartitionConfig"] * 2, 60, what="the reason PartitionConfig")
    polled = hpc(cluster, root, "poll", "--force")
    assert polled.returncode == 0, polled.stderr
    (said,) = [line for line in polled.stdout.splitlines() if "stuck" in line]
    assert said.startswith("config001, config002: stuck, pending for PartitionConfig: ") and "doctor" in said
    snapshot = status(cluster, root)
    assert snapshot["stuck"] == 2
    for record in snapshot["configs"]:
        assert record["state"] == "pending" and record["stuck"], record
        assert record["reason"].startswith("PartitionConfig (stuck: ") and "cancel and resubmit" in record["reason"]
    table = hpc(cluster, root, "status").stdout
    assert "pending 2 (2 stuck)" in table and "stuck, waiting will not start them" in table
    again = hpc(cluster, root, "poll", "--force")
    assert "stuck" not in again.stdout  # said once


def test_doctor_passes_on_a_good_profile_and_fails_with_fixes_on_a_bad_one(slurm_cluster):
    cluster = slurm_cluster
    root = sweep(cluster, "doctor", generate=False)
    good = hpc(cluster, root, "doctor")
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"OK    partition    {PARTITION} (the default) is up, 1 of 1 nodes take jobs" in good.stdout
    assert f"fits {PARTITION}: {cluster.cpus // NUM_GPUS} CPUs" in good.stdout, good.stdout
    assert "OK    setup" in good.stdout and "FAIL" not in good.stdout

    (root / "site.toml").write_text((root / "site.toml").read_text() + 'partition = "nosuch"\n'
                                    'setup = ["module load cuda/12.4"]\n')
    bad = hpc(cluster, root, "doctor")
    assert bad.returncode == 1
    failed = [line for line in bad.stdout.splitlines() if line.startswith("FAIL")]
    assert any(line.startswith("FAIL  partition    partition nosuch does not exist") for line in failed), failed
    assert any("module: command not found" in line for line in failed), failed
    assert not (root / ".hpc_sweep").exists()  # doctor wrote nothing


def test_an_account_that_is_not_yours_and_an_association_limit_are_refused(slurm_cluster):
    """Without a QOS in the profile the user's associations come from slurmctld's assoc_mgr (no sacctmgr call at
    submit): an account the user has no association with is refused naming theirs, and a request above the
    association's per-job GPU limit is refused naming it."""
    cluster = slurm_cluster
    root = sweep(cluster, "acct", site={"account": "nosuch"})
    line = refused(cluster, root)
    assert "account nosuch is not yours" in line and "sweepers" in line, line
    cluster.run_as_root(["sacctmgr", "-i", "modify", "user", cluster.user, "set", "MaxTRES=gres/gpu=2"], check=True)
    try:
        root = sweep(cluster, "assoc-gpus", device="gpu*4")
        line = refused(cluster, root)
        assert "your association (account sweepers) allows at most 2 gres/gpu per job (asked 4)" in line, line
    finally:
        cluster.run_as_root(["sacctmgr", "-i", "modify", "user", cluster.user, "set", "MaxTRES=gres/gpu=-1"],
                            check=True)
