"""Faults on the real single-node Slurm (tests/cluster): hpc-sweep killed with SIGKILL around sbatch, slurmctld
stopped during a poll, slurmdbd stopped while runs end.

Duplicates are counted two independent ways: every run appends a line to <sweep>/starts.log when it starts (one per
config expected), and Slurm's accounting lists the jobs of this sweep by name (one array per job name expected).
Runs wait for <sweep>/go before training, so a test decides whether jobs are still queued or long finished when
the next command reconciles. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from cluster_sweeps import TINY, hpc, make_user_sweep, poll_until_final, prefix_of, status, toml_body

pytestmark = pytest.mark.slurm

RUNNER = """#!/bin/bash
# One line per run that starts (duplicates show), then wait (at most 5 min) for the test's go-ahead.
echo "$HPCS_NAME ${{SLURM_ARRAY_JOB_ID:-?}}_${{SLURM_ARRAY_TASK_ID:-?}}" >> {root}/starts.log
for _ in $(seq 1500); do [ -e {root}/go ] && break; sleep 0.2; done
case "$HPCS_NAME" in {fail}) export DEMO_FAIL_AT_EPOCH=1 ;; esac
exec {python} {train} "$1"
"""


def make_sweep(cluster, name: str, count: int = 3, fail: str = "none") -> Path:
    lrs = [round(0.01 * (i + 1), 3) for i in range(count)]
    return make_user_sweep(cluster, name, "{root}/run.sh {{config}}",
                           toml_body({"process.train.optimizer.init_learning_rate": lrs}, TINY),
                           scripts={"run.sh": RUNNER}, fill={"fail": fail}, generate=True, walltime="00:05:00",
                           max_retries=0)


def states(snapshot: dict) -> dict:
    return {c["config"]: (c["state"], c["attempt"], c["job_id"]) for c in snapshot["configs"]}


def starts(root: Path) -> Counter:
    log = root / "starts.log"
    return Counter(line.split()[0] for line in log.read_text().splitlines()) if log.exists() else Counter()


def exits(root: Path) -> int:
    return len(list((root / ".hpc_sweep" / "markers").glob("*.exit")))


def ours_in_queue(cluster, prefix: str) -> list:
    return [line for line in cluster.squeue_user(fmt="%i|%j") if line.split("|", 1)[1].startswith(prefix)]


def arrays_by_name(cluster, prefix: str, tasks: int) -> dict:
    """Job name -> the array job ids Slurm accounted under it, once accounting has settled (all tasks final, the
    same answer twice)."""
    last = [None]

    def settled():
        result = cluster.run_as_root(["sacct", "-X", "-n", "-P", "-u", cluster.user, "-S", "now-3hours",
                                      "--format=JobID,JobName,State"])
        rows = [line.split("|") for line in result.stdout.splitlines() if line.strip()]
        rows = [r for r in rows if r[1].startswith(prefix)]
        ok = result.returncode == 0 and len(rows) >= tasks and all(
            "[" not in r[0] and r[2].split()[0] in cluster.FINAL_STATES for r in rows)
        if not ok or rows != last[0]:
            last[0] = rows if ok else None
            return None
        found = defaultdict(set)
        for job_id, name, _ in rows:
            found[name].add(job_id.split("_")[0])
        return dict(found)

    return cluster.wait_for(settled, timeout=90, interval=1, what="sacct to settle")


def polled_states(cluster, root: Path) -> dict:
    result = hpc(cluster, root, "poll", "--force")
    assert result.returncode == 0, result.stderr
    return states(status(cluster, root))


def release(root: Path) -> None:
    (root / "go").touch()


# -- kill -9 around sbatch -------------------------------------------------------------------------------------
CASES = [
    # (fault point, the command killed there, the command that comes next, whether the jobs still wait in the
    # queue when it runs)
    ("before_submit", "submit", "submit", False),
    ("after_submit", "submit", "submit", True),
    ("after_submit", "submit", "poll", False),
    ("during_state_write", "submit", "submit", True),
    ("during_state_write", "submit", "poll", False),
    ("after_submit", "poll", "poll", True),  # a cron poll topping up the queue
]


@pytest.mark.parametrize("point,killed,then,queued", CASES,
                         ids=[f"{k}-killed-{p}-then-{t}-{'queued' if q else 'finished'}" for p, k, t, q in CASES])
def test_submit_killed_next_command_reconciles_no_duplicate_nothing_lost(slurm_cluster, point, killed, then, queued):
    """kill -9 of `submit` (or of a poll submitting) before sbatch, after it and before the id is recorded, or
    inside the transaction that records it; the next submit or poll reconciles (by name against the queue, or
    from the markers of jobs that already left it): every config ends completed, ran exactly once, and Slurm holds
    one array per job name."""
    cluster = slurm_cluster
    root = make_sweep(cluster, f"kill-{point.replace('_', '')}-{killed}-{then}")
    if not queued:
        release(root)
    crashed = hpc(cluster, root, killed, *(["--force"] if killed == "poll" else []), env={"HPC_SWEEP_FAULT": point})
    assert crashed.returncode in (-9, 137), (crashed.returncode, crashed.stdout, crashed.stderr)  # SIGKILL
    prefix = prefix_of(root)
    if point == "before_submit":
        assert ours_in_queue(cluster, prefix) == [] and not (root / "starts.log").exists()
    else:
        submitted = cluster.wait_for(lambda: ours_in_queue(cluster, prefix) or starts(root), timeout=30,
                                     what="the array sbatch queued")
        assert submitted
    if not queued and point != "before_submit":
        # The jobs run, end and leave the queue: only their markers can tell the next command about them.
        cluster.wait_for(lambda: exits(root) == 3 and not ours_in_queue(cluster, prefix), timeout=120,
                         what="the jobs to finish and leave the queue")
    after = hpc(cluster, root, then, *(["--force"] if then == "poll" else []))
    assert after.returncode == 0, (after.stdout, after.stderr)
    if point == "before_submit":
        assert "submitted " in after.stdout, after.stdout      # the intent never reached Slurm: submitted anew
    else:
        assert "found" in after.stdout and "submitted " not in after.stdout, after.stdout
    release(root)
    final = poll_until_final(cluster, root, timeout=240)
    assert final["counts"] == {"completed": 3}, final["counts"]
    assert all(c["attempt"] == 1 for c in final["configs"])
    assert starts(root) == Counter({"config001": 1, "config002": 1, "config003": 1})
    arrays = arrays_by_name(cluster, prefix, tasks=3)
    assert len(arrays) == 1 and all(len(ids) == 1 for ids in arrays.values()), arrays
    (array_id,) = next(iter(arrays.values()))
    assert {c["job_id"].split("_")[0] for c in final["configs"]} == {array_id}


# -- the controller away -----------------------------------------------------------------------------------------
def test_slurmctld_down_poll_changes_nothing_says_so_and_recovers(slurm_cluster):
    """With slurmctld stopped, a poll ends in bounded time, exits 0, warns, records the note in status.json and
    changes no state on the controller's silence; runs that end meanwhile are ended by their own exit markers
    (#12 item 6); once it is back, polls settle the rest and the note is gone."""
    cluster = slurm_cluster
    root = make_sweep(cluster, "ctld-down")
    assert hpc(cluster, root, "submit").returncode == 0
    cluster.wait_for(lambda: {s for s, _, _ in polled_states(cluster, root).values()} == {"running"}, timeout=120,
                     what="all three running")
    before = states(status(cluster, root))
    cluster.stop_slurmctld()
    try:
        started = time.monotonic()
        polled = hpc(cluster, root, "poll", "--force", timeout=150)
        assert time.monotonic() - started < 130  # squeue gives up on its own; the tool's bound is 120 s
        assert polled.returncode == 0, polled.stderr
        assert "could not be reached" in polled.stdout and "states are as last known" in polled.stdout
        assert states(status(cluster, root)) == before
        saved = json.loads((root / "status.json").read_text())
        assert "could not be reached" in saved["scheduler_note"]
        assert "could not be reached" in hpc(cluster, root, "status").stdout
        # The runs end while the controller is away: their exit markers end them, the controller's silence does not.
        release(root)
        cluster.wait_for(lambda: exits(root) == 3, timeout=120, what="the runs' exit markers")
        again = hpc(cluster, root, "poll", "--force", timeout=150)
        assert again.returncode == 0 and "could not be reached" in again.stdout
        ended = status(cluster, root)
        assert {c["config"]: (c["state"], c["attempt"], c["job_id"]) for c in ended["configs"]} == \
            {name: ("completed", attempt, job) for name, (_, attempt, job) in before.items()}
        assert all(c["epoch"] == c["max_epoch"] == 1 for c in ended["configs"])  # the trainer ran whole
    finally:
        cluster.start_slurmctld()
    final = poll_until_final(cluster, root, timeout=240)
    assert final["counts"] == {"completed": 3}
    assert "scheduler_note" not in json.loads((root / "status.json").read_text())
    assert "could not be reached" not in hpc(cluster, root, "status").stdout
    assert starts(root) == Counter({"config001": 1, "config002": 1, "config003": 1})


def test_slurmdbd_down_markers_decide_completed_and_failed(slurm_cluster):
    """With slurmdbd stopped (sacct fails), runs that ended and left the queue are still completed or failed as
    their exit markers say, with the trainer's error as the reason; the poll says accounting was unavailable."""
    cluster = slurm_cluster
    root = make_sweep(cluster, "dbd-down", count=2, fail="config002")
    assert hpc(cluster, root, "submit").returncode == 0
    prefix = prefix_of(root)
    cluster.wait_for(lambda: len(starts(root)) == 2, timeout=120, what="both runs to start")
    cluster.stop_slurmdbd()
    try:
        sacct = cluster.run_as_root(["sacct", "-X", "-n", "-u", cluster.user])
        assert sacct.returncode != 0  # accounting really is unavailable
        release(root)
        cluster.wait_for(lambda: exits(root) == 2 and not ours_in_queue(cluster, prefix), timeout=120,
                         what="both runs to end and leave the queue")
        polled = hpc(cluster, root, "poll", "--force")
        assert polled.returncode == 0, polled.stderr
        assert "accounting unavailable" in polled.stdout and "markers decide" in polled.stdout, polled.stdout
        final = {c["config"]: c for c in status(cluster, root)["configs"]}
        assert final["config001"]["state"] == "completed"
        assert final["config002"]["state"] == "failed"
        assert "RuntimeError" in (final["config002"]["reason"] or ""), final["config002"]
        assert all(c["attempt"] == 1 for c in final.values())
    finally:
        cluster.start_slurmdbd()
    assert starts(root) == Counter({"config001": 1, "config002": 1})
