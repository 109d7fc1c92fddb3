"""Packing on PBS Pro and Torque (issue #16) through the real CLI with the stand-in qsub/qstat (tests/fakes): the
packed script's directives ask for one task's whole shape, in each adapter's spelling; the map has a line per config;
a poll decides each run of a packed task by its own markers (completed, timed out and resumed, left unstarted and
queued again); bad packing keys are one line naming the file and key."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fakes"))
import fakepbs  # noqa: E402
from test_pbs_flows import TIMEOUT_EXIT, fake_run_folder, hpc, states  # noqa: E402
from test_pbs_flows import make_sweep as pbs_flow_sweep  # noqa: E402


def make_sweep(tmp_path: Path, flavor: str, packing: str) -> Path:
    """test_pbs_flows' sweep (two-GPU configs; 2 CPUs and 8 GB per GPU), four learning rates, packing keys added."""
    root = pbs_flow_sweep(tmp_path, flavor)
    sweep = root / "sweep.toml"
    text = sweep.read_text().replace("max_retries = 1\n", f"max_retries = 1\n{packing}\n")
    sweep.write_text(text.replace("[0.1, 0.01, 0.001]", "[0.1, 0.01, 0.001, 0.0001]"))
    return root


def submitted_script(env: dict, n: int = 0) -> str:
    qsubs = [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qsub"]
    return Path(qsubs[n][1]).read_text()


def map_indices(root: Path) -> list:
    return [[int(line.split("\t")[0]) for line in path.read_text().splitlines()]
            for path in sorted((root / "script").glob("*.map"))]


def put_marker(root: Path, config: str, attempt: int, kind: str, **data) -> None:
    (root / ".hpc_sweep" / "markers" / f"{config}.{attempt}.{kind}").write_text(json.dumps(
        {"time": time.time(), **data}))


@pytest.mark.parametrize("flavor", ["pbspro", "torque"])
def test_k_configs_per_task_ask_for_the_task_and_each_run_is_decided_by_its_own_markers(tmp_path, flavor):
    root = make_sweep(tmp_path, flavor, "runs_per_gpu = 2")
    env = fakepbs.environ(tmp_path, flavor)
    assert hpc(root, env, "generate", str(root)).returncode == 0
    result = hpc(root, env, "submit", str(root))
    assert result.returncode == 0, result.stderr
    assert "(2 tasks)" in result.stdout, result.stdout
    script = submitted_script(env)
    # A config's two GPUs per task; CPUs and memory for its two runs (2 CPUs and 8 GB per GPU each).
    if flavor == "pbspro":
        assert "#PBS -J 0-1" in script and "#PBS -l select=1:ncpus=8:ngpus=2:mem=32768mb" in script
    else:
        assert "#PBS -t 0-1" in script and "#PBS -l nodes=1:ppn=8:gpus=2,mem=32768mb" in script
    assert "HPCS_LANES=2" in script and "hpcs_run()" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert map_indices(root) == [[0, 0, 1, 1]]

    snap = states(root, env)
    submission = snap["config001"]["job_id"].replace("[0]", "[]")
    assert snap["config001"]["job_id"] == snap["config002"]["job_id"] != snap["config003"]["job_id"]
    # Task 0 ran both of its configs whole; task 1 hit its walltime with config003 running and config004 never
    # started.
    for config in ("config001", "config002", "config003"):
        put_marker(root, config, 1, "start", host="node07", job_id="x")
        fake_run_folder(root, config)
    for config in ("config001", "config002"):
        put_marker(root, config, 1, "exit", exit_code=0)
    put_marker(root, "config003", 1, "exit", exit_code=143)
    put_marker(root, "config004", 1, "skipped", job_id="x", reason="the task was ended (SIGTERM) before it started")
    fakepbs.set_state(submission, 0, "done", 0, path=env["FAKE_PBS_STATE"])
    fakepbs.set_state(submission, 1, "done", TIMEOUT_EXIT[flavor], path=env["FAKE_PBS_STATE"])
    polled = hpc(root, env, "poll", str(root), "--force")
    assert polled.returncode == 0, polled.stderr
    snap = states(root, env)
    assert snap["config001"]["state"] == snap["config002"]["state"] == "completed"
    # The timed-out run resumes from its checkpoint and the unstarted one goes again: both in one new task.
    assert snap["config003"]["attempt"] == 2 and snap["config004"]["attempt"] == 2, polled.stdout
    assert snap["config003"]["state"] == snap["config004"]["state"] == "pending"
    assert "enable = true" in (root / "script" / "run" / "config003.a2.toml").read_text()
    second = submitted_script(env, 1)
    assert "#PBS -J" not in second if flavor == "pbspro" else "#PBS -t 0\n" in second  # one task
    assert map_indices(root)[1] == [0, 0]

    # The second task hits its walltime too: config004's first run (its attempt 1 never started) is resumed,
    # as a single run's would be with max_retries = 1; config003 ends whole.
    second_id = states(root, env)["config003"]["job_id"]
    fake_run_folder(root, "config003", "2026-11-23_11-00-00", epochs=(4, 5))
    fake_run_folder(root, "config004", "2026-11-23_11-00-00", epochs=(1,))
    put_marker(root, "config003", 2, "exit", exit_code=0)
    put_marker(root, "config004", 2, "start", host="node07", job_id="y")
    put_marker(root, "config004", 2, "exit", exit_code=143)
    fakepbs.set_state(second_id, 0 if "[" in second_id else None, "done", TIMEOUT_EXIT[flavor],
                      path=env["FAKE_PBS_STATE"])
    polled = hpc(root, env, "poll", str(root), "--force")
    assert polled.returncode == 0, polled.stderr
    snap = states(root, env)
    assert snap["config003"]["state"] == "completed"
    assert snap["config004"]["attempt"] == 3 and snap["config004"]["state"] == "pending", polled.stdout


@pytest.mark.parametrize("flavor", ["pbspro", "torque"])
def test_a_node_task_asks_for_the_whole_node_and_gives_each_run_its_gpus(tmp_path, flavor):
    root = make_sweep(tmp_path, flavor, 'pack = "node"\ngpus_per_node = 4')
    env = fakepbs.environ(tmp_path, flavor)
    assert hpc(root, env, "generate", str(root)).returncode == 0
    result = hpc(root, env, "submit", str(root), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert hpc(root, env, "submit", str(root)).returncode == 0
    script = submitted_script(env)
    if flavor == "pbspro":
        assert "#PBS -l select=1:ncpus=8:ngpus=4:mem=32768mb" in script
    else:
        assert "#PBS -l nodes=1:ppn=8:gpus=4,mem=32768mb" in script
        assert "PBS_GPUFILE" in script  # Torque names a task's GPUs in its GPU file
    assert "HPCS_LANE_DEVICES=( 0,1 2,3 )" in script  # two GPUs for each of its two runs
    assert map_indices(root) == [[0, 0, 1, 1]]


@pytest.mark.parametrize("line,named", [
    ('pack = "gpu"', "sweep.pack"),
    ('pack = "node"', "sweep.gpus_per_node"),
    ("gpus_per_node = 4", "sweep.gpus_per_node"),
    ("runs_per_gpu = 0", "sweep.runs_per_gpu"),
    ('runs_per_gpu = "3"', "sweep.runs_per_gpu"),
])
def test_bad_packing_keys_are_one_line_naming_file_and_key(tmp_path, line, named):
    root = make_sweep(tmp_path, "pbspro", line)
    env = fakepbs.environ(tmp_path, "pbspro")
    generated = hpc(root, env, "generate", str(root))
    result = generated if generated.returncode else hpc(root, env, "submit", str(root))
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert "sweep.toml" in message and named in message, message
    assert not [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qsub"]


@pytest.mark.parametrize("flavor", ["pbspro", "torque"])
def test_cancelling_one_config_of_a_packed_task_asks_its_run_to_stop_and_never_qdels_the_task(tmp_path, flavor):
    root = make_sweep(tmp_path, flavor, "runs_per_gpu = 2")
    env = fakepbs.environ(tmp_path, flavor)
    assert hpc(root, env, "generate", str(root)).returncode == 0
    assert hpc(root, env, "submit", str(root)).returncode == 0
    snap = states(root, env)
    task = snap["config001"]["job_id"]
    submission = task.replace("[0]", "[]")
    for config in ("config001", "config002"):  # task 0 runs both of its configs
        put_marker(root, config, 1, "start", host="node07", job_id=snap[config]["job_id"])
    fakepbs.set_state(submission, 0, "R", path=env["FAKE_PBS_STATE"])
    assert hpc(root, env, "poll", str(root), "--force").returncode == 0
    assert states(root, env)["config001"]["state"] == "running"

    result = hpc(root, env, "cancel", str(root), "config001")
    assert result.returncode == 0, result.stderr
    assert not [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qdel"]  # the task goes on
    markers = root / ".hpc_sweep" / "markers"
    assert sorted(p.name for p in markers.glob("*.stop")) == ["config001.1.stop"]
    assert json.loads((markers / "config001.1.stop").read_text())["state"] == "cancelled"
    # The user is told the run was asked to stop and its task goes on, not that nothing reached the scheduler.
    assert f"config001: asked its run to stop (task {task} goes on with 1 other run)" in result.stdout, result.stdout
    snap = states(root, env)
    assert snap["config001"]["state"] == "cancelled" and snap["config002"]["state"] == "running"
    assert snap["config003"]["state"] == snap["config004"]["state"] == "pending"


def test_a_capped_node_task_holds_the_next_configs_while_the_runs_seen_fit_its_walltime(tmp_path):
    """pack = "node" without pack_waves: under a cap of one task, the node task (two 2-GPU lanes) holds two configs
    per lane while no run was seen, so a freed GPU starts the next; once runs of 40 minutes were seen, a second
    would not end within the hour's walltime and the next task holds one per lane."""
    root = make_sweep(tmp_path, "pbspro", 'pack = "node"\ngpus_per_node = 4')
    sweep = root / "sweep.toml"
    sweep.write_text(sweep.read_text().replace("[0.1, 0.01, 0.001, 0.0001]", "[0.1, 0.01, 0.001, 0.0001, 2e-5, 1e-5]"))
    (root / "site.toml").write_text((root / "site.toml").read_text() + "max_queued = 1\n")
    env = fakepbs.environ(tmp_path, "pbspro")
    assert hpc(root, env, "generate", str(root)).returncode == 0
    result = hpc(root, env, "submit", str(root))
    assert result.returncode == 0, result.stderr
    assert map_indices(root) == [[0, 0, 0, 0]]  # one task, two lanes, two configs each

    snap = states(root, env)
    now = time.time()
    for config in ("config001", "config002"):  # the first wave ran 40 minutes and ended whole
        put_marker(root, config, 1, "start", host="node07", job_id="x", time=now - 2400)
        fake_run_folder(root, config)
        put_marker(root, config, 1, "exit", exit_code=0, time=now)
    for config in ("config003", "config004"):  # the task's own rule left them unstarted
        put_marker(root, config, 1, "skipped", job_id="x", reason="the time left cannot hold the longest run")
    fakepbs.set_state(snap["config001"]["job_id"].replace("[0]", "[]"), None, "done", 0,
                      path=env["FAKE_PBS_STATE"])
    polled = hpc(root, env, "poll", str(root), "--force")
    assert polled.returncode == 0, polled.stderr
    snap = states(root, env)
    assert snap["config001"]["state"] == snap["config002"]["state"] == "completed"
    assert map_indices(root)[1] == [0, 0], polled.stdout  # one config per lane: a second could not end in time
