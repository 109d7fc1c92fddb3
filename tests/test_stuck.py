"""Stuck is not pending (hpc_sweep/track/stuck.py): the reasons a real Slurm 22.05 gave jobs that can never start
(tests/fixtures/slurm-22.05/squeue_*.txt, read by the adapter's own live parser), a PBS "Can Never Run" comment,
and the reasons that waiting does clear."""

from __future__ import annotations

from typing import Dict

import pytest

from hpc_sweep.schedulers.cluster import DRAINED, NodeGroup, Partition
from hpc_sweep.schedulers.slurm import LIVE_FORMAT, SlurmScheduler
from hpc_sweep.track.stuck import SLURM_NEVER, stuck
from test_cluster_shape import SLURM, captures, slurm_shape

SQUEUE = ["squeue", "--me", "-r", "-h", "-o", LIVE_FORMAT]


def reasons(name: str) -> Dict[str, str]:
    """job name or id -> reason, as the poll sees them."""
    records = SlurmScheduler().parse_live(captures.stdout_result(SLURM / name, tuple(SQUEUE)))
    return {r.task_id: r.reason or "" for r in records if r.state == "pending"}


def test_every_captured_reason_of_an_impossible_job_is_stuck() -> None:
    found = reasons("squeue_invalid_qos.txt")
    expected = {"1": "PartitionConfig", "7": "PartitionTimeLimit", "8": "PartitionConfig", "9": "MaxMemPerLimit",
                "11": "InvalidQOS", "12": "InvalidQOS", "13": "AssocMaxGRESPerJob", "14": "InvalidAccount",
                "15": "BadConstraints", "16": "InvalidQOS"}
    assert {k: found[k] for k in expected} == expected
    for job, reason in found.items():
        if job == "10":
            continue  # PartitionDown: the admins bring it back; see the test below
        verdict = stuck("slurm", reason)
        assert verdict is not None, (job, reason)
        assert verdict.reason == reason and "resubmit" in verdict.fix


def test_qos_wall_and_gres_limits_before_the_qos_was_taken_away() -> None:
    found = reasons("squeue_stuck.txt")
    assert found["11"] == "QOSMaxWallDurationPerJobLimit" and found["12"] == "QOSMaxGRESPerJob"
    assert "walltime" in stuck("slurm", found["11"]).fix
    assert "fewer GPUs" in stuck("slurm", found["12"]).fix


def test_account_not_permitted_sentence() -> None:
    reason = reasons("squeue_stuck.txt")["6"]
    assert reason.startswith("Job's account not permitted to use this partition (others allows others")
    assert "account or partition" in stuck("slurm", reason).fix


def test_partition_down_can_clear() -> None:
    assert reasons("squeue_stuck.txt")["10"] == "PartitionDown"
    assert stuck("slurm", "PartitionDown") is None


def test_req_node_not_avail_is_stuck_only_when_every_node_is_down_or_drained() -> None:
    reason = reasons("squeue_drained.txt")["17"]
    assert reason == "ReqNodeNotAvail, UnavailableNodes:vm"
    drained = slurm_shape("sinfo_shape_drained.txt").partitions["debug"]
    verdict = stuck("slurm", reason, drained)
    assert verdict is not None and "every node of partition debug is down or drained" in verdict.fix
    assert stuck("slurm", reason, slurm_shape().partitions["debug"]) is None
    assert stuck("slurm", reason) is None  # the partition unknown: do not guess


@pytest.mark.parametrize("reason", ["Priority", "Resources", "None", "", None, "JobArrayTaskLimit",
                                    "QOSMaxJobsPerUserLimit", "AssocMaxJobsLimit", "Dependency", "BeginTime",
                                    "AssocGrpGRES", "JobHeldUser"])
def test_reasons_that_waiting_clears(reason) -> None:
    assert stuck("slurm", reason) is None


def test_table_names_only_real_slurm_reasons() -> None:
    # Each word is one of job_state_reason_string's (Slurm 22.05 src/common/slurm_protocol_defs.c).
    assert all(word.isidentifier() and " " not in word for word in SLURM_NEVER)


def test_pbs_can_never_run_comment() -> None:
    from hpc_sweep.schedulers.pbspro import PbsProScheduler
    from test_cluster_shape import OPENPBS

    (record,) = PbsProScheduler().parse_live(captures.captured_result(OPENPBS / "i_qstat_f_json_cannot_run.txt"))
    assert record.reason == "Can Never Run: Insufficient amount of resource: ncpus (R: 4 A: 2 T: 2)"
    assert stuck("pbspro", record.reason) is not None
    assert stuck("pbspro", "Not Running: Insufficient amount of resource: ncpus") is None


def test_torque_node_comment_is_stuck_only_when_the_nodes_cannot_hold_the_job() -> None:
    from hpc_sweep.schedulers.torque import TorqueScheduler
    from test_cluster_shape import TORQUE

    records = TorqueScheduler().parse_live(captures.stdout_result(TORQUE / "boliqq07_torque6_qstat_x_xmldecl_R_Q.txt",
                                                                  ("qstat", "-x", "-t")))
    (comment,) = [r.reason for r in records if r.state == "pending"]
    assert comment == "Not Running: Not enough of the right type of nodes are available"
    assert stuck("torque", comment) is None
    assert stuck("torque", comment, fits=False) is not None
    offline = Partition(name="batch", nodes=(NodeGroup(count=2, cpus=8, memory_mb=1, state=DRAINED),))
    assert stuck("torque", comment, offline) is not None


def test_a_packed_task_is_judged_by_its_own_request_not_one_configs() -> None:
    """The captured node has 2 CPUs and 8 GPUs. One 1-GPU config with 1 CPU per GPU fits; a task packing three of
    them on its GPU asks for 3 CPUs, a node task (8 GPUs, one run each) for 8: no node can ever hold either, so
    Torque's node comment on such a pending task is stuck, as the fit check refused it at submit."""
    from hpc_sweep.submit.fit import Ask
    from hpc_sweep.submit.packing import Packing
    from hpc_sweep.track.stuck import task_fits

    asked = []

    def ask(gpus: int, device_type: str, walltime_s: int, runs_per_gpu: int) -> Ask:
        asked.append((gpus, device_type, walltime_s, runs_per_gpu))
        return Ask(gpus=gpus, walltime_s=walltime_s, runs_per_gpu=runs_per_gpu, cpus_per_gpu=1, mem_per_gpu_mb=1024)

    comment = "Not Running: Not enough of the right type of nodes are available"
    single = task_fits(slurm_shape(), ask, Packing(), 3600)
    assert single(1, "cuda:1", None) is True and stuck("torque", comment, fits=True) is None
    per_gpu = task_fits(slurm_shape(), ask, Packing(runs_per_gpu=3), 3600)
    assert per_gpu(1, "cuda:1", None) is False
    node = task_fits(slurm_shape(), ask, Packing(node=True, gpus_per_node=8), 3600)
    assert node(1, "cuda:1", 1800) is False
    assert stuck("torque", comment, fits=per_gpu(1, "cuda:1", None)) is not None
    assert asked == [(1, "cuda", 3600, 1), (1, "cuda", 3600, 3), (8, "cuda", 1800, 1)]
    assert per_gpu(0, "cpu:0", None) is True  # CPU configs are never packed: their own request
