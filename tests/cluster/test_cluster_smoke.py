"""The real Slurm test cluster works: GPUs in accounting, association limits, slurm.conf changes, fault hooks."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slurm


def _sbatch(cluster, cwd, *args):
    return cluster.run_as_user(["sbatch", "--parsable", *args], cwd=cwd, timeout=120)


def _job_id(r) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def test_user_gpu_array_completes_and_is_accounted(slurm_cluster):
    c = slurm_cluster
    work = c.make_user_dir("gpu-array")
    r = _sbatch(c, work, "--array=0-2", "--gres=gpu:2", "--time=00:01:00", "--output=out_%A_%a.txt",
                "--wrap", "echo task=$SLURM_ARRAY_TASK_ID user=$(id -un)")
    job = _job_id(r)
    assert job.isdigit()

    def all_done():
        rows = c.sacct([job], fmt="JobID,State,AllocTRES")
        rows = [row for row in rows if row[0].startswith(f"{job}_")]
        if len(rows) == 3 and all(row[1] == "COMPLETED" for row in rows):
            return rows
        return None

    rows = c.wait_for(all_done, timeout=60, what=f"array {job} to complete in sacct")
    assert sorted(row[0] for row in rows) == [f"{job}_{i}" for i in range(3)]
    for row in rows:
        assert "gres/gpu=2" in row[2], row
    settled = c.sacct_settled([job], fmt="JobID,AllocTRES", expect=3)
    assert sorted(r[0] for r in settled) == [f"{job}_{i}" for i in range(3)]
    for i in range(3):
        text = (work / f"out_{job}_{i}.txt").read_text()
        assert f"task={i} user={c.user}" in text
    # finished tasks leave squeue quickly (MinJobAge=5)
    c.wait_for(lambda: not [line for line in c.squeue_user() if line.split("|")[2] == job], timeout=30,
               what="finished tasks to leave squeue")


def test_max_submit_jobs_refuses_whole_array(slurm_cluster):
    c = slurm_cluster
    work = c.make_user_dir("limit")
    c.set_user_limit(2)
    r = _sbatch(c, work, "--array=0-4", "--time=00:01:00", "--wrap", "sleep 30")
    assert r.returncode != 0
    assert "AssocMaxSubmitJobLimit" in r.stderr, r.stderr
    assert c.squeue_user() == []
    # within the limit is accepted
    job = _job_id(_sbatch(c, work, "--array=0-1", "--time=00:01:00", "--wrap", "sleep 30"))
    lines = c.squeue_user()
    assert len(lines) == 2 and all(line.split("|")[2] == job for line in lines), lines
    # back to unlimited
    c.set_user_limit(None)
    assert c.user_limit is None
    _job_id(_sbatch(c, work, "--array=0-4", "--time=00:01:00", "--wrap", "sleep 30"))
    c.cancel_all_user_jobs()
    assert c.squeue_user() == []


def test_max_array_size_config_change(slurm_cluster):
    c = slurm_cluster
    work = c.make_user_dir("arraysize")
    c.set_config(MaxArraySize=11)
    assert c.scontrol_config()["MaxArraySize"] == "11"
    r = _sbatch(c, work, "--array=0-11", "--hold", "--wrap", "true")
    assert r.returncode != 0, r.stdout
    assert "array" in r.stderr.lower(), r.stderr
    _job_id(_sbatch(c, work, "--array=0-10", "--hold", "--wrap", "true"))
    c.reset_config()
    assert c.scontrol_config()["MaxArraySize"] == "1001"


def test_daemon_stop_start(slurm_cluster):
    c = slurm_cluster
    c.stop_slurmdbd()
    r = c.run_as_user(["sacct", "-X", "-n", "-P", "--format=JobID"], timeout=60)
    assert r.returncode != 0
    c.start_slurmdbd()
    assert c.run_as_user(["sacct", "-X", "-n", "-P", "--format=JobID"], timeout=60).returncode == 0
    c.stop_slurmctld()
    r = c.run_as_user(["scontrol", "ping"], timeout=60)
    assert "DOWN" in r.stdout, r.stdout + r.stderr
    c.start_slurmctld()
    assert "UP" in c.run_as_user(["scontrol", "ping"], timeout=60).stdout


def test_user_venv_has_current_package(slurm_cluster):
    c = slurm_cluster
    assert (c.user_bin / "hpc-sweep").exists()
    r = c.run_as_user([c.user_bin / "python", "-c", "import hpc_sweep, os; print(os.path.dirname(hpc_sweep.__file__))"])
    assert r.returncode == 0, r.stderr
    assert str(c.user_bin.parent) in r.stdout
    r = c.run_as_user(["sh", "-c", "command -v hpc-sweep; id -un; echo $SLURM_CONF"])
    assert r.stdout.split() == [str(c.user_bin / "hpc-sweep"), c.user, str(c.slurm_conf)]
