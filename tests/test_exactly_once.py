"""Issue #12: a config is never submitted twice, nothing is lost, and status tells the truth when the scheduler
misbehaves. Each test reproduces a defect seen on the real Slurm 22.05 (or by reading the code) against stand-in
Slurm commands (tests/fakes/fakeslurm.py) that can accept a job and then time out, refuse, and fail lookups.

Duplicates are counted where they would happen: the jobs the stand-in accepted, per job name and per config.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fakes"))

import fakeslurm  # noqa: E402

from hpc_sweep.common.jobmap import parse_map  # noqa: E402


class Sweep:
    """A generic-program sweep of ``count`` configs on the stand-in Slurm, driven through the CLI."""

    def __init__(self, tmp_path: Path, count: int = 2):
        self.root = tmp_path / "sweep"
        (self.root / "configs").mkdir(parents=True)
        (self.root / "configs" / ".base_config.toml").write_text("lr = 0.1\n")
        lrs = ", ".join(str(0.1 * (i + 1)) for i in range(count))
        (self.root / "sweep.toml").write_text(textwrap.dedent(f"""\
            [sweep]
            name = "once"
            program = "generic"
            base = "configs/.base_config.toml"
            command = "true {{config}}"
            site = "slurm"
            max_retries = 1
            [grid]
            lr = [{lrs}]
            [log]
            path = "train.log"
            epoch = "epoch (\\\\d+)"
            """))
        bin_dir = tmp_path / "bin"
        fakeslurm.install(bin_dir)
        self.slurm = fakeslurm.Cluster(tmp_path / "slurm")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HPC_SWEEP_")}
        self.env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_SLURM_DIR=str(self.slurm.folder))
        assert self.cli("generate").returncode == 0

    def cli(self, command: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hpc_sweep.cli", command, str(self.root), *args], env=self.env,
                              capture_output=True, text=True, timeout=120)

    def status(self) -> dict:
        result = self.cli("status", "--format", "json")
        assert result.returncode == 0, result.stderr
        return {c["config"]: c for c in json.loads(result.stdout)["configs"]}

    @property
    def prefix(self) -> str:
        with sqlite3.connect(self.root / ".hpc_sweep" / "state.db") as conn:
            return conn.execute("SELECT value FROM meta WHERE key = 'prefix'").fetchone()[0]

    def queued_per_config(self) -> Counter:
        """How many accepted tasks the stand-in holds for each (config, attempt), through each job's map."""
        seen: Counter = Counter()
        for job in self.slurm.jobs(self.prefix):
            entries = parse_map((self.root / "script" / f"{job['name']}.map").read_text())
            seen.update((e.name, e.attempt) for e in entries if str(e.index) in job["tasks"])
        return seen

    def assert_never_twice(self) -> None:
        counts = self.queued_per_config()
        assert counts and max(counts.values()) == 1, counts


@pytest.fixture
def sweep(tmp_path):
    return Sweep(tmp_path)


def test_timed_out_sbatch_with_a_failing_lookup_holds_its_configs_until_the_scheduler_answers(sweep):
    """The controller queues the array but its reply is lost, and the lookup by name times out too: the outcome
    stays unknown, the configs are held (pending, with the reason) and nothing is sent again -- not by this submit,
    not by a submit while the controller is still away; the first lookup that answers records the job."""
    sweep.slurm.set_modes("sbatch", "queue-timeout")
    sweep.slurm.set_modes("squeue", "ok", "fail")  # the submit's live query answers, the lookup does not
    result = sweep.cli("submit")
    assert result.returncode == 0, result.stderr
    assert "outcome still unknown" in result.stdout
    assert len(sweep.slurm.calls("sbatch")) == 1
    held = sweep.status()
    assert {c["state"] for c in held.values()} == {"pending"} and all(c["job_id"] is None for c in held.values())
    assert all("not confirmed" in c["reason"] for c in held.values())

    sweep.slurm.set_modes("squeue", "fail")
    again = sweep.cli("submit")
    assert again.returncode != 0 and "could not be reached" in again.stderr
    assert len(sweep.slurm.calls("sbatch")) == 1

    polled = sweep.cli("poll", "--force")
    assert polled.returncode == 0, polled.stderr
    assert "found earlier submission" in polled.stdout
    (job,) = sweep.slurm.jobs(sweep.prefix)
    assert {c["job_id"] for c in sweep.status().values()} == {f"{job['id']}_0", f"{job['id']}_1"}
    assert len(sweep.slurm.calls("sbatch")) == 1
    sweep.assert_never_twice()


def test_a_refusal_after_a_time_out_proves_nothing_and_is_never_reached(sweep):
    """The issue's second reproduction: sbatch queues then says "Socket timed out" and squeue fails. The old loop
    sent the same array again (three arrays queued, one recorded; with a cap the resend was refused and recorded
    as refused, so later polls submitted the configs again). Now one array exists and it is the one recorded."""
    sweep.slurm.set_modes("sbatch", "queue-timeout", "limit", "queue-timeout")
    sweep.slurm.set_modes("squeue", "ok", "fail", "fail", "fail")
    assert sweep.cli("submit").returncode == 0
    for _ in range(3):
        sweep.cli("poll", "--force")  # the controller still away: nothing is sent
    assert len(sweep.slurm.calls("sbatch")) == 1
    sweep.cli("poll", "--force")
    sweep.cli("submit")
    assert len(sweep.slurm.jobs(sweep.prefix)) == 1 and len(sweep.slurm.calls("sbatch")) == 1
    assert {c["state"] for c in sweep.status().values()} == {"pending"}
    sweep.assert_never_twice()


def test_a_lookup_that_answers_not_there_sends_again_under_a_new_name(sweep):
    """The first sbatch timed out without queueing anything; squeue and accounting both answer that no job of its
    name exists, so it is sent again at once, under a new job name (a late landing of the first would be told
    apart and cancelled)."""
    sweep.slurm.set_modes("sbatch", "timeout", "ok")
    result = sweep.cli("submit")
    assert result.returncode == 0, result.stderr
    names = [json.loads(line)[-1] for line in (sweep.slurm.folder / "calls.log").read_text().splitlines()
             if json.loads(line)[0] == "sbatch"]
    assert len(names) == 2 and names[0] != names[1]
    assert any(f"--name={Path(names[0]).stem}" in " ".join(call) for call in sweep.slurm.calls("sacct"))
    (job,) = sweep.slurm.jobs(sweep.prefix)
    assert job["name"] == Path(names[1]).stem
    assert {c["job_id"] for c in sweep.status().values()} == {f"{job['id']}_0", f"{job['id']}_1"}
    sweep.assert_never_twice()


def test_accounting_that_does_not_answer_keeps_the_outcome_unknown(sweep):
    """squeue answers that the name is not queued, but sacct (which would know a job that already left the queue)
    fails: that is no answer, so nothing is sent again until accounting answers."""
    sweep.slurm.set_modes("sbatch", "timeout", "ok")
    sweep.slurm.set_modes("sacct", "fail")
    assert sweep.cli("submit").returncode == 0
    assert len(sweep.slurm.calls("sbatch")) == 1 and not sweep.slurm.jobs(sweep.prefix)
    assert {c["state"] for c in sweep.status().values()} == {"pending"}
    polled = sweep.cli("poll", "--force")  # accounting answers now: not there -> sent again in the same poll
    assert "never reached the scheduler" in polled.stdout and "submitted " in polled.stdout
    assert len(sweep.slurm.calls("sbatch")) == 2 and len(sweep.slurm.jobs(sweep.prefix)) == 1
    sweep.assert_never_twice()


def test_a_job_the_state_forgot_is_adopted_through_its_map(sweep):
    """A state restored from a copy older than a submission (or rebuilt) does not know a queued job of this sweep:
    the poll finds it by its job-name prefix, adopts it through script/<job>.map and submits nothing."""
    db = sweep.root / ".hpc_sweep" / "state.db"
    assert sweep.cli("status").returncode == 0
    shutil.copy(db, sweep.root / "old.db")
    assert sweep.cli("submit").returncode == 0
    shutil.copy(sweep.root / "old.db", db)
    assert {c["state"] for c in sweep.status().values()} == {"generated"}
    polled = sweep.cli("poll", "--force")
    assert polled.returncode == 0, polled.stderr
    assert "adopted job" in polled.stdout
    (job,) = sweep.slurm.jobs(sweep.prefix)
    assert {c["job_id"] for c in sweep.status().values()} == {f"{job['id']}_0", f"{job['id']}_1"}
    assert len(sweep.slurm.calls("sbatch")) == 1
    sweep.assert_never_twice()


def test_a_late_job_duplicating_queued_configs_is_cancelled(sweep):
    """A job of this sweep's name that would run configs already queued under another submission (a submit that
    landed after it was given up) is cancelled, and the recorded one is left alone."""
    assert sweep.cli("submit").returncode == 0
    (recorded,) = sweep.slurm.jobs(sweep.prefix)
    late = f"{sweep.prefix}-cpu-99"
    shutil.copy(sweep.root / "script" / f"{recorded['name']}.map", sweep.root / "script" / f"{late}.map")
    data = sweep.slurm.load()
    data["jobs"].append({"id": "777", "name": late, "array": True, "tasks": {"0": "PENDING", "1": "PENDING"}})
    sweep.slurm.save(data)
    polled = sweep.cli("poll", "--force")
    assert polled.returncode == 0, polled.stderr
    assert "cancelled job 777" in polled.stdout
    jobs = {job["id"]: set(job["tasks"].values()) for job in sweep.slurm.jobs(sweep.prefix)}
    assert jobs == {recorded["id"]: {"PENDING"}, "777": {"CANCELLED"}}
    assert {c["job_id"].split("_")[0] for c in sweep.status().values()} == {recorded["id"]}


def test_a_job_of_this_sweep_without_its_map_stops_all_submitting(tmp_path):
    """Without a map nobody can say which configs such a job runs: it is reported and nothing is submitted (a
    config could otherwise run twice) until it is gone; exit status 1 so cron mails it."""
    sweep = Sweep(tmp_path, count=3)
    assert sweep.cli("submit", "--only", "config001").returncode == 0
    data = sweep.slurm.load()
    data["jobs"].append({"id": "555", "name": f"{sweep.prefix}-cpu-42", "array": True, "tasks": {"0": "PENDING"}})
    sweep.slurm.save(data)
    result = sweep.cli("submit")
    assert result.returncode == 1 and "is missing" in result.stderr and "555" in result.stderr
    assert len(sweep.slurm.calls("sbatch")) == 1
    sweep.slurm.set_task_states("CANCELLED", job_id="555")
    assert sweep.cli("submit").returncode == 0
    assert len(sweep.slurm.calls("sbatch")) == 2


def test_cancel_cancels_a_submission_of_unknown_outcome_by_name(sweep):
    """#12 item 7: cancel said "cancelled 2 config(s)" without calling scancel, and the next poll set the configs
    back to pending. A submission whose outcome is unknown is cancelled by its exact job name."""
    sweep.slurm.set_modes("sbatch", "queue-timeout")
    sweep.slurm.set_modes("squeue", "ok", "fail", "fail")
    assert sweep.cli("submit").returncode == 0
    result = sweep.cli("cancel", "--yes")
    assert result.returncode == 0, result.stderr
    (job,) = sweep.slurm.jobs(sweep.prefix)
    assert [c for c in sweep.slurm.calls("scancel") if f"--name={job['name']}" in c]
    assert set(job["tasks"].values()) == {"CANCELLED"} or \
        set(sweep.slurm.jobs(sweep.prefix)[0]["tasks"].values()) == {"CANCELLED"}
    assert {c["state"] for c in sweep.status().values()} == {"cancelled"}
    sweep.cli("poll", "--force")
    sweep.cli("submit")
    assert {c["state"] for c in sweep.status().values()} == {"cancelled"}
    assert len(sweep.slurm.calls("sbatch")) == 1


def test_cancel_that_cannot_reach_the_scheduler_changes_nothing(sweep):
    sweep.slurm.set_modes("sbatch", "queue-timeout")
    sweep.slurm.set_modes("squeue", "ok", "fail", "fail")
    sweep.slurm.set_modes("scancel", "fail")
    assert sweep.cli("submit").returncode == 0
    before = sweep.status()
    result = sweep.cli("cancel", "--yes")
    assert result.returncode == 1 and "nothing more was cancelled" in result.stderr
    assert sweep.status() == before


def test_resubmission_message_says_how_the_run_starts(sweep):
    """#12 item 9: "will be resumed from its checkpoint" was printed when there was no checkpoint."""
    assert sweep.cli("submit").returncode == 0
    sweep.slurm.set_task_states("TIMEOUT")
    polled = sweep.cli("poll", "--force")
    assert polled.returncode == 0, polled.stderr
    assert "config001: resubmitted, restarted fresh: no checkpoint found" in polled.stdout
    assert "resumed from its checkpoint" not in polled.stdout.replace("resumed from its checkpoint if", "")
    assert {(c["state"], c["attempt"]) for c in sweep.status().values()} == {("pending", 2)}


def _write_marker(sweep: Sweep, key: str, kind: str, **data) -> None:
    markers = sweep.root / ".hpc_sweep" / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    (markers / f"{key}.{kind}").write_text(json.dumps(data))


def test_lost_counts_from_leaving_the_queue_and_a_late_exit_marker_corrects_it(sweep):
    """#12 item 5: the grace before `lost` counted from the start marker (a run of a day was lost at once when it
    left the queue), and an exit marker that became visible later (NFS attribute caching) was ignored."""
    import time

    sweep.slurm.set_modes("sacct", *["disabled"] * 20)  # no accounting: only the queue and the markers
    assert sweep.cli("submit").returncode == 0
    (job,) = sweep.slurm.jobs(sweep.prefix)
    day_ago = time.time() - 86400
    _write_marker(sweep, "config001.1", "start", job_id=f"{job['id']}_0", submission_id=job["id"],
                  job_name=job["name"], host="node1", time=day_ago)
    sweep.slurm.set_task_states("COMPLETED", job_id=job["id"])  # both tasks leave the queue
    assert sweep.cli("poll", "--force").returncode == 0
    after_leaving = sweep.status()
    assert after_leaving["config001"]["state"] == "running"  # started a day ago, but left the queue only now
    assert after_leaving["config002"]["state"] == "pending"
    with sqlite3.connect(sweep.root / ".hpc_sweep" / "state.db") as conn:
        conn.execute("UPDATE attempts SET left_queue_at = left_queue_at - 700, submitted_at = submitted_at - 700")
    assert sweep.cli("poll", "--force").returncode == 0
    lost = sweep.status()
    assert lost["config001"]["state"] == "lost" and "started on node1" in lost["config001"]["reason"]
    assert lost["config002"]["state"] == "lost" and "never started" in lost["config002"]["reason"]
    outputs = sweep.root / "outputs" / "config001"
    (outputs / "train.log").write_text("epoch 1\nepoch 2\n")
    _write_marker(sweep, "config001.1", "exit", exit_code=0, time=time.time())
    polled = sweep.cli("poll", "--force")
    assert "config001: lost -> completed" in polled.stdout
    final = sweep.status()
    assert final["config001"]["state"] == "completed" and final["config001"]["epoch"] == 2
    assert final["config002"]["state"] == "lost"
    assert len(sweep.slurm.calls("sbatch")) == 1


def test_exit_markers_end_runs_while_the_controller_is_away(sweep):
    """#12 item 6: with squeue failing, a run's exit marker still ends it (the controller's silence changes no
    state by itself)."""
    import time

    assert sweep.cli("submit").returncode == 0
    (job,) = sweep.slurm.jobs(sweep.prefix)
    (sweep.root / "outputs" / "config002" / "train.log").write_text("epoch 1\n")
    _write_marker(sweep, "config002.1", "start", job_id=f"{job['id']}_1", submission_id=job["id"],
                  job_name=job["name"], host="node1", time=time.time() - 5)
    _write_marker(sweep, "config002.1", "exit", exit_code=0, time=time.time())
    sweep.slurm.set_modes("squeue", "fail")
    polled = sweep.cli("poll", "--force")
    assert polled.returncode == 0 and "could not be reached" in polled.stdout
    states = {name: c["state"] for name, c in sweep.status().items()}
    assert states == {"config001": "pending", "config002": "completed"}


def test_pbs_lookup_that_fails_leaves_the_submission_open_and_the_poll_goes_on(tmp_path):
    """#12 item 12: on PBS a name lookup (qselect -N) that failed inside reconciliation aborted the whole poll as
    an internal error. Now the submission stays open, the poll finishes and says so; once qselect answers, the job
    is found and recorded, and nothing was submitted twice."""
    import fakepbs

    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text("lr = 0.1\n")
    (root / "site.toml").write_text('scheduler = "pbspro"\npoll_min_interval = "1s"\n')
    (root / "sweep.toml").write_text(textwrap.dedent("""\
        [sweep]
        name = "pbslookup"
        program = "generic"
        base = "configs/.base_config.toml"
        command = "true {config}"
        site = "site.toml"
        [grid]
        lr = [0.1, 0.2]
        [log]
        path = "train.log"
        epoch = "epoch (\\\\d+)"
        """))
    wrapper = tmp_path / "wrap"
    wrapper.mkdir()
    (wrapper / "qselect").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case " $* " in *" -N "*) [ -e {tmp_path}/lookups-fail ] && {{
            echo "qselect: cannot connect to server vm (errno=15010)" >&2; exit 255; }} ;; esac
        exec {fakepbs.FAKES_DIR}/qselect "$@"
        """))
    (wrapper / "qselect").chmod(0o755)
    env = fakepbs.environ(tmp_path, "pbspro")
    env.update(PATH=f"{wrapper}:{env['PATH']}", FAKE_PBS_USER=getpass.getuser())

    def cli(*args, **extra):
        return subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True,
                              env=dict(env, **extra), timeout=120)

    assert cli("generate", str(root)).returncode == 0
    assert cli("submit", str(root), HPC_SWEEP_FAULT="after_submit").returncode != 0  # killed after qsub
    (tmp_path / "lookups-fail").touch()
    polled = cli("poll", str(root), "--force")
    assert polled.returncode == 0, polled.stderr
    assert "outcome still unknown" in polled.stdout and "internal error" not in polled.stderr
    qsubs = lambda: [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qsub"]  # noqa: E731
    assert len(qsubs()) == 1
    (tmp_path / "lookups-fail").unlink()
    polled = cli("poll", str(root), "--force")
    assert polled.returncode == 0 and "found earlier submission" in polled.stdout, polled.stdout + polled.stderr
    assert len(qsubs()) == 1
    snap = json.loads(cli("status", str(root), "--format", "json").stdout)
    assert {c["state"] for c in snap["configs"]} == {"pending"} and all(c["job_id"] for c in snap["configs"])


def test_a_run_the_state_forgot_is_adopted_from_its_start_marker(sweep):
    """A state restored from a copy older than a submission whose job already LEFT the queue: its start markers
    name the job, which is adopted through its map, so its configs are not submitted again."""
    import time

    db = sweep.root / ".hpc_sweep" / "state.db"
    shutil.copy(db, sweep.root / "old.db")
    assert sweep.cli("submit").returncode == 0
    (job,) = sweep.slurm.jobs(sweep.prefix)
    for index, config in enumerate(("config001", "config002")):
        (sweep.root / "outputs" / config / "train.log").write_text("epoch 1\n")
        _write_marker(sweep, f"{config}.1", "start", job_id=f"{job['id']}_{index}", submission_id=job["id"],
                      job_name=job["name"], host="node1", time=time.time() - 60)
        _write_marker(sweep, f"{config}.1", "exit", exit_code=0, time=time.time())
    sweep.slurm.set_task_states("COMPLETED", job_id=job["id"])  # gone from squeue; sacct knows it
    shutil.copy(sweep.root / "old.db", db)
    polled = sweep.cli("poll", "--force")
    assert polled.returncode == 0, polled.stderr
    assert "adopted job" in polled.stdout
    final = sweep.status()
    assert {(c["state"], c["attempt"], c["job_id"]) for c in final.values()} == \
        {("completed", 1, f"{job['id']}_0"), ("completed", 1, f"{job['id']}_1")}
    assert len(sweep.slurm.calls("sbatch")) == 1
