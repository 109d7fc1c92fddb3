"""`hpc-sweep smoke` on the local backend: real runner, real job scripts, the demo trainer."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_local_runner import Sweep, make_sweep, trainer_command, wait_until

from hpc_sweep.local.processes import session_members
from hpc_sweep.local.spool import Spool


def smoke_sweep(tmp_path: Path, epoch_sleep: float, smoke: dict) -> Sweep:
    # The real sweep trains 50 epochs; the smoke overrides shorten that. The second loss type is one the demo
    # trainer rejects at start-up, the kind of mistake a smoke test is for.
    return make_sweep(tmp_path, trainer_command(epoch_sleep), fixed={"process.train.max_epoch": 50},
                      grid={"model.loss_type": ["mae", "bogus"]}, sweep={"walltime": "1h"}, smoke=smoke)


def test_smoke_reports_a_passing_and_a_failing_config(tmp_path: Path, sweeps: list) -> None:
    sweep = smoke_sweep(tmp_path, 0.2, {"count": 2, "timeout": "1m", "walltime": "2m",
                                        "overrides": {"process.train.max_epoch": 1}})
    sweeps.append(sweep)
    sweeps.append(Sweep(sweep.root / ".test", sweep.env))  # teardown stops the smoke sweep's runner too

    done = sweep.cli("smoke", str(sweep.root), check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "PASS config001: completed, epoch 1/1" in out
    fail_line = next(line for line in out.splitlines() if line.startswith("FAIL config002"))
    assert "failed" in fail_line and "bogus" in fail_line  # the trainer's own complaint is the reason
    assert "last lines of its output:" in out
    assert "smoke test FAILED: 1 of 2 config(s) completed" in out
    assert "smoke test failed" in done.stderr

    test_dir = sweep.root / ".test"
    assert (test_dir / "outputs" / "config001").is_dir()
    smoke_script = next((test_dir / "script").glob("*.sh")).read_text()
    assert "# hpc-sweep-walltime: 120" in smoke_script  # the smoke walltime, not the sweep's hour
    # The real sweep is untouched: nothing submitted, no runner, every config still just generated.
    real = json.loads(sweep.cli("status", str(sweep.root), "--format", "json").stdout)
    assert {c["state"] for c in real["configs"]} == {"generated"}
    assert not (sweep.root / ".hpc_sweep" / "runner").exists()
    assert not list((sweep.root / "script").glob("*"))

    again = sweep.cli("smoke", str(sweep.root), "--count", "1", check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "PASS config001" in again.stdout and "config002" not in again.stdout
    assert "smoke test passed: 1 of 1" in again.stdout


def test_smoke_timeout_fails_and_cancels_its_runs(tmp_path: Path, sweeps: list) -> None:
    sweep = smoke_sweep(tmp_path, 5, {"count": 1, "overrides": {"process.train.max_epoch": 3}})
    sweeps.append(sweep)
    sweeps.append(Sweep(sweep.root / ".test", sweep.env))

    done = sweep.cli("smoke", str(sweep.root), "--timeout", "2s", check=False)
    assert done.returncode == 1
    assert re.search(r"^FAIL config001: (running|pending)", done.stdout, re.MULTILINE)
    assert "time ran out" in done.stdout and "timed out; its jobs were cancelled" in done.stdout
    spool = Spool(sweep.root / ".test")
    with spool.locked():
        task = next(iter(spool.load()["tasks"].values()))
    assert task["reason"] == "cancelled"
    # The cancelled run goes away (SIGTERM, then SIGKILL after the grace).
    wait_until(lambda: not session_members(task["pid"], task["launch"]), 10, "the cancelled run to end")
