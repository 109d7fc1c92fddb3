"""Early stopping end to end on the local backend (issue #16): the hpc-sweep CLI, the detached runner and the demo
trainer, genuinely training. Each run's own log is read: a stopped run's log ends before its last epoch, the
winner's runs to the end, and a stopped config brought back with resubmit trains on from its checkpoint to the end.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Union

from test_local_runner import Sweep, make_sweep, trainer_command, wait_until

MAX_EPOCH = 12
# Two learning rates that train and four that barely move: the rule has losers to find whatever order runs start in.
RATES = [3e-2, 1e-5, 3e-6, 1e-6, 1e-2, 2e-6]
EARLY_STOP = '\n[early_stop]\nrule = "asha"\nmin_epochs = 3\nreduction = 3\n'
EPOCH_LINE = re.compile(r"\[train\] Epoch (\d+) \|")
FINAL = {"completed", "failed", "timeout", "oom", "cancelled", "node_fail", "preempted", "lost", "stopped"}


def early_stop_sweep(tmp_path: Path) -> Sweep:
    sweep = make_sweep(tmp_path, trainer_command(0.3), fixed={"process.train.max_epoch": MAX_EPOCH},
                       grid={"process.train.optimizer.init_learning_rate": RATES})
    with open(sweep.root / "sweep.toml", "a") as handle:
        handle.write(EARLY_STOP)
    return sweep


def poll_until_final(sweep: Sweep, timeout: float) -> dict:
    def final():
        states = sweep.status_json()  # polls first
        return states if all(c["state"] in FINAL for c in states.values()) else None

    return wait_until(final, timeout, "every config to end", interval=0.2)


def logged_epochs(sweep: Union[Sweep, Path], config: str) -> list:
    """Every epoch the demo trainer logged for ``config`` (of a sweep, or the sweep folder), over all its run
    folders (a resume starts a new one), in the order of the folders' names (their start times)."""
    root = sweep if isinstance(sweep, Path) else sweep.root
    epochs = []
    for log in sorted((root / "outputs" / config).glob("*/deepx.log")):
        epochs += [int(n) for n in EPOCH_LINE.findall(log.read_text())]
    return epochs


def test_losers_stop_early_the_winner_trains_whole_and_a_stopped_config_resubmits(tmp_path: Path, sweeps) -> None:
    sweep = early_stop_sweep(tmp_path)
    sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    states = poll_until_final(sweep, 120)

    stopped = sorted(name for name, c in states.items() if c["state"] == "stopped")
    assert len(stopped) >= 2, states
    assert {c["state"] for c in states.values()} <= {"completed", "stopped"}
    winner = min((c for c in states.values() if c["best_val_loss"] is not None), key=lambda c: c["best_val_loss"])
    assert winner["state"] == "completed"
    assert logged_epochs(sweep, winner["config"]) == list(range(1, MAX_EPOCH + 1))
    for name in stopped:
        record = states[name]
        epochs = logged_epochs(sweep, name)
        assert epochs and epochs == list(range(1, epochs[-1] + 1)) and epochs[-1] < MAX_EPOCH, (name, epochs)
        assert record["reason"].startswith("early stop: best val "), record["reason"]
        assert record["epochs_saved"] == MAX_EPOCH - record["epoch"] > 0
        # Only its own task was ended: the runner ended it by our cancel, not by any limit.
        assert sweep.tasks()[name]["reason"] == "cancelled"

    # A later poll leaves stopped runs stopped (the killed task's exit is not taken for how the run ended).
    again = sweep.status_json()
    assert sorted(n for n, c in again.items() if c["state"] == "stopped") == stopped
    table = sweep.cli("status", str(sweep.root)).stdout
    # From the latest poll: a stopped trainer may log the epoch it was in while it winds down after the signal.
    saved = sum(again[n]["epochs_saved"] for n in stopped)
    assert f"early stop: {len(stopped)} runs stopped, {saved} epochs not trained" in table
    summary = json.loads(sweep.cli("status", str(sweep.root), "--format", "json").stdout)
    assert summary["counts"]["stopped"] == len(stopped) and summary["epochs_saved"] == saved
    assert "stopped" in (sweep.root / "status.md").read_text()
    sweep.cli("report", str(sweep.root), "--out", str(sweep.root / "report.md"))
    assert (f"Early stopping ended {len(stopped)} run(s) before their last epoch: {saved} epochs not trained"
            in (sweep.root / "report.md").read_text())

    # resubmit brings one back from its checkpoint; it trains on to the end and is not stopped again.
    back = stopped[0]
    before = logged_epochs(sweep, back)
    sweep.cli("resubmit", str(sweep.root), back)
    states = poll_until_final(sweep, 120)
    assert states[back]["state"] == "completed", states[back]
    after = logged_epochs(sweep, back)
    resumed = after[len(before):]
    assert resumed and resumed[0] > 1 and resumed[-1] == MAX_EPOCH, after  # went on from a checkpoint, not epoch 1
    assert states[back]["attempt"] == 2
