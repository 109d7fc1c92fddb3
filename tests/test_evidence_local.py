"""A command that exits 0 without training is not "completed": real runner, job scripts and polls on the local
backend, with `true` standing in for DeepH-pack's public `deeph-train` stub (it exits 0 and writes nothing)."""

from __future__ import annotations

import re
from pathlib import Path

from test_local_runner import Sweep, all_finished, make_sweep, trainer_command, wait_until


def test_a_stub_that_exits_0_ends_failed_and_a_trainer_completed(tmp_path: Path, sweeps: list) -> None:
    stub = make_sweep(tmp_path / "stub", "true {config}")
    real = make_sweep(tmp_path / "real", trainer_command(0))
    sweeps += [stub, real]
    for sweep in (stub, real):
        sweep.cli("submit", str(sweep.root))
        wait_until(lambda: all_finished(sweep, 1), 40, "the run to end")
    _, end = stub.markers("config001")
    assert end is not None and end["exit_code"] == 0
    done = stub.cli("poll", str(stub.root), "--force").stdout
    assert re.search(r"^config001: (pending|running) -> failed \(exited 0 without a training log\)$", done, re.M)
    status = stub.status_json()["config001"]
    assert (status["state"], status["reason"]) == ("failed", "exited 0 without a training log")
    trained = real.status_json()["config001"]
    assert trained["state"] == "completed" and trained["epoch"] == trained["max_epoch"] == 2
    assert trained["reason"] == "trained to epoch 2 of 2"


def test_smoke_fails_on_a_stub_that_exits_0(tmp_path: Path, sweeps: list) -> None:
    sweep = make_sweep(tmp_path, "true {config}", smoke={"count": 1, "timeout": "1m", "walltime": "2m"})
    sweeps += [sweep, Sweep(sweep.root / ".test", sweep.env)]
    done = sweep.cli("smoke", str(sweep.root), check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL config001: failed (exited 0 without a training log)" in done.stdout
    assert "smoke test FAILED: 0 of 1" in done.stdout
