"""The core promise, on a real single-node Slurm: arrays within the user's cap, exact GPU requests, chunks
under MaxArraySize, cancel of our jobs only, no duplicate after a crash, polling and automatic resume."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from cluster_sweeps import SLURM_SITE, hpc, make_user_sweep, poll_until_final, status

pytestmark = pytest.mark.slurm

# The test cluster's profile, with GPUs requested as gres (the cluster's node has 8).
SITE = {**SLURM_SITE, "gpu_request": "gres", "cpus_per_gpu": 1, "mem_per_gpu": "50M"}

RUNNER = """#!/bin/bash
# Test wrapper around the demo trainer: some configs fail, one outlives its walltime on its first attempt.
case "$HPCS_NAME" in
  {fail}) export DEMO_FAIL_AT_EPOCH=2 ;;
esac
if [ "$HPCS_NAME" = "{slow}" ] && [ "$HPCS_ATTEMPT" = 1 ]; then export DEMO_EPOCH_SLEEP=5; fi
exec {python} {train} "$1"
"""


def _sweep(cluster, name: str, grid: str, *, epochs: int = 3, walltime: str = "00:05:00", extra: str = "",
           fail: str = "none", slow: str = "none") -> Path:
    body = grid + f'\n[fixed]\n"process.train.max_epoch" = {epochs}\n' + extra
    return make_user_sweep(cluster, name, "{root}/run.sh {{config}}", body, site=SITE, scripts={"run.sh": RUNNER},
                           fill={"fail": fail, "slow": slow}, walltime=walltime, max_retries=1)


def start_markers(root: Path) -> Counter:
    return Counter(p.name.split(".")[0] for p in (root / ".hpc_sweep" / "markers").glob("*.start"))


TWO_SHAPES = """
[grid]
"system.device" = ["gpu*8:0", "gpu*8:0-1"]
"process.train.optimizer.init_learning_rate" = [0.1, 0.05, 0.03, 0.02, 0.01, 0.008, 0.005, 0.003, 0.002, 0.001, 0.0008, 0.0005]

[[configs]]
"system.device" = "gpu*8:3"
"process.train.optimizer.init_learning_rate" = 0.02
"""


def test_cap_two_shapes_hand_job_counts_all_run_once(slurm_cluster):
    cluster = slurm_cluster
    root = _sweep(cluster, "caps", TWO_SHAPES)
    assert hpc(cluster, root, "generate").returncode == 0
    cluster.set_user_limit(10)
    hand = cluster.run_as_user(["sbatch", "--parsable", "--hold", "--wrap", "sleep 600", "-J", "by-hand"], cwd=root)
    assert hand.returncode == 0, hand.stderr
    hand_id = hand.stdout.strip().split(";")[0]

    first = hpc(cluster, root, "submit")
    assert first.returncode == 0, first.stderr
    snap = status(cluster, root)
    submitted = [c for c in snap["configs"] if c["state"] in ("pending", "running", "completed")]
    assert len(submitted) == 9, first.stdout
    assert snap["counts"].get("waiting") == 16
    mine = [line for line in cluster.squeue_user() if "by-hand" not in line]
    assert len(mine) <= 9

    final = poll_until_final(cluster, root, interval=2)
    assert final["counts"] == {"completed": 25}, final["counts"]
    assert all(c["attempt"] == 1 for c in final["configs"])
    assert set(start_markers(root).values()) == {1} and len(start_markers(root)) == 25

    # sacct's AllocTRES shows what each group asked for: one and two GPUs.
    job_ids = sorted({c["job_id"].split("_")[0] for c in final["configs"]})
    wanted = {c["job_id"] for c in final["configs"]}

    rows = cluster.sacct_settled(job_ids, fmt="JobID,State,AllocTRES", expect=25, timeout=60)
    tres = {row[0]: row[-1] for row in rows}
    assert wanted <= set(tres)
    by_config = {c["config"]: c for c in final["configs"]}
    for cfg in final["configs"]:
        gpus = 2 if cfg["params"]["system.device"] == "gpu*8:0-1" else 1
        assert f"gres/gpu={gpus}" in tres[cfg["job_id"]], (cfg["config"], tres.get(cfg["job_id"]))
    # The job ran the allocation-view device string.
    run_cfg = (root / "script" / "run").glob("*.toml")
    assert any('device = "gpu*2"' in p.read_text() for p in run_cfg)
    assert by_config
    # The hand-submitted job was never touched.
    assert any(line.startswith(hand_id) for line in cluster.squeue_user())


def test_max_array_size_chunks_numbered_from_zero(slurm_cluster):
    cluster = slurm_cluster
    cluster.set_config(MaxArraySize=11)
    lrs = ", ".join(str(round(0.001 * (i + 1), 4)) for i in range(30))
    root = _sweep(cluster, "chunks", f'\n[grid]\n"process.train.optimizer.init_learning_rate" = [{lrs}]\n',
                  epochs=1)
    assert hpc(cluster, root, "generate").returncode == 0
    result = hpc(cluster, root, "submit")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("submitted ") == 3, result.stdout
    maps = sorted((root / "script").glob("*.map"))
    indices = [[int(line.split("\t")[0]) for line in m.read_text().splitlines()] for m in maps]
    assert sorted(len(i) for i in indices) == [8, 11, 11]
    assert all(i == list(range(len(i))) for i in indices)
    final = poll_until_final(cluster, root, interval=2)
    assert final["counts"] == {"completed": 30}
    assert set(start_markers(root).values()) == {1} and len(start_markers(root)) == 30


def test_cancel_only_this_sweeps_jobs(slurm_cluster):
    cluster = slurm_cluster
    root = _sweep(cluster, "cancel", '\n[grid]\n"process.train.optimizer.init_learning_rate" = [0.1, 0.01, 0.001]\n')
    hpc(cluster, root, "generate")
    other = cluster.run_as_user(["sbatch", "--parsable", "--hold", "--wrap", "sleep 600", "-J", "other"], cwd=root)
    other_id = other.stdout.strip()
    hold = cluster.run_as_user(["scontrol", "hold", "all"], cwd=root)  # harmless if it fails: we cancel quickly
    del hold
    assert hpc(cluster, root, "submit").returncode == 0
    result = hpc(cluster, root, "cancel", "--yes")
    assert result.returncode == 0, result.stderr
    lines = cluster.squeue_user()
    assert any(line.startswith(other_id) for line in lines), lines
    prefix = json.loads((root / "status.json").read_text())["configs"]
    assert all(c["state"] == "cancelled" for c in prefix)
    cluster.wait_for(lambda: all("other" in l or "by-hand" in l for l in cluster.squeue_user()) or None, timeout=30)


def test_kill_between_sbatch_and_recording_no_duplicate(slurm_cluster):
    cluster = slurm_cluster
    root = _sweep(cluster, "crash", '\n[grid]\n"process.train.optimizer.init_learning_rate" = [0.1, 0.01]\n')
    hpc(cluster, root, "generate")
    env = dict(cluster.env, HPC_SWEEP_FAULT="after_submit")
    crashed = hpc(cluster, root, "submit", env=env)
    assert crashed.returncode != 0
    assert len([l for l in cluster.squeue_user()]) >= 1 or start_markers(root)
    again = hpc(cluster, root, "submit")
    assert again.returncode == 0, again.stderr
    assert "found earlier submission" in again.stdout and "submitted " not in again.stdout
    final = poll_until_final(cluster, root, interval=2)
    assert final["counts"] == {"completed": 2}
    assert set(start_markers(root).values()) == {1}


def test_poll_states_reasons_resume_and_one_query(slurm_cluster, tmp_path):
    cluster = slurm_cluster
    grid = '\n[grid]\n"process.train.optimizer.init_learning_rate" = [0.05, 0.02, 0.01, 0.005]\n'
    root = _sweep(cluster, "track", grid, epochs=20, walltime="00:01:00", fail="config002", slow="config003")
    assert hpc(cluster, root, "generate").returncode == 0
    assert hpc(cluster, root, "submit").returncode == 0
    calls = root / "calls.jsonl"
    subprocess.run(["chown", f"{cluster.user}:", str(root)], check=True)
    env = dict(cluster.env, HPC_SWEEP_CALL_LOG=str(calls))
    polls = 0

    def settled():
        nonlocal polls
        result = hpc(cluster, root, "poll", "--force", env=env)
        polls += 1
        assert result.returncode == 0, result.stderr
        snap = status(cluster, root)
        states = {c["config"]: c for c in snap["configs"]}
        done = states["config003"]["state"] == "completed" and states["config003"]["attempt"] == 2
        return snap if done and all(c["state"] not in ("pending", "running", "waiting") for c in snap["configs"]) \
            else None

    snap = cluster.wait_for(settled, timeout=420, interval=3)
    states = {c["config"]: c for c in snap["configs"]}
    assert states["config001"]["state"] == "completed" and states["config004"]["state"] == "completed"
    assert states["config001"]["epoch"] == 20 and states["config001"]["best_val_loss"] is not None
    assert states["config002"]["state"] == "failed" and "RuntimeError" in (states["config002"]["reason"] or "")
    assert states["config002"]["attempt"] == 1  # failures are not retried automatically
    resumed_cfg = (root / "script" / "run" / "config003.a2.toml").read_text()
    assert "enable = true" in resumed_cfg and "previous_output_dir" in resumed_cfg
    events = hpc(cluster, root, "status", "--format", "csv").stdout
    assert "config003" in events
    # Manners: each poll made exactly one squeue call and at most one sacct call.
    lines = [json.loads(l) for l in calls.read_text().splitlines()]
    squeue = [l for l in lines if l["argv"][0] == "squeue"]
    sacct = [l for l in lines if l["argv"][0] == "sacct"]
    assert len(squeue) == polls, (len(squeue), polls)
    assert len(sacct) <= polls


def test_smoke_reports_pass_and_fail_on_slurm(slurm_cluster):
    cluster = slurm_cluster
    grid = '\n[grid]\n"process.train.optimizer.init_learning_rate" = [0.05, 0.02, 0.01]\n'
    extra = '\n[smoke]\ncount = 2\ntimeout = "4m"\nwalltime = "00:05:00"\n[smoke.overrides]\n"process.train.max_epoch" = 3\n'
    root = _sweep(cluster, "smoky", grid, epochs=50, extra=extra, fail="config002")
    assert hpc(cluster, root, "generate").returncode == 0
    result = hpc(cluster, root, "smoke")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PASS config001" in result.stdout and "FAIL config002" in result.stdout
    assert "RuntimeError" in result.stdout
    # It went through the real scheduler, and the real sweep's state is untouched.
    assert list((root / ".test" / "script").glob("*.sh"))
    assert "#SBATCH" in next((root / ".test" / "script").glob("*.sh")).read_text()
    assert {c["state"] for c in status(cluster, root)["configs"]} == {"generated"}
    smoke_cfg = next((root / ".test" / "configs").glob("config001.toml")).read_text()
    assert "max_epoch = 3" in smoke_cfg
