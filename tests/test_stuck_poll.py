"""#15 item 3 through the CLI: a pending task whose reason waiting cannot clear is shown as stuck (table, JSON
``stuck`` and the reason with its fix, status.md, the footer's count), printed once by the poll, and no longer
stuck once its reason changes. Stand-in Slurm commands (tests/fakes/fakeslurm.py) give the reasons the real
Slurm 22.05 gave (tests/fixtures/slurm-22.05/squeue_stuck.txt)."""

from __future__ import annotations

import json

import pytest

from test_exactly_once import Sweep


@pytest.fixture
def sweep(tmp_path):
    return Sweep(tmp_path, count=3)


def test_a_job_stuck_on_partition_config_shows_as_stuck_with_its_fix_once(sweep):
    assert sweep.cli("submit").returncode == 0
    (job,) = sweep.slurm.jobs()
    sweep.slurm.set_reason("PartitionConfig", job["id"])
    first = sweep.cli("poll", "--force")
    assert first.returncode == 0, first.stderr
    (line,) = [line for line in first.stdout.splitlines() if "stuck" in line]
    assert line.startswith("config001, config002, config003: stuck, pending for PartitionConfig: ")
    assert "hpc-sweep doctor" in line and "cancel and resubmit" in line

    status = sweep.status()
    assert all(c["state"] == "pending" and c["stuck"] for c in status.values())
    assert status["config001"]["reason"].startswith("PartitionConfig (stuck: the partition's limits or nodes")
    snapshot = json.loads((sweep.root / "status.json").read_text())
    assert snapshot["stuck"] == 3 and snapshot["counts"] == {"pending": 3}
    table = sweep.cli("status").stdout
    assert "3 configs: pending 3 (3 stuck)" in table
    assert "stuck, waiting will not start them: config001, config002, config003: PartitionConfig (stuck:" in table
    assert [row.split()[2] for row in table.splitlines() if row.startswith("config00")] == ["stuck"] * 3
    assert "| stuck |" in (sweep.root / "status.md").read_text()

    again = sweep.cli("poll", "--force")  # said once: the next poll is silent about it
    assert again.returncode == 0 and "stuck" not in again.stdout, again.stdout

    sweep.slurm.set_reason("Priority", job["id"])  # e.g. the admins changed the partition
    sweep.cli("poll", "--force")
    status = sweep.status()
    assert not any(c["stuck"] for c in status.values())
    assert all(c["reason"] == "Priority" for c in status.values())
    assert "stuck" not in sweep.cli("status").stdout


def test_waiting_reasons_are_not_stuck(sweep):
    assert sweep.cli("submit").returncode == 0
    for reason in ("Resources", "QOSMaxJobsPerUserLimit", "PartitionDown", "ReqNodeNotAvail, UnavailableNodes:vm"):
        sweep.slurm.set_reason(reason)
        polled = sweep.cli("poll", "--force")
        assert polled.returncode == 0 and "stuck" not in polled.stdout, (reason, polled.stdout)
        assert not any(c["stuck"] for c in sweep.status().values()), reason
