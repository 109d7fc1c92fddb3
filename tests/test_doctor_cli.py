"""`hpc-sweep doctor` through the CLI against stand-in Slurm commands that print what the real Slurm 22.05 printed
(tests/fixtures/slurm-22.05: the 2-CPU, 8-GPU node, partitions debug/short/small/closed/others, QOS shortq): a good
profile passes with the values it chose, a bad one fails with the fix on each line and exit 1. The real cluster's
run is in tests/test_fit_slurm.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fakes"))

from captures import fixture_folder  # noqa: E402

SLURM = fixture_folder("slurm-22.05")
STAND_INS = {
    "sbatch": 'echo "slurm-wlm 22.05.8"',
    "sinfo": f'cat "{SLURM / "sinfo_shape.txt"}"',
    "scontrol": f"""case "$2" in
  config) cat "{SLURM / 'scontrol_show_config.txt'}" ;;
  partition) cat "{SLURM / 'scontrol_show_partition.txt'}" ;;
  assoc_mgr) cat "{SLURM / 'scontrol_assoc_mgr.txt'}" ;;
esac""",
    "sacctmgr": f"""case "$*" in
  *" assoc "*) cat "{SLURM / 'sacctmgr_assoc_shape.txt'}" ;;
  *" qos "*) cat "{SLURM / 'sacctmgr_qos_shape.txt'}" ;;
esac""",
    "crontab": 'echo "no crontab for $(id -un)" >&2; exit 1',
    "scrontab": 'echo "scrontab: fatal: scrontab is disabled on this cluster" >&2; exit 1',
}


@pytest.fixture
def site(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text("lr = 0.1\n")
    (root / "sweep.toml").write_text(textwrap.dedent("""\
        [sweep]
        name = "doc"
        program = "generic"
        base = "configs/.base_config.toml"
        command = "python3 {sweep_dir}/train.py {config}"
        site = "site.toml"
        device = "gpu*1"
        walltime = "20m"
        [grid]
        lr = [0.1, 0.2]
        [log]
        path = "train.log"
        epoch = "epoch (\\\\d+)"
        """))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")

    def doctor(profile: str, *args: str) -> subprocess.CompletedProcess:
        (root / "site.toml").write_text(profile)
        return subprocess.run([sys.executable, "-m", "hpc_sweep.cli", "doctor", str(root), *args], env=env,
                              capture_output=True, text=True, timeout=120)

    return root, doctor


def lines_of(result: subprocess.CompletedProcess, status: str) -> list:
    return [line[6:] for line in result.stdout.splitlines() if line.startswith(status + " ")]


def test_a_good_profile_passes_and_shows_the_values_chosen(site):
    root, doctor = site
    result = doctor('scheduler = "slurm"\npartition = "debug"\n')
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines_of(result, "FAIL") == [] and not result.stderr
    ok = lines_of(result, "OK")
    assert "scheduler    slurm 22.05.8" in ok
    assert "partition    debug is up, 1 of 1 nodes take jobs" in ok
    assert "shape gpu:1  fits debug: 1 CPU, 2711M per task" in ok
    assert any(line.startswith("shape gpu:1  cpus_per_gpu: 0.25 from the nodes of partition debug (2 CPUs")
               for line in ok), ok
    assert any(line.startswith("setup        setup lines run; python3 is /") for line in ok), ok
    assert "cron         crontab usable: 'hpc-sweep cron install'" in ok
    assert not (root / ".hpc_sweep").exists()  # doctor reads; it writes nothing (no state, no cache)


def test_a_bad_profile_fails_with_the_fix_on_each_line(site):
    root, doctor = site
    result = doctor(textwrap.dedent("""\
        scheduler = "slurm"
        partition = "short"
        cpus_per_gpu = 4
        qos = "shortq"
        setup = ["module load cuda/12.4"]
        """))
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["hpc-sweep: error: doctor found problems: fix the FAIL lines above"]
    failed = lines_of(result, "FAIL")
    profile = root / "site.toml"
    assert (f"shape gpu:1  partition short: no node has 4 CPUs for one task (nodes have 2 CPUs, 21694M, 8 gpu); "
            f"set cpus_per_gpu = 2 or fewer in {profile}") in failed
    assert (f"shape gpu:1  QOS shortq allows at most 00:10:00 (asked 00:20:00); set walltime = \"00:10:00\" or "
            f"less in {root / 'sweep.toml'} [sweep]") in failed
    (setup,) = [line for line in failed if line.startswith("setup")]
    assert "module: command not found" in setup and "without your login profile" in setup


def test_a_missing_partition_fails(site):
    root, doctor = site
    result = doctor('scheduler = "slurm"\npartition = "gpu"\n')
    assert result.returncode == 1
    assert "partition    partition gpu does not exist (partitions: debug, short, small, closed, others); set " \
           "partition in the site profile" in lines_of(result, "FAIL")


def test_doctor_outside_a_sweep_needs_a_site(tmp_path, site):
    result = subprocess.run([sys.executable, "-m", "hpc_sweep.cli", "doctor", str(tmp_path)], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "--site PROFILE" in result.stderr
