"""The stand-in Slurm of the model tests (tests/standin/), checked on its own: what it prints parses with the real
Slurm adapter into the states it was driven to, its lines have the shape of real Slurm 22.05 captures, its faults
look as they do on a real controller, unknown argv fails loudly, and the harness's lock audit catches a write
made without the writers' lock."""

from __future__ import annotations

import getpass
import re
from pathlib import Path

import pytest

from hpc_sweep.schedulers.base import SchedulerError, SubmitSpec
from hpc_sweep.schedulers.slurm import SlurmScheduler

from standin.harness import ModelSweep
from standin.slurm import Clock, StandInSlurm, UnknownCommand
from standin.tasks import Workspace

CAPTURES = Path(__file__).resolve().parent / "fixtures" / "slurm-22.05"
USER = getpass.getuser()


@pytest.fixture
def cluster(tmp_path):
    ws = Workspace(tmp_path / "standin")
    slurm = StandInSlurm(ws, Clock(ws.clock_file), USER, cap=6)
    yield slurm, tmp_path
    slurm.cleanup()


def write_job(tmp_path: Path, ws: Workspace, name: str, configs: int, limit: str = "1:00:00") -> Path:
    """A job script with the directives our template writes and a map beside it; each task runs the trainer."""
    script_dir = tmp_path / "script"
    script_dir.mkdir(exist_ok=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    (script_dir / f"{name}.map").write_text("".join(f"{i}\tcfg{i}\t1\t-\t-\tcpu\t0\n" for i in range(configs)))
    script = script_dir / f"{name}.sh"
    script.write_text(f"""#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --array=0-{configs - 1}
#SBATCH --output={tmp_path}/logs/%x_%a.out
#SBATCH --time={limit}
export HPCS_ATTEMPT=1
sh {ws.trainer} cfg$SLURM_ARRAY_TASK_ID {tmp_path}/out x
""")
    return script


def submit(slurm: StandInSlurm, adapter: SlurmScheduler, script: Path, name: str) -> str:
    spec = SubmitSpec(script=str(script), job_name=name, workdir=str(script.parent.parent), indices=(0,))
    return adapter.parse_submit(slurm(adapter.submit_argv(spec), cwd=spec.workdir))


def test_outputs_parse_with_the_real_adapter_into_the_states_driven(cluster):
    slurm, tmp_path = cluster
    adapter = SlurmScheduler()
    script = write_job(tmp_path, slurm.ws, "hs-model-1", 5)
    job_id = submit(slurm, adapter, script, "hs-model-1")
    assert [(a.config, a.attempt) for a in slurm.accepted] == [(f"cfg{i}", 1) for i in range(5)]

    tasks = slurm.start_pending(4)
    ends = {0: "exit0", 1: "exit1", 2: "timeout", 3: "node_fail"}
    for index, outcome in ends.items():
        slurm.finish(tasks[index], outcome)
    assert [line[:2] for line in slurm.ws.ledger_lines()] == [(f"cfg{i}", "1") for i in range(4)]
    assert (tmp_path / "out" / "finished.1").read_text().strip() == tasks[0].own_id  # only exit 0 ran whole
    assert "DUE TO TIME LIMIT" in (tmp_path / "logs" / "hs-model-1_2.out").read_text()

    live = adapter.parse_live(slurm(adapter.live_argv(USER)))
    assert [(r.task_id, r.state, r.reason, r.name) for r in live] == [
        (f"{job_id}_4", "pending", "Priority", "hs-model-1")]  # finished tasks left squeue at once

    acct = {r.task_id: r for r in adapter.parse_accounting(slurm(adapter.accounting_argv([job_id])))}
    assert {t: (r.state, r.exit_code) for t, r in acct.items()} == {
        f"{job_id}_0": ("completed", 0), f"{job_id}_1": ("failed", 1), f"{job_id}_2": ("timeout", None),
        f"{job_id}_3": ("node_fail", None), f"{job_id}_4": ("pending", None)}
    assert acct[f"{job_id}_0"].host == "standin1" and acct[f"{job_id}_4"].start is None

    assert slurm(adapter.cancel_argv([f"{job_id}_4"])).returncode == 0
    acct = {r.task_id: r for r in adapter.parse_accounting(slurm(adapter.accounting_argv([job_id])))}
    assert acct[f"{job_id}_4"].state == "cancelled" and acct[f"{job_id}_4"].raw_state == "CANCELLED by 1001"
    again = slurm(adapter.cancel_argv([f"{job_id}_4"]))
    assert again.returncode == 1 and "already completing or completed" in again.stderr

    limits = adapter.parse_limits([slurm(argv) for argv in adapter.limits_argvs(USER)])
    assert (limits.max_queued, limits.max_array_size, limits.max_job_count) == (6, 1001, 10000)


def test_faults_look_as_on_a_real_controller(cluster):
    slurm, tmp_path = cluster
    adapter = SlurmScheduler()
    script = write_job(tmp_path, slurm.ws, "hs-model-2", 4)

    slurm.sbatch_mode = "accept_timeout"  # queued, then the reply is lost
    with pytest.raises(SchedulerError) as lost:
        submit(slurm, adapter, script, "hs-model-2")
    assert lost.value.kind == "transient" and len(slurm.tasks()) == 4

    slurm.sbatch_mode = "ok"  # 4 queued + 4 more > MaxSubmitJobs 6
    with pytest.raises(SchedulerError) as refused:
        submit(slurm, adapter, script, "hs-model-2")
    assert refused.value.kind == "limit" and len(slurm.tasks()) == 4

    slurm.squeue_mode = "fail"
    with pytest.raises(SchedulerError) as failed:
        adapter.parse_live(slurm(adapter.live_argv(USER)))
    assert failed.value.kind == "transient"
    slurm.squeue_mode = "ok"

    slurm.accounting = False
    assert adapter.parse_accounting(slurm(adapter.accounting_argv(["1000"]))) == []

    slurm.freeze(lands=True)
    (task,) = slurm.start_pending(1) or [None]
    assert task is None  # a frozen controller starts nothing
    slurm.cap = 20
    frozen = slurm(adapter.submit_argv(SubmitSpec(script=str(script), job_name="hs-model-2",
                                                  workdir=str(tmp_path), indices=(0,))))
    assert frozen.returncode == 1 and "Socket timed out" in frozen.stderr and len(slurm.tasks()) == 4
    with pytest.raises(SchedulerError):
        adapter.parse_live(slurm(adapter.live_argv(USER)))
    slurm.thaw()  # the submission sent meanwhile lands before any later query is answered
    assert len(adapter.parse_live(slurm(adapter.live_argv(USER)))) == 8


def test_lines_have_the_shape_of_real_slurm_captures(cluster):
    slurm, tmp_path = cluster
    adapter = SlurmScheduler()
    script = write_job(tmp_path, slurm.ws, "hs-demo-fix", 4, limit="00:01:00")  # the captured job's limit
    job_id = submit(slurm, adapter, script, "hs-demo-fix")
    first, second = slurm.start_pending(2)
    slurm.finish(first, "exit0")
    fmt = "%i|%A|%F|%K|%j|%T|%r|%M|%l"  # the captures' columns
    ours = slurm(["squeue", "--me", "-r", "-h", "-o", fmt]).stdout.splitlines()
    real = (CAPTURES / "squeue_pipe_r.txt").read_text().splitlines()
    assert [shape(line) for line in ours] == [shape(real[0])] * 2 + [shape(real[-1])]  # pending, pending, running

    fields = "JobID,JobIDRaw,JobName,State,ExitCode,Elapsed,Start,End,AllocTRES"
    ours = slurm(["sacct", "-X", "-n", "-P", f"--format={fields}", "-j", job_id]).stdout.splitlines()
    real = (CAPTURES / "sacct_X_P.txt").read_text().splitlines()
    assert shape(ours[0]) == shape(real[0])          # a COMPLETED task
    assert shape(ours[-1]) == shape(real[-1])        # the folded never-started tasks

    slurm.cap = 1
    refusal = slurm(adapter.submit_argv(SubmitSpec(script=str(script), job_name="x", workdir=str(tmp_path),
                                                   indices=(0,))))
    text, rc = (CAPTURES / "sbatch_limit_err.txt").read_text().rsplit("rc=", 1)
    assert (refusal.stderr, refusal.returncode) == (text, int(rc))
    config = slurm(["scontrol", "show", "config"]).stdout
    for line in (CAPTURES / "scontrol_config_limits.txt").read_text().splitlines():
        assert line in config


def shape(line: str) -> list:
    """A line's fields with digits, times and dates reduced to their form (values differ, forms must not)."""
    out = []
    for field in line.split("|"):
        field = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", "DATE", field)
        field = re.sub(r"\d+", "9", field)
        field = re.sub(r"billing=.*", "TRES", field)
        field = re.sub(r"hs-[\w-]+", "NAME", field)
        field = re.sub(r"^(Priority|Resources)$", "REASON", field)
        out.append(field)
    return out


def test_unknown_argv_fails_loudly(cluster):
    slurm, _ = cluster
    for argv in (["squeue", "--me", "-h", "-o", "%i"], ["squeue", "--me", "-r", "-h", "-o", "%i", "--sort=i"],
                 ["sacct", "-P", "-j", "1"], ["scancel", "--user=bob"], ["sinfo"], ["scontrol", "hold", "1"]):
        with pytest.raises(UnknownCommand):
            slurm(argv)
    assert len(slurm.errors) == 6


def test_a_sweep_runs_whole_through_the_cli_and_the_lock_audit_sees_unlocked_writes(tmp_path):
    sweep = ModelSweep(tmp_path, configs=2)
    try:
        assert sweep.cli("submit", str(sweep.root)).rc == 0
        sweep.slurm.start_pending()
        for task in sweep.slurm.running():
            sweep.slurm.finish(task, "exit0")
        assert sweep.cli("poll", str(sweep.root)).rc == 0
        status = sweep.status()
        assert [(c["state"], c["attempt"], c["job_id"], c["epoch"]) for c in status.values()] == [
            ("completed", 1, "1000_0", 2), ("completed", 1, "1000_1", 2)]
        assert all(sweep.ran_whole(name, 1) for name in status)
        assert sweep.audit.writes > 0 and sweep.audit.violations == []

        from hpc_sweep.common.layout import SweepPaths
        from hpc_sweep.state import health
        from hpc_sweep.state.lock import sweep_lock

        paths = SweepPaths.at(sweep.root)
        with sweep._in_process(None):  # the audit's own check: a write outside the lock, then one inside
            conn = health.connect(paths.db)  # the store refuses such writes itself; the audit must see them too
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', '1')")
            with sweep_lock(paths):
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', '2')")
            conn.close()
        assert len(sweep.audit.violations) == 1 and "probe" in sweep.audit.violations[0]
    finally:
        sweep.close()


def test_lookups_by_name_see_finished_jobs_until_min_job_age_and_sacct_keeps_its_window(cluster):
    """What a by-name lookup would get: squeue -t all shows a finished task until MinJobAge (300 s), plain squeue
    not at all; scancel --name reaches only that name; sacct --name without -j lists jobs since midnight."""
    slurm, tmp_path = cluster
    adapter = SlurmScheduler()
    ours, other = (write_job(tmp_path, slurm.ws, name, 1) for name in ("hs-ours-1", "hs-other-1"))
    submit(slurm, adapter, ours, "hs-ours-1")
    submit(slurm, adapter, other, "hs-other-1")
    (task,) = slurm.start_pending(1)
    slurm.finish(task, "exit0")
    fmt = "%i|%j|%T"
    assert slurm(["squeue", "--me", "-r", "-h", "-o", fmt, "--name=hs-ours-1"]).stdout == ""
    assert slurm(["squeue", "--me", "-r", "-h", "-t", "all", "-o", fmt, "--name=hs-ours-1"]).stdout == \
        "1000_0|hs-ours-1|COMPLETED\n"
    slurm.clock.advance(301)
    assert slurm(["squeue", "--me", "-r", "-h", "-t", "all", "-o", fmt, "--name=hs-ours-1"]).stdout == ""
    gone = slurm(["squeue", "--me", "-r", "-h", "-o", fmt, "-j", "1000"])
    assert gone.returncode == 1 and "Invalid job id specified" in gone.stderr

    found = slurm(["sacct", "-X", "-n", "-P", "--name=hs-ours-1", "--format=JobID,State"])
    assert found.stdout == "1000_0|COMPLETED\n"
    assert slurm(["scancel", "--me", "--name=hs-ours-1"]).returncode == 0
    assert [t.state for t in slurm.tasks()] == ["COMPLETED", "PENDING"]
    assert slurm(["scancel", "--me", "--name=hs-other-1"]).returncode == 0
    assert [t.state for t in slurm.tasks()] == ["COMPLETED", "CANCELLED"]
