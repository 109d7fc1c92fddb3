"""Packing runs into allocations (issue #16) on the real test Slurm: K one-GPU configs share one array task, the
queue cap counts tasks, one config of a packed task is cancelled alone, and a packed task that hits its walltime
resumes each unfinished config (and queues again the one it never started); a node task gives each run its own GPU."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from cluster_sweeps import (SLURM_SITE, by_config, deeph_epochs, hpc, packing_sweep, poll_until_final, read_state,
                            status)

pytestmark = pytest.mark.slurm

# One CPU and a little memory per run: a task of three runs asks for three CPUs, so three tasks fit the node.
SITE = {**SLURM_SITE, "gpu_request": "gres", "cpus_per_gpu": 1, "mem_per_gpu": "50M"}



def _sweep(cluster, name: str, count: int, *, epochs: int, sleep: float = 0, walltime: str = "00:05:00",
           slow: tuple = (), **packing) -> Path:
    return packing_sweep(cluster, name, count, epochs=epochs, site={**SITE, **packing}, sleep=sleep,
                         walltime=walltime, slow=slow)


def _map_lines(root: Path) -> list:
    return [line.split("\t") for path in sorted((root / "script").glob("*.map"))
            for line in path.read_text().splitlines()]


def _marker(root: Path, config: str, attempt: int, kind: str):
    path = root / ".hpc_sweep" / "markers" / f"{config}.{attempt}.{kind}"
    return json.loads(path.read_text()) if path.exists() else None


def _own_log(root: Path, config: str, attempt: int = 1) -> str:
    return (root / "logs" / f"{config}.{attempt}.log").read_text()


def test_nine_one_gpu_configs_three_per_gpu_run_as_three_tasks_and_the_cap_counts_tasks(slurm_cluster):
    cluster = slurm_cluster
    root = _sweep(cluster, "pack9", 9, epochs=3, sleep=1, runs_per_gpu=3)
    cluster.set_user_limit(3)
    result = hpc(cluster, root, "submit")
    assert result.returncode == 0, result.stderr
    assert "(3 tasks)" in result.stdout, result.stdout
    ours = cluster.squeue_user()
    assert 0 < len(ours) <= 3, ours  # three allocations hold all nine configs under a cap of 3
    snap = status(cluster, root)
    assert snap["counts"].get("waiting", 0) == 0, snap["counts"]
    lines = _map_lines(root)
    assert len(lines) == 9 and sorted(int(line[0]) for line in lines) == [0, 0, 0, 1, 1, 1, 2, 2, 2]

    final = poll_until_final(cluster, root, interval=2)
    assert final["counts"] == {"completed": 9}, final["counts"]
    configs = by_config(final)
    tasks = defaultdict(list)
    for name, rec in configs.items():
        assert rec["attempt"] == 1 and rec["epoch"] == 3, rec
        assert deeph_epochs(root, name) == [1, 2, 3]
        log = _own_log(root, name)
        assert "Epoch 3" in log and all(other not in log for other in configs if other != name)
        finished = (root / "outputs" / name / "finished.1").read_text().split()
        assert finished[0] == name
        tasks[rec["job_id"]].append(name)
        assert _marker(root, name, 1, "exit")["exit_code"] == 0
    assert sorted(len(names) for names in tasks.values()) == [3, 3, 3], tasks
    for job_id, names in tasks.items():
        # The three runs of a task ran at once, in that one allocation, on its one GPU.
        starts = [_marker(root, n, 1, "start")["time"] for n in names]
        ends = [_marker(root, n, 1, "exit")["time"] for n in names]
        assert max(starts) <= min(ends), (job_id, starts, ends)
        seen = {tuple((root / "outputs" / n / "finished.1").read_text().split()[1:]) for n in names}
        assert len(seen) == 1, seen
    rows = cluster.sacct_settled(sorted({j.split("_")[0] for j in tasks}), fmt="JobID,State,AllocTRES", expect=3,
                                 timeout=60)
    tres = {row[0]: row[-1] for row in rows}
    for job_id in tasks:
        assert "gres/gpu=1" in tres[job_id] and "cpu=3" in tres[job_id], tres.get(job_id)
    assert read_state(root, "SELECT ntasks FROM submissions") == [(3,)]


def test_cancelling_one_config_of_a_packed_task_ends_only_its_run(slurm_cluster):
    cluster = slurm_cluster
    root = _sweep(cluster, "packcancel", 3, epochs=8, sleep=1, runs_per_gpu=3)
    assert hpc(cluster, root, "submit").returncode == 0

    def all_running():
        assert hpc(cluster, root, "poll", "--force").returncode == 0
        snap = status(cluster, root)
        return snap if snap["counts"].get("running") == 3 else None

    cluster.wait_for(all_running, timeout=120, interval=1, what="the three runs of the task to start")
    result = hpc(cluster, root, "cancel", "config002")
    assert result.returncode == 0, result.stderr
    assert "scheduler ids" not in result.stdout, result.stdout  # the task was not scancel'ed
    assert "config002: asked its run to stop (task " in result.stdout, result.stdout
    assert "goes on with 2 other runs)" in result.stdout, result.stdout
    assert len(cluster.squeue_user()) == 1  # the task goes on with its two other runs
    stop = _marker(root, "config002", 1, "stop")
    assert stop and stop["state"] == "cancelled"
    cluster.wait_for(lambda: _marker(root, "config002", 1, "exit"), timeout=60, what="config002's exit marker")
    assert _marker(root, "config002", 1, "exit")["exit_code"] == 143
    assert _marker(root, "config001", 1, "exit") is None or _marker(root, "config001", 1, "exit")["exit_code"] == 0

    final = poll_until_final(cluster, root, interval=2)
    configs = by_config(final)
    assert final["counts"] == {"completed": 2, "cancelled": 1}, final["counts"]
    assert configs["config002"]["state"] == "cancelled"
    assert not (root / "outputs" / "config002" / "finished.1").exists()
    assert len(deeph_epochs(root, "config002")) < 8
    for name in ("config001", "config003"):
        assert configs[name]["attempt"] == 1 and deeph_epochs(root, name) == list(range(1, 9))
        assert (root / "outputs" / name / "finished.1").read_text().split()[0] == name


def test_a_packed_task_hitting_its_walltime_resumes_each_unfinished_config(slurm_cluster):
    cluster = slurm_cluster
    # One task (a cap of one, two waves) of two lanes: config001 and config002 outlive the minute on their first
    # attempt; config003 waits for a lane that never frees and is left unstarted when the task is ended.
    root = _sweep(cluster, "packtime", 3, epochs=20, walltime="00:01:00", slow=("config001", "config002"),
                  runs_per_gpu=2, pack_waves=2)
    cluster.set_user_limit(1)
    result = hpc(cluster, root, "submit")
    assert result.returncode == 0, result.stderr
    assert "(1 task)" in result.stdout, result.stdout

    def resubmitted():
        assert hpc(cluster, root, "poll", "--force").returncode == 0
        snap = status(cluster, root)
        configs = by_config(snap)
        return snap if all(configs[n]["attempt"] == 2 for n in configs) else None

    cluster.wait_for(resubmitted, timeout=300, interval=3, what="each config's second attempt")
    for name in ("config001", "config002"):
        assert _marker(root, name, 1, "exit")["exit_code"] == 143  # TERM at the walltime, recorded by the run
        assert not (root / "outputs" / name / "finished.1").exists()
    skipped = _marker(root, "config003", 1, "skipped")
    assert skipped and "before it started" in skipped["reason"], skipped
    assert _marker(root, "config003", 1, "start") is None
    states = dict(read_state(root, "SELECT config, state FROM attempts WHERE attempt = 1"))
    assert states == {"config001": "timeout", "config002": "timeout", "config003": "waiting"}, states

    final = poll_until_final(cluster, root, timeout=400, interval=3)
    assert final["counts"] == {"completed": 3}, final["counts"]
    for name in ("config001", "config002"):
        run_config = (root / "script" / "run" / f"{name}.a2.toml").read_text()
        assert "enable = true" in run_config and "previous_output_dir" in run_config  # from its checkpoint
    for name in ("config001", "config002", "config003"):
        assert by_config(final)[name]["epoch"] == 20
        assert (root / "outputs" / name / "finished.2").read_text().split()[0] == name
    assert deeph_epochs(root, "config003") == list(range(1, 21))


def test_a_node_task_gives_each_run_its_own_gpu_of_the_allocation(slurm_cluster):
    cluster = slurm_cluster
    root = _sweep(cluster, "packnode", 4, epochs=2, sleep=1, pack="node", gpus_per_node=2)
    result = hpc(cluster, root, "submit")
    assert result.returncode == 0, result.stderr
    assert "(2 tasks)" in result.stdout, result.stdout
    final = poll_until_final(cluster, root, interval=2)
    assert final["counts"] == {"completed": 4}, final["counts"]
    tasks = defaultdict(list)
    for name, rec in by_config(final).items():
        assert deeph_epochs(root, name) == [1, 2]
        config, task, gpus = (root / "outputs" / name / "finished.1").read_text().split()
        assert config == name and "," not in gpus  # one GPU each
        tasks[rec["job_id"]].append(gpus)
    assert sorted(len(gpus) for gpus in tasks.values()) == [2, 2]
    assert all(len(set(gpus)) == 2 for gpus in tasks.values()), tasks  # a GPU of its own within its task
    rows = cluster.sacct_settled(sorted({j.split("_")[0] for j in tasks}), fmt="JobID,State,AllocTRES", expect=2,
                                 timeout=60)
    tres = {row[0]: row[-1] for row in rows}
    assert all("gres/gpu=2" in tres[job_id] for job_id in tasks), tres
