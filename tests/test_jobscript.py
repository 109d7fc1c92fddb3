"""The job script itself, run by bash with no scheduler: the command runs as the shell line the user wrote (chains,
environment assignments, pipes, `source`), a TERM reaches all of it and its exit code is recorded, and only the
first task to claim a (config, attempt) runs it (issue #12 item 1 and the claim guard)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from hpc_sweep.common.jobmap import MapEntry, map_text
from hpc_sweep.submit.scripts import render_script, script_context
from hpc_sweep.local.processes import proc_stat
from hpc_sweep.session import Session

BASE = 'tag = "plain"\nlr = 0.1\n'
SLOW = """#!/bin/bash
# A child that starts a grandchild (which notes a TERM) and waits for it, then writes a file: a TERM to the job
# script must reach both before that.
bash -c 'trap "echo TERM > \\"$0/grandchild.term\\"; exit 143" TERM; : > "$0/grandchild.ready"; sleep 300 & wait' "$1" &
echo $! > "$1/grandchild.pid"
echo $$ > "$1/child.pid"
wait
echo late > "$1/late.txt"
"""
ENV_SH = 'FROM_ENV="sourced${SURELY_UNSET_IN_THE_JOB:-}"\nALSO="${SURELY_UNSET_TOO}here"\n'


class Job:
    """A sweep of generated configs and one rendered job script over them, as submit would write it."""

    def __init__(self, root: Path, script: Path, entries: list):
        self.root, self.script, self.entries = root, script, entries
        self.markers = root / ".hpc_sweep" / "markers"

    def env(self, index: int, task_id: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_SWEEP_", "HPCS_", "SLURM_", "PBS_"))}
        env.update(HPC_SWEEP_INDEX=str(index), HPC_SWEEP_TASK_ID=task_id)
        return env

    def run(self, index: int = 0, task_id: str = "t0", timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(self.script)], env=self.env(index, task_id), capture_output=True,
                              text=True, cwd=self.root.parent, timeout=timeout)

    def start(self, index: int = 0, task_id: str = "t0") -> subprocess.Popen:
        return subprocess.Popen(["bash", str(self.script)], env=self.env(index, task_id), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.root.parent, start_new_session=True)

    def outputs(self, index: int = 0) -> Path:
        return Path(self.entries[index].outputs_dir)

    def marker(self, kind: str, index: int = 0) -> Optional[dict]:
        path = self.markers / f"{self.entries[index].name}.1.{kind}"
        return json.loads(path.read_text()) if path.exists() else None

    def log(self, index: int = 0) -> Path:
        return self.root / "logs" / f"{self.entries[index].name}.1.log"


def make_job(tmp_path: Path, command: str, count: int = 1) -> Job:
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text(BASE)
    (root / "slow.sh").write_text(SLOW)
    (root / "env.sh").write_text(ENV_SH)
    tags = ", ".join(f'"t{i}"' for i in range(count))
    (root / "sweep.toml").write_text(f"""
[sweep]
name = "jobscript-test"
program = "generic"
base = "configs/.base_config.toml"
command = {json.dumps(command)}
site = "local"
walltime = "01:00:00"
device = "cpu"

[grid]
tag = [{tags}]

[log]
path = "train.log"
epoch = "epoch (\\\\d+)"
""")
    done = subprocess.run([sys.executable, "-m", "hpc_sweep.cli", "generate", str(root)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return render(root)


def render(root: Path) -> Job:
    """The script and map as submit writes them (attempt 1 of every config), without submitting."""
    session = Session.open(root)
    try:
        paths = session.paths
        for folder in (paths.script, paths.logs, paths.markers):
            folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for index, row in enumerate(session.store.configs()):
            outputs = paths.config_outputs(row.name)
            outputs.mkdir(parents=True, exist_ok=True)
            entries.append(MapEntry(index=index, name=row.name, attempt=1, config_file=row.path,
                                    outputs_dir=str(outputs), device=row.device, gpus=row.gpus))
        map_file = paths.script / "jobscript-test-1.map"
        context = script_context(session, "jobscript-test-1", f"0-{len(entries) - 1}", len(entries), 0, "cpu", 3600,
                                 map_file)
        map_file.write_text(map_text(entries))
        script = paths.script / "jobscript-test-1.sh"
        script.write_text(render_script(session, context))
        return Job(root, script, entries)
    finally:
        session.close()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def started_child_and_grandchild(outputs: Path) -> list:
    """The pids SLOW wrote, once its grandchild is ready for a TERM."""
    wait_for(lambda: all((outputs / name).exists() for name in ("child.pid", "grandchild.pid", "grandchild.ready")),
             20, "the command and its grandchild to start")
    return [int(wait_for(lambda: (outputs / name).read_text().strip(), 5, name))
            for name in ("child.pid", "grandchild.pid")]


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


# -- the command line as written -----------------------------------------------------------------------------------
CHAINS = [
    # (what, command, {file in the outputs folder: its expected content}, exit code)
    ("and-chain, the last step writes", "test -f {config} && sleep 0.3 && cp {config} {outputs_dir}/last.toml",
     {"last.toml": None}, 0),
    ("environment assignment prefix", "OMP_NUM_THREADS=4 env CONFIG={config} > {outputs_dir}/env.txt",
     {"env.txt": "OMP_NUM_THREADS=4"}, 0),
    ("semicolon and or", "false || echo or > {outputs_dir}/or.txt; cp {config} {outputs_dir}/semi.toml",
     {"or.txt": "or", "semi.toml": None}, 0),
    ("pipe", "cat {config} | tr a-z A-Z > {outputs_dir}/pipe.txt", {"pipe.txt": 'TAG = "T0"'}, 0),
    ("source without set -u", "source {sweep_dir}/env.sh; test -f {config} && echo $FROM_ENV $ALSO > "
     "{outputs_dir}/env.txt", {"env.txt": "sourced here"}, 0),
    ("exit code of a chain", "test -f {config} && false || exit 7", {}, 7),
    ("a cd stays in the command", "cd {outputs_dir} && pwd > here.txt && test -f {config}",
     {"here.txt": "{outputs_dir}"}, 0),
]


@pytest.mark.parametrize("command,files,code", [c[1:] for c in CHAINS], ids=[c[0] for c in CHAINS])
def test_the_command_runs_as_the_shell_line_written(tmp_path, command, files, code):
    job = make_job(tmp_path, command)
    done = job.run()
    assert done.returncode == code, done.stdout + done.stderr + job.log().read_text()
    assert job.marker("exit")["exit_code"] == code
    assert job.marker("start")["job_id"] == "t0"
    config = Path(job.entries[0].config_file).read_text()
    for name, want in files.items():
        path = job.outputs() / name
        assert path.exists(), f"{name} missing; run log: {job.log().read_text()}"
        text = path.read_text()
        if want is None:
            assert text == config  # the last step ran, on the config
        elif want.startswith("{outputs_dir}"):
            assert text.strip() == str(job.outputs())
        else:
            assert want in text.splitlines() or text.strip() == want, text


def test_a_syntax_error_in_the_command_is_a_recorded_failure(tmp_path):
    job = make_job(tmp_path, "echo unclosed 'quote {config} > {outputs_dir}/never.txt")
    done = job.run()
    assert done.returncode == 2
    assert job.marker("exit")["exit_code"] == 2  # recorded, not a script that died before its exit marker
    assert "unexpected EOF" in job.log().read_text() or "syntax error" in job.log().read_text()


def test_term_to_the_script_ends_the_whole_command_and_records_the_signal(tmp_path):
    job = make_job(tmp_path, "bash {sweep_dir}/slow.sh {outputs_dir} {config} && echo after > "
                             "{outputs_dir}/after.txt")
    outputs = job.outputs()
    proc = job.start()
    pids: list = []
    try:
        pids = started_child_and_grandchild(outputs)
        os.kill(proc.pid, signal.SIGTERM)  # the script's top process only, as a local runner or a cancel does
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        assert job.marker("exit")["exit_code"] == 128 + signal.SIGTERM
        assert (outputs / "grandchild.term").read_text() == "TERM\n"  # the TERM reached it, not only its parent
        wait_for(lambda: not any(alive(pid) for pid in pids), 10, "the child and grandchild to end")
        assert not (outputs / "late.txt").exists() and not (outputs / "after.txt").exists()
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_trainer_saving_on_term_finishes_before_the_exit_marker(tmp_path):
    """The subshell waits for its current step after the TERM (a trainer may save a checkpoint), then ends with
    143 without running the rest of the chain."""
    trainer = tmp_path / "trainer.py"
    trainer.write_text("import pathlib, signal, sys, time\n"
                       "out = pathlib.Path(sys.argv[1])\n"
                       "def stop(*_):\n"
                       "    time.sleep(0.5)\n"
                       "    (out / 'saved.txt').write_text('checkpoint')\n"
                       "    sys.exit(0)\n"
                       "signal.signal(signal.SIGTERM, stop)\n"
                       "(out / 'started.txt').write_text('')\n"
                       "time.sleep(300)\n")
    job = make_job(tmp_path, f"{sys.executable} {trainer} {{outputs_dir}} {{config}} && echo next > "
                             "{outputs_dir}/next.txt")
    proc = job.start()
    try:
        wait_for(lambda: (job.outputs() / "started.txt").exists(), 20, "the trainer to start")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 143
        assert (job.outputs() / "saved.txt").read_text() == "checkpoint"
        assert not (job.outputs() / "next.txt").exists()
        assert job.marker("exit")["exit_code"] == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the claim guard -----------------------------------------------------------------------------------------------
def test_a_second_task_for_a_claimed_config_exits_without_running(tmp_path):
    job = make_job(tmp_path, "test -f {config} && echo ran >> {outputs_dir}/runs.txt; echo in the log")
    first = job.run(task_id="100_0")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in [job.log(), *job.markers.iterdir()] if p.is_file()}
    second = job.run(task_id="200_0")
    assert second.returncode == 0, second.stderr
    assert second.stdout == ("hpc-sweep: config001 attempt 1 already claimed by task 100_0; this duplicate task "
                             "exits without running\n")
    assert (job.outputs() / "runs.txt").read_text() == "ran\n"
    duplicate = job.markers / "config001.1.duplicate.200_0"
    assert json.loads(duplicate.read_text())["claimed_by"] == "100_0"
    after = {p.name: p.read_bytes() for p in [job.log(), *job.markers.iterdir()] if p.is_file()}
    assert {k: v for k, v in after.items() if k != duplicate.name} == before  # log and markers untouched
    assert (job.markers / "config001.1.claim" / "task").read_text() == "100_0\n"


def test_two_tasks_starting_together_run_the_command_once(tmp_path):
    job = make_job(tmp_path, "test -f {config} && echo $HPCS_NAME >> {outputs_dir}/runs.txt; sleep 1")
    procs = [job.start(task_id=f"{n}_0") for n in (300, 400)]
    outs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    assert (job.outputs() / "runs.txt").read_text() == "config001\n"
    duplicates = sorted(p.name for p in job.markers.glob("config001.1.duplicate.*"))
    owner = (job.markers / "config001.1.claim" / "task").read_text().strip()
    assert len(duplicates) == 1 and duplicates[0] != f"config001.1.duplicate.{owner}"


def test_the_same_task_again_runs_a_requeue(tmp_path):
    job = make_job(tmp_path, "test -f {config} && echo ran >> {outputs_dir}/runs.txt")
    for _ in range(2):
        done = job.run(task_id="500_0")
        assert done.returncode == 0 and "already claimed" not in done.stdout, done.stdout + done.stderr
    assert (job.outputs() / "runs.txt").read_text() == "ran\nran\n"
    assert not list(job.markers.glob("*.duplicate.*"))


def test_other_configs_of_the_array_are_not_held_by_a_claim(tmp_path):
    job = make_job(tmp_path, "test -f {config} && echo ran >> {outputs_dir}/runs.txt", count=2)
    assert job.run(index=0, task_id="600_0").returncode == 0
    assert job.run(index=1, task_id="600_1").returncode == 0
    assert all((job.outputs(i) / "runs.txt").read_text() == "ran\n" for i in (0, 1))


def test_no_markers_folder_no_run(tmp_path):
    job = make_job(tmp_path, "test -f {config} && echo ran >> {outputs_dir}/runs.txt")
    job.markers.rmdir()
    done = job.run()
    assert done.returncode == 3 and "cannot claim config001 attempt 1" in done.stderr
    assert not (job.outputs() / "runs.txt").exists()


def test_poll_names_each_duplicate_once(tmp_path):
    job = make_job(tmp_path, "test -f {config} && echo ran >> {outputs_dir}/runs.txt")
    assert job.run(task_id="700_0").returncode == 0
    assert job.run(task_id="800_0").returncode == 0

    def poll() -> str:
        argv = [sys.executable, "-m", "hpc_sweep.cli", "poll", str(job.root), "--force", "--no-submit"]
        done = subprocess.run(argv, capture_output=True, text=True, env=job.env(0, "x"))
        assert done.returncode == 0, done.stderr
        return done.stdout

    warning = "warning: a duplicate task of config001 attempt 1 (job 800_0) was stopped by the claim guard"
    assert warning in poll()
    assert warning not in poll()


# -- on the local backend, end to end ------------------------------------------------------------------------------
@pytest.fixture
def local_sweeps():
    made: list = []
    yield made
    for sweep in made:
        sweep.stop_everything()


def test_local_backend_runs_a_chained_command_whole(tmp_path, local_sweeps):
    from test_local_runner import TRAIN, all_finished, make_sweep, wait_until

    command = (f"test -f {{config}} && DEMO_EPOCH_SLEEP=0 {sys.executable} {TRAIN} {{config}} "
               "&& cp {config} {outputs_dir}/last.toml")
    sweep = make_sweep(tmp_path, command, grid={"process.train.optimizer.init_learning_rate": [1e-2, 1e-3]})
    local_sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    wait_until(lambda: all_finished(sweep, 2), 60, "both runs to end")
    final = sweep.status_json()
    for name, config in final.items():
        assert config["state"] == "completed" and config["attempt"] == 1, config
        assert config["epoch"] == config["max_epoch"] == 2, config  # the trainer ran whole
        last = sweep.root / "outputs" / name / "last.toml"
        assert last.read_text() == (sweep.root / "configs" / f"{name}.toml").read_text()


def test_local_cancel_reaches_the_whole_chained_command(tmp_path, local_sweeps):
    from test_local_runner import all_finished, base_env, make_sweep, wait_until

    command = "bash {sweep_dir}/slow.sh {outputs_dir} {config} && echo after > {outputs_dir}/after.txt"
    # A long grace: the runner's SIGKILL must not be what ends the command here, the forwarded TERM must.
    sweep = make_sweep(tmp_path, command, env=base_env(HPC_SWEEP_RUNNER_GRACE="60"))
    local_sweeps.append(sweep)
    (sweep.root / "slow.sh").write_text(SLOW)
    sweep.cli("submit", str(sweep.root))
    outputs = sweep.root / "outputs" / "config001"
    pids = started_child_and_grandchild(outputs)
    try:
        assert "cancelled 1 config(s)" in sweep.cli("cancel", str(sweep.root), "--yes").stdout
        wait_until(lambda: all_finished(sweep, 1), 20, "the cancelled run to end")
        assert (outputs / "grandchild.term").read_text() == "TERM\n"
        assert sweep.markers("config001")[1]["exit_code"] == 128 + signal.SIGTERM
        wait_for(lambda: not any(alive(pid) for pid in pids), 10, "the child and grandchild to end")
        assert not (outputs / "late.txt").exists() and not (outputs / "after.txt").exists()
        assert sweep.status_json()["config001"]["state"] == "cancelled"
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_smoke_run_claims_in_its_own_markers_and_the_real_run_still_runs(tmp_path, local_sweeps):
    from test_local_runner import Sweep, all_finished, make_sweep, trainer_command, wait_until

    command = trainer_command(0) + " && cp {config} {outputs_dir}/last.toml"
    sweep = make_sweep(tmp_path, command, smoke={"count": 1, "timeout": "1m"})
    local_sweeps.append(sweep)
    local_sweeps.append(Sweep(sweep.root / ".test", sweep.env))
    smoke = sweep.cli("smoke", str(sweep.root), check=False)
    assert smoke.returncode == 0 and "PASS config001" in smoke.stdout, smoke.stdout + smoke.stderr
    assert (sweep.root / ".test" / ".hpc_sweep" / "markers" / "config001.1.claim").is_dir()
    assert not (sweep.root / ".hpc_sweep" / "markers" / "config001.1.claim").exists()
    sweep.cli("submit", str(sweep.root))
    wait_until(lambda: all_finished(sweep, 1), 60, "the real run to end")
    assert sweep.status_json()["config001"]["state"] == "completed"
    assert (sweep.root / "outputs" / "config001" / "last.toml").exists()
    assert not list((sweep.root / ".hpc_sweep" / "markers").glob("*.duplicate.*"))
