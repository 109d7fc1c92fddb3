"""A packed task (issue #16) run by bash with no scheduler: one task runs several configs, each with its own log,
markers, exit code, GPUs and port; a freed lane starts the next config unless the walltime cannot hold it; a stop
request ends one run only; a TERM to the task ends every run and each records its exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from hpc_sweep.submit import packing, runcontrol
from hpc_sweep.common.jobmap import MapEntry
from hpc_sweep.local.processes import proc_start, proc_stat
from hpc_sweep.submit.scripts import PORT_BASE, render_script, script_context
from hpc_sweep.session import Session
from hpc_sweep.sweep.sites import profile_files
from generic_sweep import generic_sweep, render_job  # tests/, shared with test_jobscript.py
from slurm_cluster import wait_for  # tests/cluster, on sys.path through conftest.py

# The trainer stand-in: notes what it was given, then waits for a release file (or sleeps for what the hold file
# says), prints an epoch and writes done.txt last. ignore_term makes it ignore TERM.
TRAINER = r"""#!/bin/bash
out=$1
for var in CUDA_VISIBLE_DEVICES ROCR_VISIBLE_DEVICES HIP_VISIBLE_DEVICES; do
    printf '%s\n' "${!var-unset}" > "$out/$var"
done
printf '%s\n' "$HPCS_PORT" > "$out/port"
printf '%s\n' "$HPCS_LANE" > "$out/lane"
echo "start $HPCS_NAME" >> "$out/../../events.log"
if [ -e "$out/ignore_term" ]; then
    trap '' TERM
else
    trap 'echo TERM > "$out/term"; exit 143' TERM
fi
echo "training $HPCS_NAME"
: > "$out/started"
if [ -e "$out/hold" ]; then
    sleep "$(cat "$out/hold")"
else
    while [ ! -e "$out/release" ]; do sleep 0.05; done
fi
echo "epoch 1 loss 0.5"
echo "end $HPCS_NAME" >> "$out/../../events.log"
exit "$(cat "$out/code" 2>/dev/null || echo 0)"
"""


class PackedTask:
    """Configs of a generated sweep, the map putting them all in one task (index ``index``) and the packed job
    script over it, as submit would write them."""

    def __init__(self, root: Path, script: Path, entries: list):
        self.root, self.script, self.entries = root, script, entries
        self.markers = root / ".hpc_sweep" / "markers"
        self.proc: Optional[subprocess.Popen] = None
        self.born: Optional[int] = None  # the task's start time (clock ticks): its session's processes are not older

    def start(self, task_id: str = "42_0", env: Optional[dict] = None) -> subprocess.Popen:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("HPC_SWEEP_", "HPCS_", "SLURM_", "PBS_", "CUDA_", "ROCR_", "HIP_"))}
        clean.update(HPC_SWEEP_INDEX=str(self.entries[0].index), HPC_SWEEP_TASK_ID=task_id, **(env or {}))
        self.proc = subprocess.Popen(["bash", str(self.script)], env=clean, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=self.root.parent,
                                     start_new_session=True)
        self.born = proc_start(self.proc.pid)
        return self.proc

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def stop(self) -> None:
        """Test teardown: end whatever of the task's session is left, by PID. The task was started in a session of
        its own, and each run's command has a process group of its own inside it (set -m), so the launcher's group
        does not hold them all: every process of the session is killed, whether or not the launcher is still
        there (a run or a trainer's sleep may outlive it)."""
        if self.proc is None:
            return
        for pid in session_pids(self.proc.pid, self.born):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def name(self, i: int) -> str:
        return self.entries[i].name

    def out(self, i: int) -> Path:
        return Path(self.entries[i].outputs_dir)

    def put(self, i: int, file: str, text: str = "") -> None:
        (self.out(i) / file).write_text(text)

    def seen(self, i: int, file: str) -> Optional[str]:
        path = self.out(i) / file
        return path.read_text().strip() if path.exists() else None

    def marker(self, i: int, kind: str) -> Optional[dict]:
        path = self.markers / f"{self.name(i)}.1.{kind}"
        return json.loads(path.read_text()) if path.exists() else None

    def log(self, i: int) -> str:
        return (self.root / "logs" / f"{self.name(i)}.1.log").read_text()

    def events(self) -> list:
        path = self.root / "events.log"
        return path.read_text().split("\n")[:-1] if path.exists() else []

    def wait_started(self, *which: int) -> None:
        wait_for(lambda: all(self.seen(i, "started") is not None for i in which), 30,
                 interval=0.05, what=f"configs {which} to start")


def generated_sweep(tmp_path: Path, count: int, site: str = "local", command_tail: str = "") -> Path:
    """A generated sweep of ``count`` configs whose command is the trainer stand-in."""
    return generic_sweep(tmp_path / "sweep", "packed-test", "bash {sweep_dir}/trainer.sh {outputs_dir} {config}"
                         + command_tail, count, 'tag = "plain"\n', site=site, files={"trainer.sh": TRAINER})


def packed_task(tmp_path: Path, count: int, gpus: int = 1, device_type: str = "gpu", index: int = 0,
                walltime_s: int = 3600, reserve_s: int = 1, grace_s: int = 60, setup: Optional[list] = None,
                site: str = "local", command_tail: str = "", **packing_keys) -> PackedTask:
    root = generated_sweep(tmp_path, count, site, command_tail)
    rule = packing.packing_from(packing_keys)

    def context_of(session: Session, map_file: Path, entries: list) -> dict:
        context = script_context(session, "packed-test-1", f"0-{index}", index + 1,
                                 packing.allocation_gpus(gpus, rule), device_type, walltime_s, map_file)
        context.update(packing.template_context(gpus, device_type, rule, per_task=count, reserve_s=reserve_s,
                                                grace_s=grace_s, tick_s=0.1))
        if setup is not None:
            context["setup"] = setup
        return context

    script, entries = render_job(root, "packed-test-1", lambda position, row, outputs: MapEntry(
        index, row.name, 1, row.path, outputs, f"{device_type}*{gpus}", gpus), context_of)
    return PackedTask(root, script, entries)


@pytest.fixture
def make(tmp_path):
    made: list = []

    def make_task(count: int, **kwargs) -> PackedTask:
        task = packed_task(tmp_path, count, **kwargs)
        made.append(task)
        return task

    yield make_task
    for task in made:
        task.stop()
    for task in made:  # nothing the test started outlives it
        if task.proc is not None:
            wait_for(lambda: not session_pids(task.proc.pid, task.born), 10, interval=0.05,
                     what="the task's processes to end")


# -- K configs in one task ---------------------------------------------------------------------------------------------
def test_k_configs_share_one_task_each_with_its_own_log_markers_and_port(make):
    task = make(3, runs_per_gpu=3, index=1)
    task.start(env={"CUDA_VISIBLE_DEVICES": "7"})
    task.wait_started(0, 1, 2)  # all three at once: none is released before all have started
    for i in range(3):
        task.put(i, "release")
    code, out = task.finish()
    assert code == 0, out
    ports = set()
    for i in range(3):
        assert "epoch 1 loss 0.5" in task.log(i) and f"training {task.name(i)}" in task.log(i)
        for j in range(3):
            assert j == i or f"training {task.name(j)}" not in task.log(i)  # each run writes only its own log
        assert task.marker(i, "start")["job_id"] == "42_0"
        assert task.marker(i, "exit")["exit_code"] == 0
        assert (task.markers / f"{task.name(i)}.1.claim").is_dir()
        assert task.seen(i, "CUDA_VISIBLE_DEVICES") == "7"  # they share the task's GPU
        ports.add(int(task.seen(i, "port")))
    # Index 1 of a submission whose tasks hold 3 configs: ports 3..5 past the base, none shared with index 0's.
    assert ports == {PORT_BASE + 3, PORT_BASE + 4, PORT_BASE + 5}


def test_a_node_task_gives_each_run_its_own_gpu_and_a_freed_gpu_starts_the_next(make):
    task = make(4, pack="node", gpus_per_node=2)
    task.start(env={"CUDA_VISIBLE_DEVICES": "4,6"})
    task.wait_started(0, 1)
    assert {task.seen(0, "CUDA_VISIBLE_DEVICES"), task.seen(1, "CUDA_VISIBLE_DEVICES")} == {"4", "6"}
    assert task.marker(2, "start") is None and task.seen(2, "started") is None  # both GPUs are busy
    task.put(1, "release")
    task.wait_started(2)
    # The third config took the GPU the second one freed, and only after it ended.
    assert task.seen(2, "CUDA_VISIBLE_DEVICES") == task.seen(1, "CUDA_VISIBLE_DEVICES")
    assert task.seen(2, "lane") == task.seen(1, "lane")
    events = task.events()
    assert events.index(f"end {task.name(1)}") < events.index(f"start {task.name(2)}")
    assert task.seen(3, "started") is None
    for i in (0, 2):
        task.put(i, "release")
    task.wait_started(3)
    task.put(3, "release")
    code, out = task.finish()
    assert code == 0, out
    assert [task.marker(i, "exit")["exit_code"] for i in range(4)] == [0, 0, 0, 0]
    assert len({task.seen(i, "port") for i in range(4)}) == 4


@pytest.mark.parametrize("given,selects", [
    ({"ROCR_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "0,1", "CUDA_VISIBLE_DEVICES": "0,1"},
     "ROCR_VISIBLE_DEVICES"),
    ({"HIP_VISIBLE_DEVICES": "6,7", "CUDA_VISIBLE_DEVICES": "0,1"}, "HIP_VISIBLE_DEVICES"),
], ids=["rocr", "hip only"])
def test_lanes_of_amd_gpus_are_selected_by_one_variable(make, given, selects):
    task = make(2, device_type="rocm", pack="node", gpus_per_node=2)
    task.start(env=given)
    task.wait_started(0, 1)
    for i in range(2):
        task.put(i, "release")
    code, out = task.finish()
    assert code == 0, out
    assert {task.seen(i, selects) for i in range(2)} == set(given[selects].split(","))
    others = {"ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"} - {selects}
    assert {task.seen(i, var) for i in range(2) for var in others} == {"unset"}  # they would count within it


def test_torque_gpus_come_from_the_gpu_file_where_no_variable_names_them(make, tmp_path):
    gpu_file = tmp_path / "gpufile"
    gpu_file.write_text("node07-gpu5\nnode07-gpu1\n")
    task = make(2, pack="node", gpus_per_node=2)
    task.start(env={"PBS_GPUFILE": str(gpu_file)})
    task.wait_started(0, 1)
    for i in range(2):
        task.put(i, "release")
    assert task.finish()[0] == 0
    assert {task.seen(i, "CUDA_VISIBLE_DEVICES") for i in range(2)} == {"5", "1"}


# -- the walltime ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("walltime_s,starts", [(3600, True), (6, False)])
def test_the_next_config_starts_only_if_the_walltime_can_hold_it(make, walltime_s, starts):
    # One lane; the first config runs 3 s. With 6 s of walltime, about 3 s are left when it ends: less than the
    # 3 s it took plus the reserve, so the two others are left unstarted, at once.
    task = make(3, runs_per_gpu=1, pack="node", gpus_per_node=1, walltime_s=walltime_s)
    task.put(0, "hold", "3")
    for i in (1, 2):
        task.put(i, "hold", "0")
    task.start()
    code, out = task.finish()
    assert code == 0, out
    assert task.marker(0, "exit")["exit_code"] == 0
    for i in (1, 2):
        if starts:
            assert task.marker(i, "exit")["exit_code"] == 0 and task.marker(i, "skipped") is None
        else:
            skipped = task.marker(i, "skipped")
            assert skipped["job_id"] == "42_0" and "not enough time left" in skipped["reason"], skipped
            assert task.marker(i, "start") is None and task.seen(i, "started") is None
            assert not (task.markers / f"{task.name(i)}.1.claim").exists()  # free for another task


def test_the_first_configs_start_whatever_the_reserve(make):
    task = make(2, runs_per_gpu=2, walltime_s=30, reserve_s=600)
    for i in range(2):
        task.put(i, "hold", "0")
    task.start()
    assert task.finish()[0] == 0
    assert [task.marker(i, "exit")["exit_code"] for i in range(2)] == [0, 0]


def test_a_run_still_running_counts_as_long_as_it_has_run(make):
    # One lane runs a long config; on the other, one-second configs follow one another. Judged from them alone, a
    # config would need 1 s (+ 1 s reserve) and they would go on until 2 s before the walltime; the long one says a
    # config may take as long as it has run so far, so they stop well before.
    task = make(10, pack="node", gpus_per_node=2, walltime_s=12)
    for i in range(1, 10):
        task.put(i, "hold", "1")
    task.start()
    skipped = wait_for(lambda: next((task.marker(i, "skipped") for i in range(1, 10) if task.marker(i, "skipped")),
                                    None), 30, interval=0.05, what="a config left unstarted")
    assert task.marker(0, "exit") is None  # decided while the long config ran
    needed = int(skipped["reason"].rsplit("needs ", 1)[1].split()[0])
    assert needed >= 4, skipped  # at least the long run's 3+ s so far, not 1 s + reserve
    task.put(0, "release")
    code, out = task.finish()
    assert code == 0, out
    ran = [i for i in range(1, 10) if task.marker(i, "exit")]
    assert ran and all(task.marker(i, "exit")["exit_code"] == 0 for i in ran)
    assert all(task.marker(i, "skipped") for i in range(1, 10) if i not in ran)
    assert ran == list(range(1, len(ran) + 1))  # the map's order


# -- stopping one run, ending the task ------------------------------------------------------------------------------
def test_a_stop_request_ends_that_run_only(make):
    task = make(3, runs_per_gpu=3)
    task.start()
    task.wait_started(0, 1, 2)
    runcontrol.request_stop(task.markers, task.name(1), 1, "early stop: rung 10")
    wait_for(lambda: task.marker(1, "exit"), 30, interval=0.05, what="the stopped run's exit marker")
    assert task.seen(1, "term") == "TERM"  # the trainer itself got the TERM
    assert task.marker(1, "exit")["exit_code"] == 143
    assert task.marker(0, "exit") is None and task.marker(2, "exit") is None
    for i in (0, 2):
        task.put(i, "release")
    code, out = task.finish()
    assert code == 0, out
    for i in (0, 2):
        assert task.marker(i, "exit")["exit_code"] == 0 and task.seen(i, "term") is None
        assert "epoch 1 loss 0.5" in task.log(i)
    assert "epoch 1" not in task.log(1)


def test_a_run_ignoring_its_term_is_killed_after_the_grace(make):
    task = make(2, runs_per_gpu=2, grace_s=1)
    task.put(0, "ignore_term")
    task.start()
    task.wait_started(0, 1)
    runcontrol.request_stop(task.markers, task.name(0), 1, "cancelled")
    wait_for(lambda: task.marker(0, "exit"), 30, interval=0.05, what="the killed run's exit marker")
    assert task.marker(0, "exit")["exit_code"] == 128 + signal.SIGKILL
    task.put(1, "release")
    assert task.finish()[0] == 0
    assert task.marker(1, "exit")["exit_code"] == 0


def test_a_config_asked_to_stop_before_it_starts_never_starts(make):
    task = make(3, runs_per_gpu=2)
    runcontrol.request_stop(task.markers, task.name(2), 1, "cancelled")
    task.start()
    task.wait_started(0, 1)
    task.put(0, "release")
    task.put(1, "release")
    assert task.finish()[0] == 0
    assert task.marker(2, "skipped")["reason"] == "stop requested before it started"
    assert task.marker(2, "start") is None and task.seen(2, "started") is None


def session_pids(sid: int, born: Optional[int] = None) -> list:
    """Every live process of a session (a task's processes, as a scheduler's cgroup or PBS's session holds them);
    ``born``: only those started since (a session id reused after ours ended is not ours)."""
    found = []
    for name in os.listdir("/proc"):
        stat = proc_stat(int(name)) if name.isdigit() else None
        if stat and stat[1] == sid and stat[0] not in ("Z", "X") and (born is None or stat[2] >= born):
            found.append(int(name))
    return found


@pytest.mark.parametrize("reach", ["script", "every process"])
def test_term_to_the_task_ends_every_run_and_each_records_its_exit(make, reach):
    # "script": the launcher alone gets it and must pass it on; "every process": as Slurm signals a job's cgroup
    # and PBS its session, the runs and their commands get it at once too.
    task = make(3, runs_per_gpu=2)
    proc = task.start()
    task.wait_started(0, 1)
    for pid in [proc.pid] if reach == "script" else session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    code, out = task.finish()
    assert code == 128 + signal.SIGTERM, out
    for i in (0, 1):
        assert task.seen(i, "term") == "TERM"
        assert task.marker(i, "exit")["exit_code"] == 128 + signal.SIGTERM
    skipped = task.marker(2, "skipped")
    assert skipped and "SIGTERM" in skipped["reason"] and task.marker(2, "start") is None


def test_a_run_ended_during_its_setup_lines_still_gets_its_exit_marker(make):
    # Before its command starts a run has no TERM handler of its own; the task records its end.
    hold = 'touch "$HPCS_OUTPUTS/in_setup"; while [ ! -e "$HPCS_OUTPUTS/setup_done" ]; do sleep 0.05; done'
    task = make(2, runs_per_gpu=2, setup=[hold])
    proc = task.start()
    wait_for(lambda: all(task.seen(i, "in_setup") is not None for i in range(2)), 30, interval=0.05,
             what="both runs in their setup lines")
    os.kill(proc.pid, signal.SIGTERM)
    code, out = task.finish()
    assert code == 128 + signal.SIGTERM, out
    for i in range(2):
        assert task.marker(i, "exit")["exit_code"] == 128 + signal.SIGTERM
        assert task.seen(i, "started") is None


def test_a_config_claimed_by_another_task_is_left_alone(make):
    task = make(2, runs_per_gpu=2)
    claim = task.markers / f"{task.name(0)}.1.claim"
    claim.mkdir()
    (claim / "task").write_text("99_3\n")
    task.start()
    task.wait_started(1)
    task.put(1, "release")
    code, out = task.finish()
    assert code == 0, out
    assert task.marker(0, "start") is None and task.marker(0, "exit") is None  # not ours to record
    assert (task.markers / f"{task.name(0)}.1.duplicate.42_0").exists()
    assert task.seen(0, "started") is None
    assert task.marker(1, "exit")["exit_code"] == 0


def test_a_site_template_overriding_a_block_applies_to_every_run(make, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "mine.toml").write_text('scheduler = "local"\ntemplate = "mine.sh.j2"\n')
    (site / "mine.sh.j2").write_text('{% extends "local.sh.j2" %}\n{% block setup %}\n'
                                     'export SITE_MARK="set up for $HPCS_NAME"\n{% endblock %}\n')
    task = make(2, runs_per_gpu=2, site=str(site / "mine.toml"),
                command_tail=' && echo "$SITE_MARK" > {outputs_dir}/mark')
    task.start()
    task.wait_started(0, 1)
    for i in range(2):
        task.put(i, "release")
    assert task.finish()[0] == 0
    assert [task.seen(i, "mark") for i in range(2)] == [f"set up for {task.name(i)}" for i in range(2)]


def test_a_failed_run_is_the_task_exit_code_and_the_others_go_on(make):
    task = make(2, runs_per_gpu=2)
    task.put(0, "code", "5")
    task.start()
    task.wait_started(0, 1)
    task.put(0, "release")
    wait_for(lambda: task.marker(0, "exit"), 30, interval=0.05, what="the failed run's exit")
    task.put(1, "release")
    code, out = task.finish()
    assert code == 5, out
    assert task.marker(0, "exit")["exit_code"] == 5 and task.marker(1, "exit")["exit_code"] == 0


# -- every shipped profile -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", sorted(profile_files()))
def test_the_packed_script_of_each_profile_is_bash_with_the_same_directives(tmp_path, profile):
    root = generated_sweep(tmp_path, 3, site=profile)
    session = Session.open(root)
    try:
        rule = packing.Packing(node=True, gpus_per_node=4)
        map_file = session.paths.script / "pack-render-1.map"
        one = script_context(session, "pack-render-1", "0-1", 2, 4, "gpu", 7200, map_file)
        single = render_script(session, one)
        assert render_script(session, {**one, "packed": False}) == single  # the one-config path as it was
        packed = render_script(session, {**one, **packing.template_context(1, "gpu", rule, per_task=3)})
    finally:
        session.close()
    script = tmp_path / "packed.sh"
    script.write_text(packed)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    heads = ("#SBATCH", "#PBS", "# hpc-sweep-walltime")
    assert [line for line in packed.splitlines() if line.startswith(heads)] == \
        [line for line in single.splitlines() if line.startswith(heads)]
    assert "HPCS_LANE_DEVICES=( 0 1 2 3 )" in packed and "hpcs_run()" in packed
    claim = 'if mkdir "$HPCS_MARKER.claim"'
    assert single.count(claim) == packed.count(claim) == 1  # the one-config blocks, reused, not copied
