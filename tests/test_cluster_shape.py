"""The cluster-shape parsers (schedulers/cluster.py) against real captures: Slurm 22.05 from the test cluster
(tests/cluster/capture_shape.py), OpenPBS 23.06 ``i_*`` captures, Torque output from public repositories.

``PBS_CAPTURE_CHECKS`` and ``TORQUE_CAPTURE_CHECKS`` are the checks of the captures this file owns in folders whose
adapter tests keep one check per capture (test_pbspro_adapter.py, test_torque_adapter.py import them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Dict

import pytest

from hpc_sweep.schedulers.base import CommandResult
from hpc_sweep.schedulers.cluster import (
    DOWN,
    DRAINED,
    UP,
    parse_gres,
    parse_pbs_shape,
    parse_pbsnodes_json,
    parse_pbsnodes_text,
    parse_pbsnodes_xml,
    parse_qstat_text_blocks,
    parse_sinfo,
    parse_slurm_shape,
    parse_torque_shape,
    parse_tres,
    pbs_shape_argvs,
    slurm_node_state,
    slurm_shape_argvs,
    slurm_time_s,
    torque_shape_argvs,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))

import captures  # noqa: E402

SLURM = captures.fixture_folder("slurm-22.05")
OPENPBS = captures.fixture_folder("openpbs-23.06")
TORQUE = captures.fixture_folder("captured-elsewhere", "torque")

USER = "hpcsweep"
SINFO, PARTITIONS, ASSOC, QOS, CONFIG = slurm_shape_argvs(USER)


def stdout_of(argv, path: Path, returncode: int = 0) -> CommandResult:
    return CommandResult(argv=list(argv), returncode=returncode, stdout=captures.read(path), stderr="")


def slurm_shape(sinfo: str = "sinfo_shape.txt"):
    return parse_slurm_shape([
        stdout_of(SINFO, SLURM / sinfo), stdout_of(PARTITIONS, SLURM / "scontrol_show_partition.txt"),
        stdout_of(ASSOC, SLURM / "sacctmgr_assoc_shape.txt"), stdout_of(QOS, SLURM / "sacctmgr_qos_shape.txt"),
        stdout_of(CONFIG, SLURM / "scontrol_show_config.txt")])


def pbs_shape(queues: str = "i_qstat_Qf_json_with_max.txt"):
    nodes, queue, server = pbs_shape_argvs()
    return parse_pbs_shape([stdout_of(nodes, OPENPBS / "i_pbsnodes_a_json.txt"), stdout_of(queue, OPENPBS / queues),
                            stdout_of(server, OPENPBS / "i_qstat_Bf_json.txt")])


# ---------------------------------------------------------------------------------------------------------------
# Slurm


def test_slurm_partitions_nodes_and_limits_from_the_test_cluster() -> None:
    shape = slurm_shape()
    assert list(shape.partitions) == ["debug", "short", "small", "closed", "others"]
    assert shape.default_partition == "debug" and shape.partition(None).name == "debug"
    (node,) = shape.partitions["debug"].nodes
    assert (node.count, node.cpus, node.memory_mb, node.gpus("gpu"), node.state) == (1, 2, 21694, 8, UP)
    assert node.features == ("a100",)
    assert shape.partitions["short"].max_walltime_s == 30 * 60
    assert shape.partitions["debug"].max_walltime_s is None
    small = shape.partitions["small"]
    assert (small.max_cpus_per_node, small.max_mem_per_node_mb) == (1, 1000)
    assert shape.partitions["closed"].state == "down" and not shape.partitions["closed"].up
    assert shape.partitions["others"].allow_accounts == frozenset({"others"})
    assert shape.partitions["debug"].allow_accounts is None


def test_slurm_associations_qos_and_config() -> None:
    shape = slurm_shape()
    assert {a.account for a in shape.associations} == {"extra", "sweepers"}
    assert all(a.qos == {"normal", "shortq"} and a.max_per_job == {"gres/gpu": 4} for a in shape.associations)
    shortq = shape.qos["shortq"]
    assert (shortq.max_walltime_s, dict(shortq.max_per_job)) == (600, {"gres/gpu": 2})
    assert shape.version == (22, 5, 8) and shape.accounts_enforced
    assert shape.errors == ()


def test_slurm_associations_from_assoc_mgr_where_sacctmgr_was_not_asked() -> None:
    """Without a QOS in the profile the shape skips sacctmgr's association listing (0.3 s) and reads the
    associations from the limits' assoc_mgr answer: the same account and per-job limits as sacctmgr's listing of
    the same cluster (captured together), no QOS list."""
    mgr = ["scontrol", "show", "assoc_mgr", f"users={USER}", "flags=assoc"]
    assert ASSOC not in slurm_shape_argvs(USER, associations=False)
    shape = parse_slurm_shape([stdout_of(SINFO, SLURM / "sinfo_shape.txt"),
                               stdout_of(mgr, SLURM / "scontrol_assoc_mgr_limits.txt"),
                               stdout_of(CONFIG, SLURM / "scontrol_show_config.txt")])
    listed = parse_slurm_shape([stdout_of(ASSOC, SLURM / "sacctmgr_assoc_limits.txt")]).associations
    (assoc,) = shape.associations
    (same,) = listed
    assert (assoc.account, assoc.partition, assoc.max_walltime_s, dict(assoc.max_per_job)) == \
        (same.account, same.partition, same.max_walltime_s, dict(same.max_per_job)) == \
        ("sweepers", None, 5400, {"cpu": 8, "gres/gpu": 4})
    assert assoc.qos == frozenset() and same.qos == {"normal"}
    # sacctmgr's listing, where asked, wins over assoc_mgr's
    both = parse_slurm_shape([stdout_of(mgr, SLURM / "scontrol_assoc_mgr_limits.txt"),
                              stdout_of(ASSOC, SLURM / "sacctmgr_assoc_limits.txt")])
    assert both.associations[0].qos == {"normal"}


def test_slurm_drained_node_takes_no_jobs() -> None:
    shape = slurm_shape("sinfo_shape_drained.txt")
    debug = shape.partitions["debug"]
    assert debug.nodes[0].state == DRAINED and debug.nodes[0].raw_state == "drained"
    assert debug.usable_nodes == ()


def test_slurm_failed_query_is_named_and_leaves_its_part_unread() -> None:
    failed = CommandResult(argv=ASSOC, returncode=1, stdout="",
                           stderr="sacctmgr: error: Problem talking to the database: Connection refused\n")
    shape = parse_slurm_shape([stdout_of(SINFO, SLURM / "sinfo_shape.txt"), failed])
    assert shape.associations is None and shape.qos is None
    assert len(shape.errors) == 1 and "Connection refused" in shape.errors[0]
    assert shape.partitions["debug"].nodes[0].cpus == 2  # what sinfo said still counts


def test_slurm_shape_without_scontrol_uses_sinfo_limits() -> None:
    shape = parse_slurm_shape([stdout_of(SINFO, SLURM / "sinfo_shape.txt")])
    assert shape.partitions["short"].max_walltime_s == 1800
    assert shape.partitions["closed"].state == "down"
    assert shape.default_partition == "debug"


@pytest.mark.parametrize("text, seconds", [
    ("UNLIMITED", None), ("infinite", None), ("30:00", 1800), ("00:30:00", 1800), ("1-00:00:00", 86400),
    ("2-12", 2 * 86400 + 12 * 3600), ("45", 45 * 60), ("1:00:00", 3600)])
def test_slurm_times(text: str, seconds) -> None:
    assert slurm_time_s(text) == seconds


def test_gres_and_tres_spellings() -> None:
    assert parse_gres("gpu:8") == {"gpu": 8}
    assert parse_gres("gpu:a100:4(S:0-1),gpu:v100:2") == {"gpu": 6, "gpu:a100": 4, "gpu:v100": 2}
    assert parse_gres("(null)") == {}
    assert parse_tres("gres/gpu=4,cpu=8,mem=16G") == {"gres/gpu": 4, "cpu": 8, "mem": 16384}


@pytest.mark.parametrize("raw, state", [("idle", UP), ("mixed", UP), ("idle~", UP), ("drained", DRAINED),
                                        ("draining", DRAINED), ("drained*", DRAINED), ("down*", DOWN),
                                        ("allocated", UP), ("inval", DOWN)])
def test_slurm_node_states(raw: str, state: str) -> None:
    assert slurm_node_state(raw) == state


def test_sinfo_line_of_a_partition_without_nodes() -> None:
    parsed = parse_sinfo("empty|up|infinite|0|0|0|(null)|n/a|(null)\n")
    assert parsed["empty"][3] == []


# ---------------------------------------------------------------------------------------------------------------
# OpenPBS


def test_pbs_queue_with_maximums_and_its_node() -> None:
    shape = pbs_shape()
    workq = shape.partitions["workq"]
    assert workq.is_default and workq.up
    assert workq.max_walltime_s == 2 * 3600 and dict(workq.max_per_job) == {"gpu": 4}
    (node,) = workq.nodes
    assert (node.cpus, node.gpus(), node.memory_mb, node.state) == (2, 8, 24683784 // 1024, UP)


def test_pbs_queue_without_maximums() -> None:
    workq = pbs_shape("i_qstat_Qf_json.txt").partitions["workq"]
    assert workq.max_walltime_s is None and dict(workq.max_per_job) == {}


def test_pbs_queue_disabled_and_node_offline(tmp_path: Path) -> None:
    # The captured documents with the two attributes an admin changes flipped; the rest stays as captured.
    queues = json.loads(captures.read(OPENPBS / "i_qstat_Qf_json.txt"))
    queues["Queue"]["workq"]["enabled"] = "False"
    nodes = json.loads(captures.read(OPENPBS / "i_pbsnodes_a_json.txt"))
    nodes["nodes"]["vm"]["state"] = "offline"
    argvs = pbs_shape_argvs()
    shape = parse_pbs_shape([CommandResult(argvs[0], 0, json.dumps(nodes), ""),
                             CommandResult(argvs[1], 0, json.dumps(queues), "")])
    workq = shape.partitions["workq"]
    assert workq.state == "disabled" and workq.nodes[0].state == DRAINED


# ---------------------------------------------------------------------------------------------------------------
# Torque


def test_torque_pbsnodes_xml_states_and_memory(path: Path = TORQUE / "qhost_wsu_torque_pbsnodes_x_down_offline.txt"
                                                ) -> None:
    nodes = parse_pbsnodes_xml(captures.read(path))
    assert len(nodes) == 5
    states = {name: group.state for name, (_, group) in nodes.items()}
    assert states == {"node1": UP, "node14": DOWN, "node150": UP, "node163": DRAINED, "node164": UP}
    properties, node1 = nodes["node1"]
    assert properties == ("testing",) and (node1.cpus, node1.memory_mb, node1.gpus()) == (12, 24660000 // 1024, 0)


def test_torque_pbsnodes_text_with_gpus(path: Path = TORQUE / "sodalite_torque6_pbsnodes_gpu.txt") -> None:
    nodes = parse_pbsnodes_text(captures.read(path))
    assert set(nodes) == {"cloud8", "node-6.novalocal"}
    properties, cloud8 = nodes["cloud8"]
    assert properties == ("batch", "gpu")
    assert (cloud8.cpus, cloud8.gpus(), cloud8.memory_mb, cloud8.state) == (40, 1, 131583152 // 1024, UP)


def test_torque_queues_and_shape(path: Path = TORQUE / "sodalite_torque6_qstat_Q_f_1.txt") -> None:
    blocks = parse_qstat_text_blocks(captures.read(path))
    assert set(blocks) == {"gpu", "cpu"} and blocks["gpu"]["resources_default.walltime"] == "01:00:00"
    nodes_argv, queues_argv, _ = torque_shape_argvs()
    shape = parse_torque_shape([stdout_of(["pbsnodes"], TORQUE / "sodalite_torque6_pbsnodes_gpu.txt"),
                                stdout_of(queues_argv, path)])
    gpu = shape.partitions["gpu"]
    assert gpu.up and gpu.default_walltime_s == 3600 and gpu.max_walltime_s is None
    assert sum(g.count for g in gpu.nodes) == 2 and all(g.gpus() == 1 for g in gpu.nodes)
    assert shape.default_partition is None  # qstat -B was not asked


def test_torque_folded_attribute_is_joined() -> None:
    text = "Queue: batch\n    acl_users = alice,bob,caro\n\tl,dave\n    enabled = True\n"
    assert parse_qstat_text_blocks(text)["batch"]["acl_users"] == "alice,bob,carol,dave"


# ---------------------------------------------------------------------------------------------------------------
# One check per capture in folders whose adapter tests require it


def _pbs_nodes(path: Path) -> None:
    ((queue, node),) = parse_pbsnodes_json(captures.read(path)).values()
    assert queue is None and (node.cpus, node.gpus()) == (2, 8)


def _pbs_queue_no_max(path: Path) -> None:
    assert dict(pbs_shape(path.name).partitions["workq"].max_per_job) == {}


def _pbs_queue_max(path: Path) -> None:
    assert pbs_shape(path.name).partitions["workq"].max_walltime_s == 7200


def _pbs_server(path: Path) -> None:
    assert pbs_shape().partitions["workq"].is_default  # default_queue of this server document
    assert json.loads(captures.read(path))["Server"]["vm"]["default_queue"] == "workq"


def _pbs_cannot_run(path: Path) -> None:
    from hpc_sweep.schedulers.pbspro import PbsProScheduler
    from hpc_sweep.track.stuck import stuck

    (record,) = PbsProScheduler().parse_live(captures.captured_result(path))
    assert record.state == "pending" and stuck("pbspro", record.reason) is not None


def _pbs_qsub_accepted(path: Path) -> None:
    from hpc_sweep.schedulers.pbspro import PbsProScheduler

    assert PbsProScheduler().parse_submit(captures.captured_result(path, ("qsub",))) == "8.vm"


def _pbs_qsub_refused(path: Path) -> None:
    from hpc_sweep.schedulers.base import SchedulerError
    from hpc_sweep.schedulers.pbspro import PbsProScheduler

    with pytest.raises(SchedulerError) as err:
        PbsProScheduler().parse_submit(captures.captured_result(path, ("qsub",)))
    assert err.value.kind == "rejected" and "resource limits" in err.value.message


PBS_CAPTURE_CHECKS: Dict[str, Callable[[Path], None]] = {
    "openpbs-23.06/i_pbsnodes_a_json.txt": _pbs_nodes,
    "openpbs-23.06/i_qstat_Qf_json.txt": _pbs_queue_no_max,
    "openpbs-23.06/i_qstat_Qf_json_with_max.txt": _pbs_queue_max,
    "openpbs-23.06/i_qstat_Bf_json.txt": _pbs_server,
    "openpbs-23.06/i_qstat_f_json_cannot_run.txt": _pbs_cannot_run,
    "openpbs-23.06/i_qsub_ncpus_over_node.txt": _pbs_qsub_accepted,
    "openpbs-23.06/i_qsub_ngpus_over_queue_max.txt": _pbs_qsub_refused,
}

TORQUE_CAPTURE_CHECKS: Dict[str, Callable[[Path], None]] = {
    "qhost_wsu_torque_pbsnodes_x_down_offline.txt": test_torque_pbsnodes_xml_states_and_memory,
    "sodalite_torque6_pbsnodes_gpu.txt": test_torque_pbsnodes_text_with_gpus,
    "sodalite_torque6_qstat_Q_f_1.txt": test_torque_queues_and_shape,
}

