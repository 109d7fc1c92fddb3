"""The fit check (hpc_sweep/submit/fit.py) on the captured shapes: what fits is left alone, what no node, partition,
QOS or association can ever hold is refused with the partition, what its nodes have and the key to change; CPUs
and memory per GPU come from the nodes where the profile sets none."""

from __future__ import annotations

from typing import List

import pytest

from hpc_sweep.submit.fit import FALLBACK_CPUS_PER_GPU, Ask, check, per_gpu_from_nodes
from hpc_sweep.schedulers.cluster import ClusterShape, NodeGroup, Partition
from test_cluster_shape import pbs_shape, slurm_shape

HOUR = 3600
NODE_MB = 21694  # RealMemory of the captured test node: 2 CPUs, 8 GPUs


def keys(ask: Ask, shape=None) -> List[str]:
    return [p.key for p in check(ask, shape or slurm_shape()).problems]


def test_issue_15_four_cpus_per_gpu_on_the_two_cpu_node_is_refused_with_the_node_count() -> None:
    fit = check(Ask(gpus=1, walltime_s=HOUR, cpus_per_gpu=4, mem_per_gpu_mb=16384,
                    where={"cpus_per_gpu": "site.toml"}), slurm_shape())
    (problem,) = fit.problems
    assert problem.key == "cpus_per_gpu"
    assert problem.message == ("partition debug: no node has 4 CPUs for one task (nodes have 2 CPUs, 21694M, 8 gpu); "
                               "set cpus_per_gpu = 2 or fewer in site.toml")


def test_defaults_come_from_the_nodes_where_the_profile_sets_none() -> None:
    fit = check(Ask(gpus=4, walltime_s=HOUR), slurm_shape())
    assert fit.ok, fit.problems
    assert (fit.cpus, fit.mem_mb) == (1, NODE_MB * 4 // 8)  # 2 CPUs / 8 GPUs * 4; 21694M / 8 * 4
    assert len(fit.defaults) == 2 and all("partition debug" in line for line in fit.defaults)
    assert "cpus_per_gpu: 0.25" in fit.defaults[0] and "2 CPUs, 21694M, 8 gpu" in fit.defaults[0]


def test_set_values_are_kept_and_not_reported_as_derived() -> None:
    fit = check(Ask(gpus=2, walltime_s=HOUR, cpus_per_gpu=1, mem_per_gpu_mb=1024), slurm_shape())
    assert fit.ok and (fit.cpus, fit.mem_mb, fit.defaults) == (2, 2048, ())


def test_whole_node_fits_and_one_gpu_more_does_not() -> None:
    # The association allows 4 GPUs per job; the node has 8.
    assert keys(Ask(gpus=4, walltime_s=HOUR)) == []
    assert keys(Ask(gpus=9, walltime_s=HOUR)) == ["gpus", "gpus"]  # node and association


def test_memory_above_the_node() -> None:
    fit = check(Ask(gpus=1, walltime_s=HOUR, cpus_per_gpu=1, mem_per_gpu_mb=NODE_MB + 1,
                    where={"mem_per_gpu": "sweep.toml [sweep]"}), slurm_shape())
    (problem,) = fit.problems
    assert problem.key == "mem_per_gpu" and f"no node has {NODE_MB + 1}M" in problem.message
    assert problem.message.endswith(f'set mem_per_gpu = "{NODE_MB}M" or less in sweep.toml [sweep]')


def test_walltime_above_the_partition_limit() -> None:
    (problem,) = check(Ask(gpus=1, walltime_s=2 * HOUR, partition="short"), slurm_shape()).problems
    assert problem.key == "walltime"
    assert "partition short allows at most 00:30:00 (asked 02:00:00)" in problem.message


def test_missing_partition_names_the_known_ones() -> None:
    (problem,) = check(Ask(gpus=1, walltime_s=HOUR, partition="gpu"), slurm_shape()).problems
    assert problem.key == "partition"
    assert "partition gpu does not exist (partitions: debug, short, small, closed, others)" in problem.message


def test_down_partition_and_drained_nodes() -> None:
    assert keys(Ask(gpus=1, walltime_s=HOUR, partition="closed")) == ["partition"]
    (problem,) = check(Ask(gpus=1, walltime_s=HOUR), slurm_shape("sinfo_shape_drained.txt")).problems
    assert problem.key == "partition" and "no node takes jobs (1 drained)" in problem.message


def test_partition_caps_per_node() -> None:
    (problem,) = check(Ask(gpus=1, walltime_s=HOUR, cpus_per_gpu=2, mem_per_gpu_mb=500, partition="small"),
                       slurm_shape()).problems
    assert problem.key == "cpus_per_gpu" and "MaxCPUsPerNode=1" in problem.message
    (problem,) = check(Ask(gpus=1, walltime_s=HOUR, cpus_per_gpu=1, mem_per_gpu_mb=2000, partition="small"),
                       slurm_shape()).problems
    assert problem.key == "mem_per_gpu" and "MaxMemPerNode=1000M" in problem.message


def test_account_the_partition_does_not_take() -> None:
    (problem,) = check(Ask(gpus=1, walltime_s=HOUR, partition="others"), slurm_shape()).problems
    assert problem.key == "account" and "takes jobs of accounts others only" in problem.message


def test_unknown_account_and_qos() -> None:
    assert keys(Ask(gpus=1, walltime_s=HOUR, account="nosuch")) == ["account"]
    assert keys(Ask(gpus=1, walltime_s=HOUR, qos="nosuch")) == ["qos"]
    assert keys(Ask(gpus=1, walltime_s=HOUR, account="sweepers", qos="shortq", )) == ["walltime"]


def test_qos_and_association_per_job_limits() -> None:
    problems = check(Ask(gpus=3, walltime_s=20 * 60, qos="shortq"), slurm_shape()).problems
    messages = [p.message for p in problems]
    assert [p.key for p in problems] == ["walltime", "gpus"]
    assert "QOS shortq allows at most 00:10:00" in messages[0]
    assert "QOS shortq allows at most 2 gres/gpu per job (asked 3)" in messages[1]
    (problem,) = check(Ask(gpus=6, walltime_s=HOUR), slurm_shape()).problems
    assert "allows at most 4 gres/gpu per job (asked 6)" in problem.message


def test_unread_associations_are_not_checked() -> None:
    shape = slurm_shape()
    blind = ClusterShape(scheduler="slurm", partitions=shape.partitions, associations=None, qos=None)
    assert keys(Ask(gpus=6, walltime_s=HOUR, account="nosuch", qos="nosuch"), blind) == []


def test_pbs_queue_maximum_and_node() -> None:
    assert keys(Ask(gpus=4, walltime_s=HOUR), pbs_shape()) == []
    (problem,) = check(Ask(gpus=6, walltime_s=HOUR), pbs_shape()).problems
    assert problem.message.startswith("queue workq allows at most 4 GPUs per job (asked 6)")
    (problem,) = check(Ask(gpus=1, walltime_s=3 * HOUR), pbs_shape()).problems
    assert problem.key == "walltime" and "queue workq allows at most 02:00:00" in problem.message
    # The capture i_qstat_f_json_cannot_run.txt: ncpus=4 on the 2-CPU node, accepted by qsub, never runs.
    (problem,) = check(Ask(gpus=1, walltime_s=60, cpus_per_gpu=4), pbs_shape("i_qstat_Qf_json.txt")).problems
    assert problem.message.startswith("queue workq: no node has 4 CPUs for one task (nodes have 2 CPUs")


def test_cpu_only_task_uses_cpus_per_task() -> None:
    (problem,) = check(Ask(gpus=0, walltime_s=HOUR, cpus_per_task=3, mem_mb=100), slurm_shape()).problems
    assert problem.key == "cpus_per_task" and "set cpus_per_task = 2 or fewer" in problem.message


def test_heterogeneous_nodes_defaults_fit_every_gpu_node() -> None:
    part = Partition(name="mixed", nodes=(
        NodeGroup(count=4, cpus=64, memory_mb=512000, gres={"gpu": 4}),
        NodeGroup(count=2, cpus=32, memory_mb=256000, gres={"gpu": 4}),
        NodeGroup(count=8, cpus=128, memory_mb=256000, gres={})))
    cpus, memory, node = per_gpu_from_nodes(part)
    assert (cpus, memory) == (8, 64000) and node.cpus == 32
    shape = ClusterShape(scheduler="slurm", partitions={"mixed": part})
    fit = check(Ask(gpus=4, walltime_s=HOUR, partition="mixed"), shape)
    assert fit.ok and (fit.cpus, fit.mem_mb) == (32, 256000)


def test_no_gpu_nodes_fall_back_to_the_built_in_default() -> None:
    shape = ClusterShape(scheduler="slurm", partitions={"cpu": Partition(
        name="cpu", is_default=True, nodes=(NodeGroup(count=1, cpus=16, memory_mb=64000),))})
    fit = check(Ask(gpus=1, walltime_s=HOUR), shape)
    assert fit.cpus == FALLBACK_CPUS_PER_GPU and "no gpu nodes seen" in fit.defaults[0]
    assert [p.key for p in fit.problems] == ["gpus"]


@pytest.mark.parametrize("gpu_type, ok", [("a100", True), ("v100", False)])
def test_typed_gpus(gpu_type: str, ok: bool) -> None:
    shape = ClusterShape(scheduler="slurm", partitions={"g": Partition(
        name="g", is_default=True, nodes=(NodeGroup(count=1, cpus=32, memory_mb=256000,
                                                    gres={"gpu": 4, "gpu:a100": 4}),))})
    assert check(Ask(gpus=2, walltime_s=HOUR, gpu_type=gpu_type), shape).ok is ok
