"""Packing runs into allocations (issue #16), the pure part: lanes and their GPUs, configs per task under the queue
cap, the map of a packed task, the keys' checks, stop requests. The packed task itself: test_packed_task.py."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpc_sweep.submit import packing, runcontrol
from hpc_sweep.common.errors import UserError
from hpc_sweep.submit.packing import Packing
from hpc_sweep.common.jobmap import MapEntry, map_text, parse_map


# -- lanes -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gpus,rule,want", [
    (1, Packing(runs_per_gpu=3), ["", "", ""]),                       # K runs share the task's GPU
    (2, Packing(runs_per_gpu=2), ["", ""]),                           # ... or its GPUs
    (1, Packing(node=True, gpus_per_node=4), ["0", "1", "2", "3"]),    # one run per GPU of the node
    (2, Packing(node=True, gpus_per_node=8), ["0,1", "2,3", "4,5", "6,7"]),
    (3, Packing(node=True, gpus_per_node=8), ["0,1,2", "3,4,5"]),     # two GPUs of the node stay idle
    (1, Packing(runs_per_gpu=2, node=True, gpus_per_node=2), ["0", "1", "0", "1"]),  # spread over GPUs first
    (1, Packing(), []),                                               # not packed
    (0, Packing(runs_per_gpu=3), []),                                 # CPU configs never are
])
def test_lanes(gpus, rule, want):
    assert packing.lanes(gpus, rule) == want
    assert packing.runs_at_once(gpus, rule) == max(1, len(want))


def test_a_config_larger_than_a_node_is_refused():
    with pytest.raises(UserError, match="key 'gpus_per_node': a config needs 4 GPUs but a node has 2"):
        packing.lanes(4, Packing(node=True, gpus_per_node=2))


def test_a_node_task_asks_for_the_whole_node():
    assert packing.allocation_gpus(1, Packing(node=True, gpus_per_node=8)) == 8
    assert packing.allocation_gpus(2, Packing(runs_per_gpu=3)) == 2
    assert packing.allocation_gpus(0, Packing(node=True, gpus_per_node=8)) == 0


# -- configs per task ------------------------------------------------------------------------------------------------
def test_nine_configs_three_per_gpu_are_three_tasks():
    assert packing.plan_tasks(9, 3, room=10) == [3, 3, 3]


def test_the_cap_counts_allocations():
    sizes = packing.plan_tasks(60, 3, room=10)
    assert len(sizes) == 10 and sum(sizes) == 30  # a cap of 10, K = 3: thirty configs at once
    deeper = packing.plan_tasks(60, 3, room=10, waves=2)
    assert len(deeper) == 10 and sum(deeper) == 60  # the next config waits in its task for a lane


def test_configs_are_spread_over_every_task_allowed():
    assert packing.plan_tasks(40, 3, room=10, waves=2) == [4] * 10
    assert packing.plan_tasks(10, 3, room=None) == [3, 3, 2, 2]
    assert packing.plan_tasks(5, 3, room=0) == []


@given(st.integers(0, 200), st.integers(1, 16), st.one_of(st.none(), st.integers(0, 60)), st.integers(1, 4))
def test_plan_tasks_never_exceeds_room_lanes_or_configs(count, lanes, room, waves):
    sizes = packing.plan_tasks(count, lanes, room, waves)
    assert sum(sizes) <= count and all(0 < size <= lanes * waves for size in sizes)
    assert room is None or len(sizes) <= room
    if room is None or room * lanes >= count:  # room for one task per wave: one wave each, all placed
        assert sum(sizes) == count and all(size <= lanes for size in sizes)
    if sizes:
        assert max(sizes) - min(sizes) <= 1


HOUR = 3600
NODE = Packing(node=True, gpus_per_node=8)


def test_a_node_task_holds_more_configs_than_gpus_by_default_so_a_freed_gpu_starts_the_next():
    """#16: with pack = "node" and no pack_waves, a capped node task holds the chunk's next configs (one more per
    GPU when no run was seen), so a GPU that frees starts one; runs_per_gpu alone keeps one per lane."""
    waves = packing.waves_for(NODE, 4 * HOUR, None)
    assert waves == packing.NODE_WAVES_UNSEEN == 2
    assert packing.plan_tasks(40, 8, room=2, waves=waves) == [16, 16]
    assert packing.waves_for(Packing(runs_per_gpu=3), 4 * HOUR, None) == 1
    assert packing.waves_for(Packing(node=True, gpus_per_node=8, waves=5), 4 * HOUR, 3 * HOUR) == 5  # as set


@pytest.mark.parametrize("longest,want", [
    (1 * HOUR, 3),      # the third starts 2 h in with 2 h left (>= 1.1 h + 2 min); a fourth would have 1 h
    (1.8 * HOUR, 2),    # the second starts 1.8 h in with 2.2 h left (>= 1.98 h + 2 min)
    (1.95 * HOUR, 1),   # a second would have 2.05 h left, less than 2.145 h + 2 min
    (3 * HOUR, 1),      # no later run fits: one per GPU
    (10 * 60, packing.NODE_WAVES_MAX),  # short runs: never more than the most
])
def test_node_waves_are_what_the_walltime_holds_from_the_runs_seen(longest, want):
    assert packing.waves_for(NODE, 4 * HOUR, longest) == want


@given(st.integers(60, 7 * 24 * HOUR), st.floats(1, 7 * 24 * HOUR))
def test_node_waves_follow_the_tasks_own_rule_for_a_later_start(walltime, longest):
    """Each wave planned past the first would start by the rule the task applies (packed.sh.j2: time left >= 1.1 x
    the longest run + the reserve, runs lasting ``longest``), and one more would not, unless capped."""
    waves = packing.waves_for(NODE, walltime, longest)
    assert 1 <= waves <= packing.NODE_WAVES_MAX

    def starts(wave: int) -> bool:  # wave 1 always starts; wave k + 1 about k runs in
        return wave == 1 or walltime - (wave - 1) * longest >= 1.1 * longest + packing.reserve_for(walltime)

    assert all(starts(wave) for wave in range(1, waves + 1))
    assert waves == packing.NODE_WAVES_MAX or not starts(waves + 1)


def test_a_packed_map_is_several_lines_per_index():
    sizes = packing.plan_tasks(5, 2, room=None)
    names = [f"config{i:03d}" for i in range(5)]
    entries = [MapEntry(index, name, 1, f"/c/{name}.toml", f"/o/{name}", "gpu*1", 1)
               for index, name in zip(packing.task_indices(sizes), names)]
    back = parse_map(map_text(entries))  # the map format is unchanged
    assert back == entries
    assert packing.task_count(back) == 3
    assert {i: [e.name for e in group] for i, group in packing.tasks_of(back).items()} == \
        {0: names[0:2], 1: names[2:4], 2: names[4:5]}


# -- the keys --------------------------------------------------------------------------------------------------------
def test_packing_keys():
    assert packing.packing_from({}) == Packing()
    assert not Packing().enabled
    rule = packing.packing_from({"pack": "node", "gpus_per_node": 8, "runs_per_gpu": 2, "pack_waves": 3})
    assert rule == Packing(runs_per_gpu=2, node=True, gpus_per_node=8, waves=3) and rule.enabled


@pytest.mark.parametrize("values,key", [
    ({"pack": "gpu"}, "pack"),
    ({"pack": "node"}, "gpus_per_node"),
    ({"gpus_per_node": 8}, "gpus_per_node"),
    ({"runs_per_gpu": 0}, "runs_per_gpu"),
    ({"runs_per_gpu": True}, "runs_per_gpu"),
    ({"runs_per_gpu": "3"}, "runs_per_gpu"),
    ({"pack": "node", "gpus_per_node": 2.5}, "gpus_per_node"),
    ({"pack_waves": -1}, "pack_waves"),
])
def test_bad_packing_keys_name_the_key(values, key):
    with pytest.raises(UserError, match=f"sweep.toml: key '{key}'"):
        packing.packing_from(values, file="sweep.toml")


def test_lanes_set_the_variable_of_their_device():
    assert packing.device_env("gpu") == "CUDA_VISIBLE_DEVICES"
    assert packing.device_env("dcu") == packing.device_env("rocm") == "ROCR_VISIBLE_DEVICES"
    assert packing.template_context(1, "gpu", Packing(), per_task=1) == {"packed": False}


# -- stop requests -----------------------------------------------------------------------------------------------------
def test_a_stop_request_keeps_the_first_reason(tmp_path):
    assert runcontrol.read_control(tmp_path, "config001", 2, runcontrol.STOP) is None
    runcontrol.request_stop(tmp_path, "config001", 2, "early stop: rung 10", now=100.0)
    runcontrol.request_stop(tmp_path, "config001", 2, "cancelled", now=200.0)
    assert json.loads((tmp_path / "config001.2.stop").read_text()) == {"why": "early stop: rung 10", "time": 100.0}
    assert runcontrol.read_control(tmp_path, "config001", 2, runcontrol.STOP)["why"] == "early stop: rung 10"
    (tmp_path / "config001.2.skipped").write_text('{"reason": ')  # being written
    assert runcontrol.read_control(tmp_path, "config001", 2, runcontrol.SKIPPED) is None


# -- the fit check judges the packed task ------------------------------------------------------------------------------
def test_a_packed_task_asks_for_each_of_its_runs_cpus_and_memory_and_is_refused_where_no_node_holds_them():
    from hpc_sweep.submit.fit import Ask, check
    from test_cluster_shape import slurm_shape  # the captured test node: 2 CPUs, 8 GPUs

    one = check(Ask(gpus=1, walltime_s=3600, cpus_per_gpu=1, mem_per_gpu_mb=1024), slurm_shape())
    packed = check(Ask(gpus=1, walltime_s=3600, runs_per_gpu=2, cpus_per_gpu=1, mem_per_gpu_mb=1024), slurm_shape())
    assert one.ok and packed.ok and (one.cpus, one.mem_mb) == (1, 1024) and (packed.cpus, packed.mem_mb) == (2, 2048)
    three = check(Ask(gpus=1, walltime_s=3600, runs_per_gpu=3, cpus_per_gpu=1, mem_per_gpu_mb=1024,
                      where={"cpus_per_gpu": "sweep.toml [sweep]"}), slurm_shape())
    (problem,) = three.problems
    assert problem.key == "runs_per_gpu" and "3 CPUs" in problem.message, problem.message
    assert problem.message.endswith("set runs_per_gpu = 2 or fewer in the site profile"), problem.message


# -- a poll's decision for one run of a packed task ----------------------------------------------------------------
def _decide_run(tmp_path, record_state, markers: dict, started: bool = False, state: str = "running",
                scheduler_known: bool = True):
    """decide() for config001 attempt 1 of a packed task whose record says ``record_state`` (None: no record),
    with the markers named (kind -> JSON)."""
    from types import SimpleNamespace

    from hpc_sweep.schedulers.base import TaskRecord
    from hpc_sweep.state.rows import AttemptRow
    from hpc_sweep.track.decide import decide
    from hpc_sweep.track.markers import Markers

    folder = tmp_path / "markers"
    folder.mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    for kind, data in markers.items():
        (folder / f"config001.1.{kind}").write_text(json.dumps(data))
    att = AttemptRow("config001", 1, "job-1", 0, "7_0", state, None, None, 100.0, 110.0 if started else None,
                     None, None, None, None, None, None, None)
    record = TaskRecord("7_0", "7", 0, "job-1", record_state, record_state) if record_state else None
    session = SimpleNamespace(paths=SimpleNamespace(logs=tmp_path / "logs"))
    return decide(session, att, record, None, Markers(folder), 200.0, packed=True,
                  scheduler_known=scheduler_known)[:2]


def test_a_run_of_a_packed_task_is_decided_by_its_own_markers(tmp_path):
    assert _decide_run(tmp_path / "a", "running", {}) == ("pending", "in its task, waiting for one of the task's "
                                                                     "runs to end")
    assert _decide_run(tmp_path / "b", "running", {"start": {"time": 110}})[0] == "running"
    assert _decide_run(tmp_path / "c", "pending", {})[0] == "pending"  # the task itself waits in the queue
    # Its own exit, whatever the task's record says.
    assert _decide_run(tmp_path / "d", "timeout", {"exit": {"exit_code": 0}}, started=True)[0] == "completed"
    assert _decide_run(tmp_path / "e", "running", {"exit": {"exit_code": 3}}, started=True) == \
        ("failed", "exit code 3")
    # Killed by a signal: the task's end says why; while the task runs (or the scheduler was not asked), wait.
    assert _decide_run(tmp_path / "f", "running", {"exit": {"exit_code": 143}}, started=True)[0] == "running"
    assert _decide_run(tmp_path / "g", None, {"exit": {"exit_code": 143}}, started=True,
                       scheduler_known=False)[0] == "running"
    assert _decide_run(tmp_path / "h", "timeout", {"exit": {"exit_code": 143}}, started=True)[0] == "timeout"
    # Asked to stop, ended before the controller recorded it: as asked.
    asked = {"exit": {"exit_code": 143}, "stop": {"why": "early stop: rung 10", "state": "cancelled", "time": 1}}
    assert _decide_run(tmp_path / "i", "running", asked, started=True) == ("cancelled", "early stop: rung 10")
    # Never started: waiting again, not failed or lost.
    skipped = {"skipped": {"reason": "not enough time left in the task: 50 s, a run needs 200 s", "time": 1}}
    state, reason = _decide_run(tmp_path / "j", "running", skipped)
    assert state == "waiting" and "not enough time left" in reason
    assert _decide_run(tmp_path / "k", "cancelled", {})[0] == "waiting"
