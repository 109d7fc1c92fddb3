"""`hpc-sweep repair` of a sweep with early stopping and adaptive search (issue #16): what the rule stopped comes
back `stopped` with its reason (from the stop records end_runs leaves among the markers), and the search's trials
come back from the configs, so the sampler goes on without asking for any parameters twice and the budget holds.

End to end on the local backend (the CLI, the detached runner, the demo trainer genuinely training), with both
state copies damaged between polls.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_early_stop_local import FINAL, MAX_EPOCH, early_stop_sweep, logged_epochs, poll_until_final
from test_local_runner import base_env, wait_until
from test_repair import damage_both
from test_search_local import LR, SEARCH, search_sweep, trials

from hpc_sweep.common.formats import tomllib
from hpc_sweep.common.layout import SweepPaths


BUDGET = 10


def query(root: Path, sql: str) -> list:
    conn = sqlite3.connect(f"file:{root / '.hpc_sweep' / 'state.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_repair_brings_stopped_runs_back_as_stopped_with_their_reason(tmp_path: Path, sweeps) -> None:
    sweep = early_stop_sweep(tmp_path)
    sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    before = poll_until_final(sweep, 120)
    stopped = sorted(name for name, c in before.items() if c["state"] == "stopped")
    assert len(stopped) >= 2, before
    saved_before = {name: before[name]["epochs_saved"] for name in stopped}
    for name in stopped:  # each stop left its record among the markers, with the state and reason
        record = json.loads((sweep.root / ".hpc_sweep" / "markers" / f"{name}.1.stop").read_text())
        assert record["state"] == "stopped" and record["why"] == before[name]["reason"], record
    assert not any(p.name.startswith(c) for p in (sweep.root / ".hpc_sweep" / "markers").glob("*.stop")
                   for c in before if c not in stopped)

    # One stopped config is brought back by hand just before the damage: the rule must leave it alone after repair.
    back, stopped = stopped[0], stopped[1:]
    sweep.cli("resubmit", str(sweep.root), back)

    damage_both(SweepPaths.at(sweep.root))
    sweep.cli("repair", str(sweep.root))
    after = json.loads(sweep.cli("status", str(sweep.root), "--format", "json").stdout)
    states = {c["config"]: c for c in after["configs"]}
    assert {n: (c["state"], c["reason"]) for n, c in states.items() if n in stopped} == \
        {n: ("stopped", before[n]["reason"]) for n in stopped}
    assert states[back]["state"] in ("pending", "running", "completed") and states[back]["attempt"] == 2
    assert query(sweep.root, f"SELECT exempt FROM early_stops WHERE config = '{back}'") == [(1,)]
    assert {n for n, c in states.items() if c["state"] == "completed"} - {back} == \
        {n for n, c in before.items() if c["state"] == "completed"}
    # The epochs not trained: the last epoch each stopped run logged (read whole now: a stopped trainer may log
    # the epoch it was in while it winds down, after the poll that stopped it read its log), and its planned last.
    for name in stopped:
        last = logged_epochs(sweep, name)[-1]
        assert query(sweep.root, f"SELECT stopped_epoch, max_epoch FROM early_stops WHERE config = '{name}'") == \
            [(last, MAX_EPOCH)]
        assert states[name]["epochs_saved"] == MAX_EPOCH - last <= saved_before[name]
    assert after["epochs_saved"] == sum(states[name]["epochs_saved"] for name in stopped) > 0
    # Later polls leave them stopped and run nothing again; the config brought back trains on to its last epoch.
    again = poll_until_final(sweep, 120)
    assert {n: (c["state"], c["attempt"]) for n, c in again.items() if n != back} == \
        {n: (c["state"], c["attempt"]) for n, c in before.items() if n != back}
    assert again[back]["state"] == "completed" and again[back]["attempt"] == 2
    assert logged_epochs(sweep, back)[-1] == MAX_EPOCH


def test_repair_gives_a_search_its_trials_back(tmp_path: Path, sweeps) -> None:
    pytest.importorskip("optuna")
    sweep = search_sweep(tmp_path, {**SEARCH, "search": {**SEARCH["search"], "budget": BUDGET}}, base_env())
    sweeps.append(sweep)
    sweep.cli("generate", str(sweep.root))
    sweep.cli("submit", str(sweep.root))

    def some_ended() -> dict:  # the first runs ended; the polls that saw it asked for more
        states = sweep.status_json()
        return states if sum(c["state"] in FINAL for c in states.values()) >= 3 else None

    states = wait_until(some_ended, 150, "three configs to end", interval=0.2)
    recorded = trials(sweep.root)
    assert 2 < len(recorded) < BUDGET, recorded
    asked = {config: json.loads(params) for _, config, params, _, _ in recorded}

    damage_both(SweepPaths.at(sweep.root))
    out = sweep.cli("repair", str(sweep.root)).stdout
    assert "no longer in the definition" not in out, out  # the search's configs are its definition's
    assert query(sweep.root, "SELECT COUNT(*) FROM configs WHERE in_definition = 0") == [(0,)]
    rebuilt = trials(sweep.root)
    assert [(n, c, json.loads(p)) for n, c, p, _, _ in rebuilt] == [(n, c, json.loads(p)) for n, c, p, _, _ in recorded]
    told = {config: (state, value) for _, config, _, state, value in rebuilt}
    repaired = {c["config"]: c for c in json.loads(sweep.cli("status", str(sweep.root), "--format",
                                                             "json").stdout)["configs"]}
    for config, (state, value) in told.items():
        ended = repaired[config]["state"]
        if ended == "completed":  # told from the run's own curve: its best value
            assert state == "complete" and value == pytest.approx(repaired[config]["best_val_loss"], rel=1e-6)
        elif ended == "stopped":
            assert state == "pruned"
        else:
            assert state == "running", (config, ended, state)
    assert {state for state, _ in told.values()} & {"complete", "pruned"}, told
    assert {n: c["state"] for n, c in repaired.items() if c["state"] in ("completed", "stopped")} == \
        {n: c["state"] for n, c in states.items() if n in repaired and c["state"] in ("completed", "stopped")}

    # The search goes on: every config asked once, parameters never asked twice, never past the budget.
    states = poll_until_final(sweep, 150)
    while len(states) < BUDGET:
        states = poll_until_final(sweep, 150)
    sweep.cli("poll", str(sweep.root), "--force")
    final = trials(sweep.root)
    assert [row[0] for row in final] == list(range(BUDGET))
    assert sorted(states) == [f"config{n:03d}" for n in range(1, BUDGET + 1)]
    assert not (sweep.root / "configs" / f"config{BUDGET + 1:03d}.toml").exists()
    written = [tomllib.loads((sweep.root / "configs" / f"{c}.toml").read_text())["process"]["train"]["optimizer"]
               ["init_learning_rate"] for c in sorted(states)]
    assert len(set(written)) == BUDGET, written
    for config, params in asked.items():
        assert json.loads(dict((c, p) for _, c, p, _, _ in final)[config]) == params
    assert {row[3] for row in final} <= {"complete", "pruned"}
    assert LR in json.loads(final[0][2])


def running_stand_in(tmp_path: Path, started: int = 3):
    """A stand-in Slurm sweep of three configs, the first ``started`` running (start markers and the queue say
    so), the others queued."""
    from test_repair import rows, write_marker
    from test_state_lock import StandInSweep

    sweep = StandInSweep(tmp_path)
    sweep.cli("submit", str(sweep.root))
    job_name = Path(rows(sweep.paths, "SELECT map FROM submissions")[0][0]).stem
    for i in range(started):
        write_marker(sweep.paths, f"config00{i + 1}", 1, "start", job_id=f"701_{i}", submission_id="701",
                     host="n1", time=100.0 + i, index=i, pid=10 + i)
    sweep.queue.write_text("".join(
        f"701_{i}|{702 + i}|701|{i}|{job_name}|RUNNING|None|0:10|1:00:00|n1\n" if i < started else
        f"701_{i}|{702 + i}|701|{i}|{job_name}|PENDING|Priority|0:00|1:00:00|\n" for i in range(3)))
    sweep.cli("poll", str(sweep.root))
    assert list(sweep.states().values()) == ["running"] * started + ["pending"] * (3 - started)
    return sweep


def test_a_cancelled_run_is_restored_as_cancelled_and_a_run_that_ended_first_keeps_its_ending(tmp_path):
    """`hpc-sweep cancel` of two running (unpacked) tasks leaves each a stop record before scancel; the job script
    does not read it. After both state copies are damaged: the run whose exit came after its record is
    cancelled with the cancel's reason, one whose exit is older than the record keeps its own ending, and a run
    killed by a signal with no record of ours stays a failure."""
    from test_repair import write_marker

    sweep = running_stand_in(tmp_path)
    sweep.cli("cancel", str(sweep.root), "config001", "config002")
    assert "scancel 701_0 701_1" in sweep.calls.read_text()
    records = {}
    for name in ("config001", "config002"):
        records[name] = json.loads((sweep.paths.markers / f"{name}.1.stop").read_text())
        assert records[name]["state"] == "cancelled" and records[name]["why"] == "cancelled by hpc-sweep cancel"
    assert not (sweep.paths.markers / "config003.1.stop").exists()
    write_marker(sweep.paths, "config001", 1, "exit", exit_code=143, time=int(records["config001"]["time"]) + 3)
    write_marker(sweep.paths, "config002", 1, "exit", exit_code=1, time=int(records["config002"]["time"]) - 60)
    write_marker(sweep.paths, "config003", 1, "exit", exit_code=143, time=int(records["config001"]["time"]) + 3)

    damage_both(sweep.paths)
    sweep.cli("repair", str(sweep.root))
    shown = {c["config"]: (c["state"], c["reason"]) for c in json.loads(
        sweep.cli("status", str(sweep.root), "--format", "json").stdout)["configs"]}
    assert shown["config001"] == ("cancelled", "cancelled by hpc-sweep cancel")
    assert shown["config002"][0] == "failed" and "exit code 1" in shown["config002"][1]
    assert shown["config003"] == ("failed", "failed: killed by signal 15")


def test_a_cancel_the_scheduler_refuses_leaves_no_stop_record(tmp_path):
    sweep = running_stand_in(tmp_path)
    scancel = tmp_path / "bin" / "scancel"
    scancel.write_text("#!/bin/sh\necho 'scancel: error: Access/permission denied' >&2\nexit 1\n")
    refused = sweep.cli("cancel", str(sweep.root), "config001", check=False)
    assert refused.returncode != 0 and "permission denied" in refused.stderr
    assert not list(sweep.paths.markers.glob("*.stop"))
    assert sweep.states()["config001"] == "running"


def test_a_queued_task_cancelled_before_it_started_stays_cancelled(tmp_path):
    """No start or exit marker: only its stop record says the task was ended; repair does not queue it again."""
    sweep = running_stand_in(tmp_path, started=2)
    sweep.cli("cancel", str(sweep.root), "config003")
    assert "scancel 701_2" in sweep.calls.read_text()
    damage_both(sweep.paths)
    sweep.cli("repair", str(sweep.root))
    shown = {c["config"]: (c["state"], c["reason"]) for c in json.loads(
        sweep.cli("status", str(sweep.root), "--format", "json").stdout)["configs"]}
    assert shown == {"config001": ("running", None), "config002": ("running", None),
                     "config003": ("cancelled", "cancelled by hpc-sweep cancel")}
