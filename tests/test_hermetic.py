"""The suite's guard against the host's scheduler (tests/conftest.py): in a test that did not start the Slurm test
cluster, every scheduler command resolves to a guard command that records the call, so the test errors instead of
querying a production controller from a login node."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hpc_sweep.sweep import sites

# Every command hpc-sweep runs on a cluster (schedulers/, hpc_sweep/cron.py), plus the host's GPU query.
HOST_COMMANDS = ["sbatch", "squeue", "sacct", "sacctmgr", "scontrol", "scancel", "sinfo", "qsub", "qstat", "qselect",
                 "qdel", "qmgr", "pbsnodes", "crontab", "scrontab", "nvidia-smi"]


def test_every_host_command_resolves_to_the_guard(host_guard_bin: Path) -> None:
    for name in HOST_COMMANDS:
        found = shutil.which(name)
        assert found is not None and Path(found).parent == host_guard_bin, f"{name} -> {found}"


def test_detection_reaches_the_guard_in_process_and_in_children() -> None:
    calls = Path(os.environ["HOST_SCHEDULER_GUARD_LOG"])
    assert sites.detect_scheduler() is None  # both answers are "not found"
    child = subprocess.run([sys.executable, "-c",
                            "from hpc_sweep.sweep.sites import detect_scheduler as d; print(d())"],
                           capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "None", child.stderr
    assert calls.read_text().splitlines() == ["sbatch --version", "qstat --version"] * 2
    calls.unlink()  # these calls were the point of this test: the guard must not fail it
