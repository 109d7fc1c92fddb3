"""`hpc-sweep repair`: when state.db and its copy are both damaged, the state is rebuilt from the config files, the
job maps and the markers -- submission history kept, nothing submitted twice, nothing submitted by repair itself.

Stand-in Slurm commands (tests/test_state_lock.py) with markers written as the job script writes them, and one
end-to-end run on the local backend with real runs (tests/test_faults.py's gated trainer).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

from hpc_sweep.common.layout import SweepPaths
from slurm_cluster import wait_for  # tests/cluster, on sys.path through conftest.py
from test_faults import LocalSweep, sweeps  # noqa: F401  (the fixture stops the runners the test started)
from test_state_lock import SWEEP_TOML, StandInSweep, one_line


def damage_both(paths) -> None:
    for path in (paths.db, paths.db_backup):
        assert path.exists(), path
        with open(path, "r+b") as handle:
            handle.write(b"this is no longer an SQLite file" * 4)


def write_marker(paths, config: str, attempt: int, kind: str, **data) -> None:
    (paths.markers / f"{config}.{attempt}.{kind}").write_text(json.dumps(data) + "\n")


def rows(paths, sql: str) -> list:
    conn = sqlite3.connect(paths.db)
    try:
        return [tuple(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def table(sweep) -> dict:
    snapshot = json.loads(sweep.cli("status", str(sweep.root), "--format", "json").stdout)
    return {c["config"]: c for c in snapshot["configs"]}


def test_repair_rebuilds_submissions_attempts_and_states(tmp_path):
    """One array of three tasks: the first ended (exit 0), the second started, the third never started. Both state
    copies damaged: every command names `hpc-sweep repair`; repair gives back the submission with its id (from
    the start markers), each config's attempt and state, the job-name prefix and sequence; submits nothing. A
    config added later gets a new job name and the three are not submitted again."""
    sweep = StandInSweep(tmp_path)
    sweep.cli("submit", str(sweep.root))
    before = table(sweep)
    job_name = Path(rows(sweep.paths, "SELECT map FROM submissions")[0][0]).stem
    write_marker(sweep.paths, "config001", 1, "start", job_id="701_0", submission_id="701", host="n1", time=100.0,
                 index=0, pid=1)
    write_marker(sweep.paths, "config001", 1, "exit", exit_code=0, time=160.0)
    write_marker(sweep.paths, "config002", 1, "start", job_id="701_1", submission_id="701", host="n2", time=101.0,
                 index=1, pid=2)
    damage_both(sweep.paths)
    for command in ("status", "poll", "submit"):
        refused = sweep.cli(command, str(sweep.root), check=False)
        assert refused.returncode == 1 and "hpc-sweep repair" in one_line(refused.stderr), command
        assert "generate" not in refused.stderr

    repaired = sweep.cli("repair", str(sweep.root))
    assert "1 submitted" in repaired.stdout and "nothing was submitted" in repaired.stdout
    assert sorted(p.name.split("-")[0] for p in sweep.paths.state_dir.glob("*.corrupt-*")) == \
        ["state.db.bak.corrupt", "state.db.corrupt"]
    after = table(sweep)
    assert {k: (c["state"], c["attempt"], c["job_id"]) for k, c in after.items()} == {
        "config001": ("completed", 1, "701_0"), "config002": ("running", 1, "701_1"),
        "config003": ("pending", 1, "701_2")}
    assert {k: c["params"] for k, c in after.items()} == {k: c["params"] for k, c in before.items()}
    assert rows(sweep.paths, "SELECT name, scheduler_id, status, ntasks FROM submissions") == \
        [(job_name, "701", "submitted", 3)]
    assert rows(sweep.paths, "SELECT config, attempt, host, exit_code FROM attempts ORDER BY config") == \
        [("config001", 1, "n1", 0), ("config002", 1, "n2", None), ("config003", 1, None, None)]
    assert sweep.sbatch_calls() == 1

    (sweep.root / "sweep.toml").write_text(SWEEP_TOML.replace("[0.1, 0.2, 0.3]", "[0.1, 0.2, 0.3, 0.4]"))
    sweep.cli("generate", str(sweep.root))
    submitted = sweep.cli("submit", str(sweep.root))
    head, _, seq = job_name.rpartition("-")  # <prefix>-<shape>-<sequence>: the sequence goes on
    assert f"submitted {head}-{int(seq) + 1} as 702 (1 task)" in submitted.stdout, submitted.stdout
    assert sweep.sbatch_calls() == 2
    assert table(sweep)["config004"]["job_id"] == "702_0"  # Slurm: a one-task array too
    assert {k: c["state"] for k, c in table(sweep).items() if k != "config004"} == \
        {"config001": "completed", "config002": "running", "config003": "pending"}


def test_a_submission_no_task_of_which_started_is_looked_up_by_name(tmp_path):
    """No marker says whether the array was queued: it is rebuilt as an intent (configs pending, saying so) and the
    next poll finds it in the queue by its job name -- recorded, not submitted again."""
    sweep = StandInSweep(tmp_path)
    sweep.cli("submit", str(sweep.root))
    job_name = Path(rows(sweep.paths, "SELECT map FROM submissions")[0][0]).stem
    damage_both(sweep.paths)
    sweep.cli("repair", str(sweep.root))
    assert rows(sweep.paths, "SELECT name, status, scheduler_id FROM submissions") == [(job_name, "intent", None)]
    shown = table(sweep)
    assert {c["state"] for c in shown.values()} == {"pending"}
    assert all("looked up by name" in c["reason"] for c in shown.values())
    sweep.queue.write_text("".join(f"701_{i}|{702 + i}|701|{i}|{job_name}|PENDING|Priority|0:00|1:00:00|\n"
                                   for i in range(3)))
    sweep.cli("poll", str(sweep.root))
    assert rows(sweep.paths, "SELECT status, scheduler_id FROM submissions") == [("submitted", "701")]
    assert {k: (c["state"], c["job_id"]) for k, c in table(sweep).items()} == \
        {f"config00{i + 1}": ("pending", f"701_{i}") for i in range(3)}
    assert sweep.sbatch_calls() == 1


def test_config_numbers_come_from_the_files_and_retired_configs_are_kept(tmp_path):
    """The definition changed after generate (a value dropped, values added, order changed) and was not generated
    again: repair keeps each file's number, marks the dropped one as no longer in the definition, adds nothing
    that has no file; the next generate numbers the new values after every existing file."""
    sweep = StandInSweep(tmp_path)
    sweep.cli("submit", str(sweep.root))
    (sweep.root / "sweep.toml").write_text(SWEEP_TOML.replace("[0.1, 0.2, 0.3]", "[0.4, 0.3, 0.2, 0.05]"))
    damage_both(sweep.paths)
    sweep.cli("repair", str(sweep.root))
    assert rows(sweep.paths, "SELECT name, params, in_definition, attempt FROM configs ORDER BY idx") == [
        ("config001", '{"lr": 0.1}', 0, 1), ("config002", '{"lr": 0.2}', 1, 1), ("config003", '{"lr": 0.3}', 1, 1)]
    generated = sweep.cli("generate", str(sweep.root))
    assert "2 written, 2 unchanged" in generated.stdout
    assert rows(sweep.paths, "SELECT name, params FROM configs WHERE idx > 3 ORDER BY idx") == [
        ("config004", '{"lr": 0.4}'), ("config005", '{"lr": 0.05}')]


def test_repair_leaves_a_readable_state_alone_unless_forced(tmp_path):
    sweep = StandInSweep(tmp_path)
    sweep.cli("submit", str(sweep.root))
    refused = sweep.cli("repair", str(sweep.root), check=False)
    assert refused.returncode == 2 and "nothing to repair" in one_line(refused.stderr) and "--force" in refused.stderr
    write_marker(sweep.paths, "config002", 1, "start", job_id="701_1", submission_id="701", host="n1", time=1.0,
                 index=1, pid=1)
    forced = sweep.cli("repair", str(sweep.root), "--force")
    assert "state.db.replaced-" in forced.stdout
    assert {c["job_id"] for c in table(sweep).values()} == {"701_0", "701_1", "701_2"}


def test_repair_mid_sweep_on_real_runs_runs_nothing_twice(tmp_path, sweeps):
    """On the local backend with real runs: one config finished, two running, one queued in an array whose other
    tasks started, one queued in a later submission no task of which started, one never submitted (queue cap).
    Both state copies damaged, repair, then polls to the end: every state right after repair, every config runs
    exactly once, the unsubmitted one is submitted and completes."""
    sweep = LocalSweep(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    sweeps.append(sweep)
    (sweep.root / "site.toml").write_text('scheduler = "local"\ncpu_slots = 2\nmax_queued = 4\n'
                                          'poll_min_interval = "1s"\n')
    sweep.cli("submit", str(sweep.root))
    wait_for(lambda: set(sweep.starts()) == {"config001", "config002"}, 60, what="two runs to start")
    sweep.release("config001", 1, 2, 3)
    wait_for(lambda: "config003" in sweep.starts(), 60, what="config003 to start in the freed slot")
    sweep.cli("poll", str(sweep.root), "--force")  # records config001's end and submits config005 (room for 1)
    before = sweep.status()
    assert {k: c["state"] for k, c in before.items()} == {
        "config001": "completed", "config002": "running", "config003": "running", "config004": "pending",
        "config005": "pending", "config006": "waiting"}
    assert len(list(sweep.root.glob("script/*.map"))) == 2

    damage_both(SweepPaths.at(sweep.root))
    repaired = sweep.cli("repair", str(sweep.root))
    assert "1 intent, 1 submitted" in repaired.stdout, repaired.stdout
    after = sweep.status()
    assert {k: (c["state"], c["attempt"]) for k, c in after.items()} == {
        "config001": ("completed", 1), "config002": ("running", 1), "config003": ("running", 1),
        "config004": ("pending", 1), "config005": ("pending", 1), "config006": ("generated", 0)}
    assert {k: after[k]["job_id"] for k in ("config001", "config002", "config003", "config004")} == \
        {k: before[k]["job_id"] for k in ("config001", "config002", "config003", "config004")}

    polled = sweep.cli("poll", str(sweep.root), "--force")
    assert not [line for line in polled.stdout.splitlines() if line.startswith("submitted ")], polled.stdout
    again = sweep.status()
    assert again["config005"]["job_id"] == before["config005"]["job_id"]
    assert again["config001"]["epoch"] == 3  # the logs are read again from their start
    sweep.release()

    def all_completed():
        sweep.cli("poll", str(sweep.root), "--force")  # polls that submit: config006 goes when there is room
        shown = sweep.status()
        return shown if {c["state"] for c in shown.values()} == {"completed"} else None

    final = wait_for(all_completed, 120, interval=0.3, what="every config to complete")
    assert all(c["epoch"] == 3 for c in final.values())
    assert sweep.starts() == Counter({f"config00{i}": 1 for i in range(1, 7)})


def test_a_repair_killed_half_way_leaves_the_damaged_state_as_it_was(tmp_path):
    """kill -9 inside the rebuild (the new database is built beside state.db): state.db is still the damaged file,
    nothing is set aside, every command still names repair; the next repair rebuilds it."""
    sweep = StandInSweep(tmp_path)
    sweep.cli("submit", str(sweep.root))
    damage_both(sweep.paths)
    damaged = sweep.paths.db.read_bytes()
    killed = sweep.cli("repair", str(sweep.root), check=False, HPC_SWEEP_FAULT="before_commit@2")
    assert killed.returncode == -9, (killed.stdout, killed.stderr)
    assert sweep.paths.db.read_bytes() == damaged
    assert not list(sweep.paths.state_dir.glob("*.corrupt-*"))
    assert "hpc-sweep repair" in one_line(sweep.cli("status", str(sweep.root), check=False).stderr)
    sweep.cli("repair", str(sweep.root))
    assert not (sweep.paths.state_dir / "state.db.rebuilding").exists()
    assert {c["state"] for c in table(sweep).values()} == {"pending"}
