"""Reading logs across attempts into one curve per config: XequiNet's appended loss.log (the genuine resumed log of
tests/fixtures/xequinet-real), a SIGTERM'd epoch repeated after the resume, a resume from an older checkpoint, a
fresh restart, DeepH's new run folder; then the best value, the ETA and the evidence check on what was read.

The sweep, its state database and the poll's log reading are real; the scheduler's part (attempts starting and
ending) is written into the state as a poll would.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hpc_sweep.track import evidence, progress
from hpc_sweep.api import load
from hpc_sweep.cli import main
from hpc_sweep.common.formats import tomllib
from hpc_sweep.track.poll import PollReport
from hpc_sweep.session import Session

REAL = Path(__file__).parent / "fixtures" / "xequinet-real"
RUN1_LOG = (REAL / "run1.loss.log").read_text()
RESUMED_LOG = (REAL / "run1-resumed.loss.log").read_text()
REPO = Path(__file__).resolve().parents[1]
LOADED = "2026-12-06 09:29:11 - INFO - Loaded checkpoint from /o/config001/config001_last.pt\n"


def weighted(energy: float, forces: float) -> float:
    return energy + 100.0 * forces


def make_sweep(tmp_path: Path, program: str = "xequinet") -> Path:
    root = tmp_path / "sweep"
    base = REAL / "run1.config.yaml" if program == "xequinet" else REPO / "examples" / "demo" / "base.toml"
    main(["init", str(root), "--base", str(base), "--site", "local"])
    text = (root / "sweep.toml").read_text().replace('walltime = "24:00:00"', 'walltime = "24:00:00"\ndevice = "cpu"')
    (root / "sweep.toml").write_text(text)
    main(["generate", str(root)])
    return root


def set_attempt(root: Path, attempt: int, state: str = "running", started_ago: float = 100.0) -> None:
    """config001's attempt ``attempt`` in ``state``, as the poll's scheduler part would leave it."""
    session = Session.open(root, write=True)
    now = time.time()
    try:
        with session.store.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO attempts (config, attempt, job_id, state, submitted_at, started_at,"
                         " ended_at) VALUES ('config001', ?, ?, ?, ?, ?, ?)",
                         (attempt, f"local-{attempt}_0", state, now - started_ago - 10, now - started_ago,
                          None if state == "running" else now))
            conn.execute("UPDATE configs SET state = ?, attempt = ?, reason = NULL WHERE name = 'config001'",
                         (state, attempt))
    finally:
        session.close()


def read_logs(root: Path) -> PollReport:
    session = Session.open(root, write=True)
    try:
        report = PollReport()
        progress.update_progress(session, report)
        return report
    finally:
        session.close()


def check(root: Path) -> PollReport:
    session = Session.open(root, write=True)
    try:
        report = PollReport(changes=[("config001", "running", "completed", None)])
        evidence.check_completed(session, report)
        return report
    finally:
        session.close()


def curve(root: Path) -> list:
    return [(row["epoch"], row["attempt"], row["val_loss"]) for row in load(root).curves("config001")]


def status(root: Path) -> dict:
    return next(c for c in load(root).status()["configs"] if c["config"] == "config001")


def write_log(root: Path, text: str, mode: str = "w") -> None:
    with open(root / "outputs" / "config001" / "loss.log", mode, encoding="utf-8") as handle:
        handle.write(text)


def test_resumed_log_is_read_on_from_where_the_first_attempt_stopped(tmp_path):
    root = make_sweep(tmp_path)
    set_attempt(root, 1)
    write_log(root, RUN1_LOG)
    first = read_logs(root)
    assert first.new_epochs == 4 and first.bytes_read == len(RUN1_LOG)
    set_attempt(root, 1, "timeout")
    read_logs(root)  # the poll that saw it end: nothing new
    set_attempt(root, 2)
    write_log(root, RESUMED_LOG[len(RUN1_LOG):], mode="a")  # the resumed trainer appends
    second = read_logs(root)
    # Only the appended bytes, only the new epochs (the first attempt's were stored again before the fix).
    assert second.new_epochs == 3 and second.bytes_read == len(RESUMED_LOG) - len(RUN1_LOG)
    assert [(e, a) for e, a, _ in curve(root)] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2), (7, 2)]
    record = status(root)
    assert (record["attempt"], record["epoch"], record["max_epoch"], record["best_epoch"]) == (2, 7, 4, 7)
    assert record["best_val_loss"] == pytest.approx(weighted(1.03, 2.048))


def sigtermed_run() -> tuple:
    """run1's log cut by a SIGTERM in the middle of epoch 3, and what the resume appends: epoch 3 again (other
    values) and epoch 4."""
    lines = RUN1_LOG.splitlines(keepends=True)
    cut = next(n for n, line in enumerate(lines) if "Train  MAE        3  [10/18]" in line) + 2
    again = "".join(lines[cut - 6:]).replace("1.105", "0.999").replace("2.282", "2.111")
    return "".join(lines[:cut]), LOADED + again


def test_sigtermed_epoch_counts_once_with_its_complete_values(tmp_path):
    root = make_sweep(tmp_path)
    killed, resumed = sigtermed_run()
    set_attempt(root, 1)
    write_log(root, killed)
    read_logs(root)
    set_attempt(root, 1, "timeout")
    read_logs(root)
    set_attempt(root, 2)
    write_log(root, resumed, mode="a")
    read_logs(root)
    assert curve(root) == [(1, 1, pytest.approx(weighted(1.166, 2.456))), (2, 1, pytest.approx(weighted(1.141, 2.385))),
                           (3, 2, pytest.approx(weighted(0.999, 2.111))), (4, 2, pytest.approx(weighted(1.066, 2.162)))]


def test_resume_from_an_older_checkpoint_replaces_the_epochs_it_repeats(tmp_path):
    """Resumed from a backup two epochs back: epochs 3 and 4 are logged again; the earlier ones are superseded,
    and the best value (which was epoch 4's) comes from the curve as it now stands."""
    root = make_sweep(tmp_path)
    set_attempt(root, 1)
    write_log(root, RUN1_LOG.replace("Training Completed", "Something else"))
    read_logs(root)
    set_attempt(root, 2)
    lines = RUN1_LOG.splitlines(keepends=True)
    epoch3 = next(n for n, line in enumerate(lines) if "Train  MAE        3  [5/18]" in line) - 1
    worse = "".join(lines[epoch3:]).replace("1.105", "1.9").replace("2.282", "2.9").replace(
        "1.066", "1.8").replace("2.162", "2.8")
    write_log(root, LOADED + worse, mode="a")
    read_logs(root)
    assert [(e, a) for e, a, _ in curve(root)] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    record = status(root)
    assert record["best_epoch"] == 2 and record["best_val_loss"] == pytest.approx(weighted(1.141, 2.385))
    # The parser carries the corrected best on: the next epoch is compared with it, not with the superseded one.
    write_log(root, worse.split("Training Completed")[0].replace(" 3  [", " 5  [").replace(" 4  [", " 6  ["), "a")
    read_logs(root)
    assert status(root)["best_epoch"] == 2


def test_a_fresh_restart_starts_a_new_curve(tmp_path):
    root = make_sweep(tmp_path)
    set_attempt(root, 1)
    write_log(root, RUN1_LOG)
    read_logs(root)
    set_attempt(root, 2)
    lines = RUN1_LOG.splitlines(keepends=True)
    two_epochs = "".join(lines[:next(n for n, l in enumerate(lines) if "Train  MAE        3  [5/18]" in l) - 1])
    write_log(root, two_epochs.replace("09:28:", "10:28:"))  # truncated and written again by a fresh start
    read_logs(root)
    assert [(e, a) for e, a, _ in curve(root)] == [(1, 2), (2, 2)]
    record = status(root)
    assert (record["epoch"], record["best_epoch"]) == (2, 2)


def test_eta_counts_only_this_attempts_epochs(tmp_path):
    root = make_sweep(tmp_path)
    session = Session.open(root, write=True)
    try:
        with session.store.transaction() as conn:  # ten epochs in the real sweep, not four
            conn.execute("UPDATE configs SET log_context = NULL")
    finally:
        session.close()
    config = root / "configs" / "config001.yaml"
    config.write_text(config.read_text().replace("max_epochs: 4", "max_epochs: 10"))
    set_attempt(root, 1)
    write_log(root, RUN1_LOG.split("2026-12-06 09:28:34 - INFO - Training Completed")[0])
    read_logs(root)
    set_attempt(root, 2, started_ago=100.0)  # epochs 5-7 took this attempt's 100 s
    write_log(root, RESUMED_LOG[len(RUN1_LOG):].split("Training Completed")[0].rsplit("\n", 1)[0] + "\n", "a")
    read_logs(root)
    record = status(root)
    assert (record["epoch"], record["max_epoch"]) == (7, 10)
    assert record["eta_s"] == pytest.approx(100.0 / 3 * 3, abs=3)  # not 100 s / 7 epochs × 3


def test_exit_0_without_epochs_is_failed_with_the_reason(tmp_path):
    root = make_sweep(tmp_path)
    set_attempt(root, 1, "completed")
    read_logs(root)  # no log at all
    report = check(root)
    assert report.changes == [("config001", "running", "failed", "exited 0 without a training log")]
    record = status(root)
    assert record["state"] == "failed" and record["reason"] == "exited 0 without a training log"


def test_exit_0_with_training_is_completed_and_says_how_it_ended(tmp_path):
    root = make_sweep(tmp_path)
    set_attempt(root, 1, "completed")
    write_log(root, RUN1_LOG)
    read_logs(root)
    report = check(root)
    assert report.changes == [("config001", "running", "completed", "trained to epoch 4 of 4")]
    assert check(root).changes == [("config001", "running", "completed", None)]  # checked once: left alone
    assert status(root)["reason"] == "trained to epoch 4 of 4"


def test_the_check_reads_a_log_again_before_failing_a_run(tmp_path):
    """A large poll's reading starts before the scheduler answers: it may have read a run that ended meanwhile
    without its last lines. The check reads such a log once more before it fails the run."""
    root = make_sweep(tmp_path)
    set_attempt(root, 1)
    end = RUN1_LOG.index("2026-12-06 09:28:34 - INFO - Training Completed")
    write_log(root, RUN1_LOG[:end])
    read_logs(root)
    write_log(root, RUN1_LOG[end:], mode="a")  # the last lines, after that reading
    set_attempt(root, 1, "completed")
    assert check(root).changes == [("config001", "running", "completed", "trained to epoch 4 of 4")]


def test_a_resumed_attempt_needs_its_own_end_line(tmp_path):
    """The first attempt's 'Training Completed' does not make a later attempt that wrote nothing completed."""
    root = make_sweep(tmp_path)
    set_attempt(root, 1)
    write_log(root, RUN1_LOG)
    read_logs(root)
    set_attempt(root, 2, "completed")  # resubmitted by hand; a stub that exits 0 at once
    read_logs(root)
    assert check(root).changes[0][2:] == ("failed", "exited 0 without a training log (its loss.log does not end "
                                                    "with 'Training Completed')")


def deeph_log(first: int, last: int, stamp: str) -> str:
    lines = [f"[ {stamp} ]                  Version 1.2.1\n", f"[ {stamp} ] [train] Starting the training process ...\n"]
    lines += [f"[ {stamp} ] [train] Epoch {n} | Time 3.20 s | Train-Loss {1.0 / n:.6e} | Val-Loss {2.0 / n:.6e} | "
              "Scale 1.0\n" for n in range(first, last + 1)]
    return "".join(lines)


def test_deeph_resume_in_a_new_run_folder_continues_the_curve(tmp_path):
    root = make_sweep(tmp_path, "deeph")
    outputs = root / "outputs" / "config001"
    set_attempt(root, 1)
    (outputs / "2026-01-01_00-00-00").mkdir(parents=True)
    (outputs / "2026-01-01_00-00-00" / "deepx.log").write_text(deeph_log(1, 5, "01.01-00:00:00"))
    read_logs(root)
    set_attempt(root, 2)  # continued from the latest save, epoch 3: epochs 4 and 5 are trained again
    (outputs / "2026-01-02_00-00-00").mkdir()
    (outputs / "2026-01-02_00-00-00" / "deepx.log").write_text(deeph_log(4, 6, "01.02-00:00:00"))
    read_logs(root)
    assert [(e, a) for e, a, _ in curve(root)] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    assert status(root)["epoch"] == 6


def test_deeph_exit_0_without_its_log_is_failed(tmp_path):
    root = make_sweep(tmp_path, "deeph")
    set_attempt(root, 1, "completed")  # the public deeph-train stub: exits 0, writes nothing
    read_logs(root)
    assert check(root).changes[0][2:] == ("failed", "exited 0 without a training log")
    root2 = make_sweep(tmp_path / "two", "deeph")
    set_attempt(root2, 1, "completed")
    run = root2 / "outputs" / "config001" / "2026-01-01_00-00-00"
    run.mkdir(parents=True)
    (run / "deepx.log").write_text(deeph_log(1, 2, "01.01-00:00:00"))
    read_logs(root2)
    max_epoch = tomllib.loads((REPO / "examples" / "demo" / "base.toml").read_text())["process"]["train"]["max_epoch"]
    assert check(root2).changes[0][2:] == ("completed", f"trained to epoch 2 of {max_epoch}")
    assert status(root2)["reason"] == f"trained to epoch 2 of {max_epoch}"


def test_deeph_status_shows_the_phase_before_the_first_epoch(tmp_path):
    from hpc_sweep.results.status import table_rows

    root = make_sweep(tmp_path, "deeph")
    set_attempt(root, 1)
    run = root / "outputs" / "config001" / "2026-01-01_00-00-00"
    run.mkdir(parents=True)
    stamp = "[ 01.01-00:00:00 ]"
    lines = [f"{stamp}                  Version 1.2.1", f"{stamp} [graph] Building the graph with type: `train-HS`.",
             f"{stamp} [model] Building the model `eagle-H` with loss `mae`.",
             f"{stamp} [train] JAX networks: Parallel threads AOT-compiling `1` frameworks for training."]
    shown = []
    for line in lines:
        with open(run / "deepx.log", "a") as handle:
            handle.write(line + "\n")
        read_logs(root)
        record = status(root)
        header, rows = table_rows([record], [])
        shown.append((record["phase"], rows[0][header.index("epoch")]))
    assert shown == [("starting", "starting"), ("graph building", "graph building"),
                     ("model building", "model building"), ("compiling", "compiling")]
