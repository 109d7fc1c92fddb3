"""Generic plugin: regex-driven log parser, glob log discovery, outputs key."""

from __future__ import annotations

import json
import math
import os

from hpc_sweep.programs import get_program
from hpc_sweep.programs.generic import Generic

KERAS = """\
Epoch 1/3
100/100 - 2s - loss: 0.9000 - val_loss: 0.8000
Epoch 2/3
100/100 - 2s - loss: 0.5000 - val_loss: nan
Epoch 3/3
100/100 - 2s - loss: 0.3000 - val_loss: 0.4000
"""
LOG_TABLE = {"path": "train*.log", "epoch": r"^Epoch (\d+)/", "train_loss": r"- loss: (?P<train_loss>\S+)",
             "val_loss": r"val_loss: (\S+)", "outputs_key": "run.out_dir", "max_epoch_key": "run.epochs"}


def program() -> Generic:
    return get_program("generic", LOG_TABLE)


def test_outputs_key_and_max_epoch(tmp_path):
    config = {"run": {"epochs": 3}}
    program().set_outputs(config, "config001", tmp_path / "config001")
    assert config["run"]["out_dir"] == str(tmp_path / "config001")
    assert program().max_epoch(config) == 3
    assert program().device_key() is None
    untouched = {"a": 1}
    Generic().set_outputs(untouched, "config001", tmp_path)
    assert untouched == {"a": 1} and Generic().max_epoch(untouched) is None


def test_keras_style_log():
    parser = program().log_parser({"run": {"epochs": 3}}, {})
    rows = parser.feed(KERAS)
    assert [(r.epoch, r.train_loss) for r in rows] == [(1, 0.9), (2, 0.5), (3, 0.3)]
    assert math.isnan(rows[1].val_loss)
    summary = parser.summary()
    assert summary.best_epoch == 3 and summary.best_val_loss == 0.4 and summary.finished
    json.loads(json.dumps(parser.state, allow_nan=False))


def test_epoch_counter_without_epoch_numbers():
    parser = Generic(val_loss_regex=r"val=(\S+)").log_parser({}, {})
    rows = parser.feed("val=3\nnoise\nval=2\nval=5\n")
    assert [(r.epoch, r.val_loss) for r in rows] == [(1, 3.0), (2, 2.0), (3, 5.0)]
    assert parser.summary().best_epoch == 2 and not parser.summary().finished


def test_one_line_per_epoch_and_options_override():
    options = {"epoch_regex": r"ep (?P<epoch>\d+)", "train_loss_regex": r"tr (?P<value>\S+)",
               "val_loss_regex": None, "finished_regex": "^DONE"}
    parser = Generic().log_parser({}, options)
    rows = parser.feed("ep 1 tr 0.5\nep 2 tr 0.25\nDONE\n")
    assert [(r.epoch, r.train_loss, r.val_loss) for r in rows] == [(1, 0.5, None), (2, 0.25, None)]
    assert parser.summary().finished and parser.summary().phase == "finished"


def test_epoch_without_validation_is_closed_by_the_next_epoch():
    parser = Generic(epoch_regex=r"Epoch (\d+)", train_loss_regex=r"loss (\S+)",
                     val_loss_regex=r"val (\S+)").log_parser({}, {})
    rows = parser.feed("Epoch 1\nloss 0.5\nEpoch 2\nloss 0.4\nval 0.3\n")
    assert [(r.epoch, r.train_loss, r.val_loss) for r in rows] == [(1, 0.5, None), (2, 0.4, 0.3)]


def test_state_round_trip():
    lines = KERAS.splitlines(keepends=True)
    first = program().log_parser({}, {})
    first.feed("".join(lines[:3]))
    second = program().log_parser({}, {}, state=json.loads(json.dumps(first.state)))
    second.feed("".join(lines[3:]))
    whole = program().log_parser({}, {})
    whole.feed(KERAS)
    assert second.summary() == whole.summary()


def test_find_log_newest_match(tmp_path):
    assert program().find_log(tmp_path) is None
    old, new = tmp_path / "train1.log", tmp_path / "train2.log"
    old.write_text("a")
    new.write_text("b")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    assert program().find_log(tmp_path) == new
    absolute = Generic(log_glob=str(tmp_path / "train1.*"))
    assert absolute.find_log(tmp_path / "elsewhere") == old


def test_no_resume_recipe(tmp_path):
    assert Generic().resume_config({"a": 1}, tmp_path) is None
    assert Generic().fresh_config({"a": 1}) == {"a": 1}


def test_find_log_in_a_folder_with_glob_characters(tmp_path):
    folder = tmp_path / "lr[1e-3]"
    folder.mkdir()
    (folder / "train.log").write_text("x")
    assert program().find_log(folder) == folder / "train.log"
