"""XequiNet plugin: config checks, outputs, loss.log parser (tabulate tables), resume with a checkpoint copy."""

from __future__ import annotations

import copy
import json
import math
import zipfile
from pathlib import Path

import pytest
from tabulate import tabulate

from hpc_sweep.programs import get_program
from hpc_sweep.programs.xequinet import XequiNet, checkpoint_usable

LOGS = Path(__file__).parent / "data" / "logs"
WATER = (LOGS / "xequinet_water.log").read_text()
PROPS = ["Energy", "Energy/atom", "Forces"]


def base_config() -> dict:
    return {
        "model": {"model_name": "xpainn"},
        "data": {"db_path": "/data/water", "targets": ["energy", "forces"], "batch_size": 32, "cutoff": 5.0},
        "trainer": {"run_name": "water", "losses_weight": {"energy": 1.0, "forces": 1000.0}, "ema_decay": 0.995,
                    "lr_scheduler": "cosine_annealing", "max_epochs": 100, "save_dir": "./"},
    }


def table_lines(stamp: str, rows: list, headers: list) -> list[str]:
    """One tabulate "plain" table as XequiNet logs it: each table line is one log record."""
    text = tabulate(rows, headers=["", *headers], tablefmt="plain", floatfmt=".4g")
    return [f"{stamp} - INFO - {line}" for line in text.splitlines()]


def epoch_block(epoch: int, train: list, valid: list, ema: bool = True, steps: str = "[79/79]",
                lr: str = "5.062e-05") -> list[str]:
    stamp = f"2025-04-15 19:{epoch % 60:02d}:01"
    kind = "EMA Valid" if ema else "Validation"
    return (table_lines(stamp, [["Train  MAE", epoch, steps, lr, *train],
                                ["Train RMSE", "", "", "", *[v * 1.2 for v in train]]],
                        ["Epoch", "Step", "LR", *PROPS])
            + table_lines(stamp, [[f"{kind}  MAE", *valid], [f"{kind} RMSE", *[v * 1.3 for v in valid]]], PROPS))


def training_log(epochs: int, ema: bool = True, start: int = 1, header: bool = True) -> str:
    lines = []
    if header:
        lines += ["2025-04-15 18:50:45 - INFO - Start training", "2025-04-15 18:50:45 - INFO - Task Name: water",
                  "2025-04-15 18:50:45 - INFO - Property: energy Unit: eV",
                  "2025-04-15 18:50:45 - INFO - Property: forces Unit: eV/Angstrom"]
    for epoch in range(start, start + epochs):
        energy = 50.0 / epoch
        forces = 1.0 / epoch
        lines += epoch_block(epoch, [energy * 2, energy / 3, forces * 2], [energy, energy / 3, forces], ema=ema)
    return "\n".join(lines) + "\n"


def parse(text: str, config: dict | None = None, options: dict | None = None):
    parser = XequiNet().log_parser(config or base_config(), options or {})
    return parser, parser.feed(text)


# -- config ---------------------------------------------------------------------------------------------------------

def test_valid_config(tmp_path):
    assert XequiNet().check(base_config(), 4) == ([], [])


def test_missing_ema_decay_is_an_error_with_the_fix():
    config = base_config()
    config["trainer"]["ema_decay"] = None
    errors, _ = XequiNet().check(config, 1)
    assert errors == ["trainer.ema_decay: not set; XequiNet crashes at the first validation without it: "
                      "set trainer.ema_decay = 0.995"]
    del config["trainer"]["ema_decay"]
    assert XequiNet().check(config, 1)[0][0].startswith("trainer.ema_decay:")


@pytest.mark.parametrize("scheduler", ["reduce_on_plateau", "plateau"])
def test_plateau_scheduler_warns(scheduler):
    config = base_config()
    config["trainer"]["lr_scheduler"] = scheduler
    errors, warnings = XequiNet().check(config, 1)
    assert errors == [] and warnings[0].startswith("trainer.lr_scheduler:")


def test_loss_weights_must_name_targets():
    config = base_config()
    config["trainer"]["losses_weight"] = {"energy": 1.0, "force": 100.0}
    errors, _ = XequiNet().check(config, 1)
    assert errors == ["trainer.losses_weight: force not among data.targets (energy, forces)"]


def test_batch_size_must_divide_by_gpus():
    config = base_config()
    config["data"]["batch_size"] = 30
    errors, _ = XequiNet().check(config, 4)
    assert errors[0].startswith("data.batch_size: 30")
    assert XequiNet().check(config, 3) == ([], [])
    assert XequiNet().check(config, 0) == ([], [])


def test_best_k_and_unknown_keys_warn():
    config = base_config()
    config["trainer"]["best_k"] = 3
    config["trainer"]["max_epoch"] = 10
    errors, warnings = XequiNet().check(config, 1)
    assert errors == []
    assert warnings[0].startswith("trainer.best_k:")
    assert warnings[1].startswith("trainer.max_epoch:") and "trainer.max_epochs" in warnings[1]


def test_outputs_and_max_epoch(tmp_path):
    program = get_program("xequinet")
    config = base_config()
    program.set_outputs(config, "config007", tmp_path / "config007")
    assert config["trainer"]["save_dir"] == str(tmp_path / "config007")
    assert config["trainer"]["run_name"] == "config007"
    assert program.device_key() is None
    assert program.max_epoch(config) == 100
    del config["trainer"]["max_epochs"]
    assert program.max_epoch(config) == 300
    assert program.prepare(config) == []


def test_find_log(tmp_path):
    program = XequiNet()
    assert program.find_log(tmp_path) is None
    (tmp_path / "loss.log").write_text(WATER)
    assert program.find_log(tmp_path) == tmp_path / "loss.log"
    config = base_config()
    config["trainer"]["log_file"] = "train.log"
    assert program.find_log(tmp_path, config) is None
    (tmp_path / "train.log").write_text("")
    assert program.find_log(tmp_path, config) == tmp_path / "train.log"


# -- log ------------------------------------------------------------------------------------------------------------

def test_real_water_excerpt():
    parser, rows = parse(WATER)
    assert len(rows) == 1
    row = rows[0]
    assert row.epoch == 1 and row.lr_scale == pytest.approx(5.062e-05)
    assert row.val_loss == pytest.approx(556 + 1000 * 1.177)  # losses_weight, Energy/atom not a target
    assert row.train_loss == pytest.approx(57.82 + 1000 * 0.7386)
    summary = parser.summary()
    assert summary.finished and summary.phase == "finished"
    assert summary.epoch == 1 and summary.max_epoch == 100
    assert summary.best_epoch == 1 and summary.best_val_loss == pytest.approx(1733.0)
    info = summary.info
    assert info["task_name"] == "water" and info["units"] == {"energy": "eV", "forces": "eV/Angstrom"}
    assert info["logged_best_valid_mae"] == pytest.approx(7.19884)
    assert info["logged_best_epoch"] == 100 and info["logged_best_checkpoint"] == "./water_0.pt"
    assert info["valid_rmse"] == {"Energy": 556.2, "Energy/atom": 2.897, "Forces": 1.768}


def test_default_weights_are_the_targets_then_every_plain_column():
    config = base_config()
    del config["trainer"]["losses_weight"]
    assert parse(WATER, config)[1][0].val_loss == pytest.approx(556 + 1.177)
    config["data"]["targets"] = ["energy"]
    assert parse(WATER, config)[1][0].val_loss == pytest.approx(556)
    del config["data"]["targets"]
    assert parse(WATER, config)[1][0].val_loss == pytest.approx(556 + 1.177)


def test_weights_option_overrides():
    _, rows = parse(WATER, options={"weights": {"forces": 1.0}})
    assert rows[0].val_loss == pytest.approx(1.177)


def test_many_epochs_best_from_rows_not_the_best_line():
    text = training_log(30) + "2025-04-15 20:36:18 - INFO - Training Completed\n" \
        "2025-04-15 20:36:18 - INFO - Best Valid MAE: 99.0\n" \
        "2025-04-15 20:36:18 - INFO - Best Checkpoint: ./water_2.pt at Epoch 3\n"
    parser, rows = parse(text)
    assert [r.epoch for r in rows] == list(range(1, 31))
    summary = parser.summary()
    # The log rounds to .4g.
    assert summary.best_epoch == 30 and summary.best_val_loss == pytest.approx(50 / 30 + 1000 / 30, rel=1e-3)
    assert summary.info["logged_best_epoch"] == 3  # kept for information only


def test_no_ema_validation_rows():
    parser, rows = parse(training_log(5, ema=False))
    assert len(rows) == 5 and rows[-1].val_loss == pytest.approx(10 + 1000 * 0.2)
    assert parser.summary().phase == "training" and not parser.summary().finished


def test_nan_validation_keeps_nan_and_best_ignores_it():
    text = training_log(3) + "\n".join(epoch_block(4, [1.0, 0.1, 0.5], [float("nan"), 0.1, 0.2])) + "\n"
    parser, rows = parse(text)
    assert math.isnan(rows[-1].val_loss)
    summary = parser.summary()
    assert math.isnan(summary.val_loss) and summary.best_epoch == 3
    json.loads(json.dumps(parser.state, allow_nan=False))


def test_early_stop():
    text = training_log(12) + "2025-04-15 20:00:00 - INFO - Early Stopping at Epoch 12\n" \
        "2025-04-15 20:00:00 - INFO - Training Completed\n"
    summary = parse(text)[0].summary()
    assert summary.phase == "early_stopped" and summary.finished
    assert summary.info["early_stop_epoch"] == 12 and summary.info["stop_reason"] == "early_stopping"


def test_minimum_learning_rate():
    summary = parse(training_log(2) + "2025-04-15 20:00:00 - INFO - Minimum learning rate reached\n")[0].summary()
    assert summary.finished and summary.info["stop_reason"] == "min_lr"


def test_resumed_log_is_appended():
    first = training_log(10)  # killed during epoch 11
    resumed = ("2025-04-16 08:00:00 - INFO - Loaded checkpoint from /o/water_last.pt\n"
               + training_log(5, start=11, header=True))
    parser, _ = parse(first)
    parser.feed(resumed.splitlines(keepends=True)[0])
    assert parser.summary().phase == "starting" and parser.summary().info["resumed"] == 1
    rows = parser.feed("".join(resumed.splitlines(keepends=True)[1:]))
    assert [r.epoch for r in rows] == [11, 12, 13, 14, 15]
    summary = parser.summary()
    assert summary.epoch == 15 and summary.best_epoch == 15 and summary.phase == "training"


def test_mid_epoch_train_rows_and_epochs_without_validation():
    lines = table_lines("2025-04-15 19:00:00", [["Train  MAE", 1, "[50/79]", "5e-05", 9.0, 1.0, 0.9],
                                                ["Train RMSE", "", "", "", 9.5, 1.1, 1.0]],
                        ["Epoch", "Step", "LR", *PROPS])
    lines += epoch_block(1, [8.0, 1.0, 0.8], [7.0, 1.0, 0.7])
    lines += table_lines("2025-04-15 19:01:00", [["Train  MAE", 2, "[79/79]", "5e-05", 6.0, 1.0, 0.6],
                                                ["Train RMSE", "", "", "", 9.5, 1.1, 1.0]],
                         ["Epoch", "Step", "LR", *PROPS])
    lines += epoch_block(3, [5.0, 1.0, 0.5], [4.0, 1.0, 0.4])
    _, rows = parse("\n".join(lines) + "\n")
    assert [(r.epoch, r.val_loss is None) for r in rows] == [(1, False), (2, True), (3, False)]
    assert rows[0].train_loss == pytest.approx(8.0 + 800.0)  # the epoch's last train row
    assert rows[2].val_loss == pytest.approx(404.0)


def test_unknown_lines_and_older_layouts_never_crash():
    junk = [
        "", "   ", "no prefix at all", "2025-04-15 18:50:45 - WARNING - something odd",
        "2025-04-15 18:50:45 - INFO - Epoch: 1, train_loss: 0.3, valid_loss: 0.2",   # an older layout
        "2025-04-15 18:50:45 - INFO - Train  MAE  x  [1/2]", "2025-04-15 18:50:45 - INFO - Train  MAE  3  [1/2]  1e-4",
        "2025-04-15 18:50:45 - INFO - EMA Valid  MAE  1  2",  # wrong column count
        "2025-04-15 18:50:45 - INFO - Validation  Loss  1.0", "2025-04-15 18:50:45 - INFO - Best Checkpoint: ???",
        "2025-04-15 18:50:45 - INFO - Early Stopping at Epoch ?", "2025-04-15 18:50:45 - INFO -     12   13",
        "\ufffd\ufffd\ufffd",
    ]
    parser, rows = parse("\n".join(junk) + "\n" + WATER)
    assert rows[-1].val_loss == pytest.approx(1733.0)
    assert parser.summary().finished


def test_state_round_trip():
    text = training_log(8)
    lines = text.splitlines(keepends=True)
    cut = len(lines) // 2 + 3  # inside a table
    first, _ = parse("".join(lines[:cut]))
    second = XequiNet().log_parser(base_config(), {}, state=json.loads(json.dumps(first.state)))
    second.feed("".join(lines[cut:]))
    assert second.summary() == parse(text)[0].summary()


# -- resume ---------------------------------------------------------------------------------------------------------

def write_checkpoint(path: Path, good: bool = True) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"x" * 1000)
    if not good:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # a save cut off by a kill


def test_checkpoint_checks(tmp_path):
    path = tmp_path / "water_last.pt"
    assert not checkpoint_usable(path)
    path.write_bytes(b"")
    assert not checkpoint_usable(path)
    write_checkpoint(path)
    assert checkpoint_usable(path)
    write_checkpoint(path, good=False)
    assert not checkpoint_usable(path)
    path.write_bytes(b"\x80\x02legacy pickle")
    assert checkpoint_usable(path)


def test_resume_sets_ckpt_and_keeps_a_copy(tmp_path):
    program = XequiNet()
    config = base_config()
    program.set_outputs(config, "config001", tmp_path)
    assert program.resume_config(config, tmp_path) is None
    (tmp_path / "config001_last.pt").write_bytes(b"")
    assert program.resume_config(config, tmp_path) is None
    write_checkpoint(tmp_path / "config001_last.pt")
    before = copy.deepcopy(config)
    resumed = program.resume_config(config, tmp_path)
    assert config == before
    assert resumed["trainer"]["resume"] is True
    assert resumed["trainer"]["ckpt_file"] == str(tmp_path / "config001_last.pt")
    backups = sorted(tmp_path.glob("config001_last.pt.bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == (tmp_path / "config001_last.pt").read_bytes()
    fresh = program.fresh_config(resumed)
    assert fresh["trainer"]["resume"] is False and fresh["trainer"]["ckpt_file"] is None


def test_resume_falls_back_to_a_good_copy_when_last_is_cut(tmp_path):
    program = XequiNet()
    config = base_config()
    program.set_outputs(config, "config001", tmp_path)
    write_checkpoint(tmp_path / "config001_last.pt.bak-20250101-000000")
    write_checkpoint(tmp_path / "config001_last.pt", good=False)
    resumed = program.resume_config(config, tmp_path)
    assert resumed["trainer"]["ckpt_file"] == str(tmp_path / "config001_last.pt.bak-20250101-000000")


def test_only_a_few_copies_are_kept(tmp_path):
    program = XequiNet()
    config = base_config()
    program.set_outputs(config, "config001", tmp_path)
    for day in range(1, 6):
        write_checkpoint(tmp_path / f"config001_last.pt.bak-202501{day:02d}-000000")
    write_checkpoint(tmp_path / "config001_last.pt")
    program.resume_config(config, tmp_path)
    assert len(list(tmp_path.glob("config001_last.pt.bak-*"))) == 3


def test_fresh_keeps_a_finetuning_checkpoint():
    config = base_config()
    config["trainer"]["ckpt_file"] = "/models/pretrained.pt"
    fresh = XequiNet().fresh_config(config)
    assert fresh["trainer"]["ckpt_file"] == "/models/pretrained.pt" and fresh["trainer"]["resume"] is False


def test_long_log_with_resume_nan_and_early_stop():
    parser, rows = parse((LOGS / "xequinet_long.log").read_text())
    assert [r.epoch for r in rows] == list(range(1, 16))
    assert math.isnan(rows[6].val_loss) and rows[6].train_loss == pytest.approx(7.0 + 140.0)
    summary = parser.summary()
    assert summary.phase == "early_stopped" and summary.finished and summary.info["resumed"] == 1
    assert summary.best_epoch == 15 and summary.epoch == 15


def test_state_is_strict_json_while_an_epoch_waits_for_validation():
    lines = table_lines("2025-04-15 19:00:00", [["Train  MAE", 1, "[79/79]", "nan", float("nan"), 1.0, 0.9]],
                        ["Epoch", "Step", "LR", *PROPS])
    parser, _ = parse("\n".join(lines) + "\n")
    state = json.loads(json.dumps(parser.state, allow_nan=False))
    resumed = XequiNet().log_parser(base_config(), {}, state=state)
    rows = resumed.feed("\n".join(epoch_block(1, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])[-3:]) + "\n")
    assert math.isnan(rows[0].train_loss) and rows[0].val_loss == pytest.approx(1001.0)


# -- the genuine logs of tests/fixtures/xequinet-real (see its README) -------------------------------------------
REAL = Path(__file__).parent / "fixtures" / "xequinet-real"


def real_parser():
    from hpc_sweep.common.formats import load_structured

    return XequiNet().log_parser(load_structured(REAL / "run1.config.yaml"), {})


def weighted(energy: float, forces: float) -> float:
    """run1's checkpoint score: losses_weight energy 1.0, forces 100.0 (Energy/atom is not a target)."""
    return 1.0 * energy + 100.0 * forces


def test_real_log_of_four_epochs():
    parser = real_parser()
    rows = parser.feed((REAL / "run1.loss.log").read_text())
    assert [r.epoch for r in rows] == [1, 2, 3, 4]
    assert [r.val_loss for r in rows] == pytest.approx([weighted(1.166, 2.456), weighted(1.141, 2.385),
                                                        weighted(1.105, 2.282), weighted(1.066, 2.162)])
    # An epoch's train value is its last logged step's ([18/18]); its LR that step's (0 at the cosine's end).
    assert rows[3].train_loss == pytest.approx(weighted(2.55, 0.3308)) and rows[3].lr_scale == 0.0
    assert rows[0].lr_scale == pytest.approx(4.268e-04)
    summary = parser.summary()
    assert (summary.epoch, summary.max_epoch, summary.best_epoch) == (4, 4, 4)
    assert summary.finished and summary.phase == "finished"
    # The trainer's own end lines agree with the score worked out per epoch (its values are not rounded).
    assert summary.info["logged_best_epoch"] == 4
    assert summary.info["logged_best_valid_mae"] == pytest.approx(summary.best_val_loss, abs=0.05)
    assert summary.info["units"] == {"pos": "Ang", "energy": "eV", "forces": "eV/Ang", "virial": "eV/Ang^3"}
    assert XequiNet().training_evidence(summary, True) == (True, "trained to epoch 4 of 4")


def test_real_resumed_log_continues_its_epochs():
    """The resume appends after 'Loaded checkpoint from': epochs 5-7 follow, nothing is counted twice."""
    parser = real_parser()
    first = (REAL / "run1.loss.log").read_text()
    whole = (REAL / "run1-resumed.loss.log").read_text()
    assert whole.startswith(first)
    parser.feed(first)
    parser.start_attempt()  # the poll reads on into the next attempt
    assert not parser.summary().finished
    rows = parser.feed(whole[len(first):])
    assert [r.epoch for r in rows] == [5, 6, 7]
    assert rows[2].val_loss == pytest.approx(weighted(1.03, 2.048))
    summary = parser.summary()
    assert summary.info["resumed"] == 1 and summary.finished
    assert (summary.epoch, summary.best_epoch) == (7, 7) and summary.info["logged_best_epoch"] == 7
    assert summary.info["logged_best_valid_mae"] == pytest.approx(summary.best_val_loss, abs=0.05)


def test_sigtermed_epoch_is_dropped_and_logged_again_after_the_resume():
    """SIGTERM leaves train rows of epoch 3 without validation; the resume logs epoch 3 again from its start."""
    lines = (REAL / "run1.loss.log").read_text().splitlines(keepends=True)
    cut = next(n for n, line in enumerate(lines) if "Train  MAE        3  [10/18]" in line) + 2
    parser = real_parser()
    assert [r.epoch for r in parser.feed("".join(lines[:cut]))] == [1, 2]
    parser.start_attempt()
    again = "".join(lines[cut - 6:]).replace("1.105", "0.999")  # epoch 3 from its first step, new values
    resumed = "2026-12-06 09:29:11 - INFO - Loaded checkpoint from /scratch/alice/xeq-real/run1/ckpt/run1_last.pt\n"
    rows = parser.feed(resumed + again)
    assert [r.epoch for r in rows] == [3, 4]
    assert rows[0].val_loss == pytest.approx(weighted(0.999, 2.282))


def test_exit_0_needs_an_epoch_and_the_trainers_end_line():
    parser = real_parser()
    assert XequiNet().training_evidence(None, False) == (False, "exited 0 without a training log")
    lines = (REAL / "run1.loss.log").read_text().splitlines(keepends=True)
    parser.feed("".join(line for line in lines if "Training Completed" not in line and "Best" not in line))
    ok, reason = XequiNet().training_evidence(parser.summary(), True)
    assert not ok and reason.startswith("exited 0 without a training log")
    early = real_parser()
    early.feed("".join(lines[:-3]) + "2026-12-06 09:28:34 - INFO - Early Stopping at Epoch 4\n" + "".join(lines[-3:]))
    assert XequiNet().training_evidence(early.summary(), True) == (True, "early stopping at epoch 4")


def test_resume_environment_only_for_this_sweeps_checkpoint(tmp_path):
    program = XequiNet()
    config = base_config()
    program.set_outputs(config, "config001", tmp_path)
    write_checkpoint(tmp_path / "config001_last.pt")
    resumed = program.resume_config(config, tmp_path)
    assert program.run_environment(resumed, tmp_path) == {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    assert program.run_environment(config, tmp_path) == {}
    finetune = copy.deepcopy(config)
    finetune["trainer"].update(resume=True, ckpt_file="/models/pretrained.pt")
    assert program.run_environment(finetune, tmp_path) == {}
