"""`hpc-sweep doctor`'s checks (hpc_sweep/doctor.py) over gathered facts: OK on a good setup, FAIL with the fix on a
bad one, exit 1 on any FAIL. The facts come from the captured test cluster (2 CPUs, 8 GPUs)."""

from __future__ import annotations

from hpc_sweep import doctor
from hpc_sweep.doctor import FAIL, OK, WARN, CronProbe, SetupProbe
from hpc_sweep.submit.fit import Ask, check
from hpc_sweep.schedulers.base import QueueLimits
from test_cluster_shape import slurm_shape

HOUR = 3600


def lines_for(ask: Ask, shape, setup: SetupProbe, crontab: CronProbe, scrontab: CronProbe):
    return [doctor.check_scheduler("slurm", (22, 5, 8)),
            doctor.check_partition(shape, ask.partition),
            doctor.check_limits(QueueLimits(max_queued=None, max_array_size=1001)),
            *doctor.check_fit("1 gpu", check(ask, shape)),
            doctor.check_accounts(shape, ask.account, ask.qos),
            doctor.check_setup(setup),
            doctor.check_space(50 * 1024 ** 3, "/home/alice/sweep"),
            doctor.check_cron(crontab, scrontab)]


def test_good_profile_passes() -> None:
    text, rc = doctor.report(lines_for(Ask(gpus=1, walltime_s=HOUR), slurm_shape(),
                                       SetupProbe(0, program="python", program_path="/opt/venv/bin/python"),
                                       CronProbe("crontab", True), CronProbe("scrontab", False, "not installed")))
    assert rc == 0, text
    assert "OK    scheduler    slurm 22.05.8" in text
    assert "OK    partition    debug (the default) is up, 1 of 1 nodes take jobs" in text
    assert "cpus_per_gpu: 0.25 from the nodes of partition debug" in text  # the derived default is shown
    assert "WARN" not in text and "FAIL" not in text


def test_bad_profile_fails_with_fixes() -> None:
    lines = lines_for(Ask(gpus=1, walltime_s=HOUR, cpus_per_gpu=4, mem_per_gpu_mb=1024, account="nosuch"),
                      slurm_shape(), SetupProbe(0, program="xequinet"),
                      CronProbe("crontab", False, "not installed"), CronProbe("scrontab", False, "not installed"))
    text, rc = doctor.report(lines)
    assert rc == 1
    failed = [line for line in lines if line.status == FAIL]
    assert [line.topic for line in failed] == ["shape 1 gpu", "shape 1 gpu", "account", "setup"]
    assert "no node has 4 CPUs for one task (nodes have 2 CPUs" in failed[0].message
    assert "xequinet is not on PATH" in failed[3].message and failed[3].fix
    assert [line.status for line in lines if line.topic == "cron"] == [WARN]


def test_drained_partition_and_missing_one() -> None:
    drained = doctor.check_partition(slurm_shape("sinfo_shape_drained.txt"), None)
    assert drained.status == FAIL and "none of its 1 nodes takes jobs" in drained.message
    missing = doctor.check_partition(slurm_shape(), "gpu")
    assert missing.status == FAIL and "partitions: debug, short" in missing.message


def test_old_slurm_and_unusable_scheduler() -> None:
    assert "-u $USER" in doctor.check_scheduler("slurm", (20, 2, 7)).message
    line = doctor.check_scheduler("slurm", None, "sbatch: command not found")
    assert line.status == FAIL and line.fix


def test_setup_failing_in_a_clean_shell() -> None:
    line = doctor.check_setup(SetupProbe(127, "bash: module: command not found\n"))
    assert line.status == FAIL and "module: command not found" in line.message


def test_cron_either_tool() -> None:
    line = doctor.check_cron(CronProbe("crontab", False, "permission denied"), CronProbe("scrontab", True))
    assert line.status == OK and "--via scrontab" in line.message


def test_space() -> None:
    assert doctor.check_space(100 * 1024 ** 2, "/x").status == FAIL
    assert doctor.check_space(1024 ** 3, "/x").status == WARN
