"""DeepH plugin: config checks, outputs, log discovery, the deepx.log parser and resume."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc_sweep.programs import get_program
from hpc_sweep.programs.deeph import DeepH, irreps_problem

LOGS = Path(__file__).parent / "data" / "logs"
H2O = (LOGS / "deeph_h2o.log").read_text()


def base_config(tmp_path: Path) -> dict:
    return {
        "system": {"device": "gpu*8:0", "float_type": "fp32", "show_train_process_bar": True},
        "data": {"inputs_dir": str(tmp_path / "inputs"), "outputs_dir": "./outputs"},
        "model": {"net_type": "eagle", "loss_type": "mae",
                  "advanced": {"net_irreps": "64x0e+48x1e+32x2e", "num_blocks": 3}},
        "process": {"train": {
            "max_epoch": 20,
            "dataloader": {"batch_size": 1, "train_size": 3000, "validate_size": 1000, "test_size": 999,
                           "dataset_split_json": ""},
            "optimizer": {"type": "adamw", "init_learning_rate": 2e-3},
            "scheduler": {"type": "reduce_on_plateau", "min_learning_rate_scale": 1e-4},
            "continued": {"enable": False, "previous_output_dir": "", "load_model_type": "latest"},
        }},
    }


def feed(text: str, config: dict, options: dict | None = None):
    parser = DeepH().log_parser(config, options or {})
    rows = parser.feed(text)
    return parser, rows


# -- config ---------------------------------------------------------------------------------------------------------

def test_valid_config_has_no_errors(tmp_path):
    errors, warnings = DeepH().check(base_config(tmp_path), 1)
    assert errors == [] and warnings == []


@pytest.mark.parametrize("irreps", ["64x0e+48x1e+32x2e", "64x0e + 48x1o", " 2x0e ", "16x0e+8x1e+4x2e+2x3o"])
def test_good_irreps(irreps):
    assert irreps_problem(irreps) is None


@pytest.mark.parametrize("irreps", ["", "   ", "64x0e+1x1e", "0e+32x1e", "64x0e+", "64x0x", None, 64])
def test_bad_irreps_are_errors_naming_the_key(tmp_path, irreps):
    config = base_config(tmp_path)
    config["model"]["advanced"]["net_irreps"] = irreps
    errors, _ = DeepH().check(config, 1)
    assert len(errors) == 1 and errors[0].startswith("model.advanced.net_irreps:")


def test_missing_irreps_is_an_error(tmp_path):
    config = base_config(tmp_path)
    del config["model"]["advanced"]["net_irreps"]
    errors, _ = DeepH().check(config, 1)
    assert errors[0].startswith("model.advanced.net_irreps: empty")


@pytest.mark.parametrize("name,value", [("batch_size", 1.5), ("train_size", 0.8), ("test_size", True),
                                        ("validate_size", "10"), ("batch_size", 0), ("train_size", -1)])
def test_sizes_must_be_integer_counts(tmp_path, name, value):
    config = base_config(tmp_path)
    config["process"]["train"]["dataloader"][name] = value
    errors, _ = DeepH().check(config, 1)
    assert any(e.startswith(f"process.train.dataloader.{name}:") for e in errors)


def test_no_test_set_is_an_error(tmp_path):
    config = base_config(tmp_path)
    config["process"]["train"]["dataloader"]["test_size"] = 0
    errors, _ = DeepH().check(config, 1)
    assert errors == [errors[0]] and errors[0].startswith("process.train.dataloader.test_size: no test set")


def test_split_file_gives_the_test_set(tmp_path):
    split = tmp_path / "dataset_split.json"
    split.write_text(json.dumps({"train": ["a"], "validate": ["b"], "test": ["c"]}))
    config = base_config(tmp_path)
    config["process"]["train"]["dataloader"].update(test_size=0, dataset_split_json=str(split))
    assert DeepH().check(config, 1) == ([], [])
    split.write_text(json.dumps({"train": ["a"], "validate": ["b"], "test": []}))
    errors, _ = DeepH().check(config, 1)
    assert errors and errors[0].startswith("process.train.dataloader.dataset_split_json:")
    config["process"]["train"]["dataloader"]["dataset_split_json"] = str(tmp_path / "missing.json")
    errors, _ = DeepH().check(config, 1)
    assert "not found" in errors[0]


def test_examples_spelling_of_the_split_key_counts_as_a_split_file(tmp_path):
    """DeepH's official example configs spell it dateset_split_json: it names the split file like the other."""
    config = base_config(tmp_path)
    loader = config["process"]["train"]["dataloader"]
    split = tmp_path / "dataset_split.json"
    split.write_text(json.dumps({"train": ["1"], "validate": ["2"], "test": []}))
    loader.update(test_size=0, dateset_split_json=str(split))
    del loader["dataset_split_json"]
    errors, warnings = DeepH().check(config, 1)
    assert warnings == []
    assert errors == [f"process.train.dataloader.dateset_split_json: {split} has no non-empty \"test\" list "
                      "(the DeepH tuning guide requires a test set)"]
    split.write_text(json.dumps({"train": ["1"], "validate": ["2"], "test": ["3"]}))
    split.touch()
    assert DeepH().check(config, 1) == ([], [])


def test_two_spellings_naming_different_split_files_warn(tmp_path):
    config = base_config(tmp_path)
    loader = config["process"]["train"]["dataloader"]
    loader.update(dataset_split_json="relative/a.json", dateset_split_json="relative/b.json")
    errors, warnings = DeepH().check(config, 1)
    assert errors == []
    assert warnings == ["process.train.dataloader.dateset_split_json: and dataset_split_json name different files "
                        "(relative/a.json, relative/b.json); keep one"]


@pytest.mark.parametrize("key,value", [("system.float_type", "fp16"), ("model.net_type", "eagel"),
                                       ("process.train.optimizer.type", "Adam"),
                                       ("process.train.scheduler.type", "cosine"),
                                       ("process.train.continued.load_model_type", "last")])
def test_enumerations(tmp_path, key, value):
    config = base_config(tmp_path)
    table = config
    *parents, leaf = key.split(".")
    for part in parents:
        table = table[part]
    table[leaf] = value
    errors, _ = DeepH().check(config, 1)
    assert len(errors) == 1 and errors[0].startswith(f"{key}: '{value}' is not one of")


def test_enumeration_suggests_the_nearest(tmp_path):
    config = base_config(tmp_path)
    config["model"]["net_type"] = "eagel"
    assert "did you mean 'eagle'" in DeepH().check(config, 1)[0][0]


def test_unknown_loss_is_only_a_warning(tmp_path):
    config = base_config(tmp_path)
    config["model"]["loss_type"] = "smoothl1"
    errors, warnings = DeepH().check(config, 1)
    assert errors == [] and warnings[0].startswith("model.loss_type:")


def test_prepare_turns_off_the_progress_bar(tmp_path):
    config = base_config(tmp_path)
    notes = DeepH().prepare(config)
    assert config["system"]["show_train_process_bar"] is False
    assert notes and notes[0].startswith("system.show_train_process_bar")
    assert DeepH().prepare(config) == []
    del config["system"]["show_train_process_bar"]  # DeepH's default is true
    assert DeepH().prepare(config) and config["system"]["show_train_process_bar"] is False


def test_outputs_device_and_max_epoch(tmp_path):
    config = base_config(tmp_path)
    program = get_program("deeph")
    program.set_outputs(config, "config001", tmp_path / "outputs" / "config001")
    assert config["data"]["outputs_dir"] == str(tmp_path / "outputs" / "config001")
    assert program.device_key() == "system.device"
    assert program.max_epoch(config) == 20
    del config["process"]["train"]["max_epoch"]
    assert program.max_epoch(config) == 10000


# -- log ------------------------------------------------------------------------------------------------------------

def test_real_h2o_log(tmp_path):
    parser, rows = feed(H2O, base_config(tmp_path))
    assert [r.epoch for r in rows] == [1, 2, 20]
    assert rows[0].seconds == 26.27 and rows[0].train_loss == 2.617852 and rows[0].lr_scale == 1.0
    summary = parser.summary()
    assert summary.epoch == 20 and summary.max_epoch == 20
    assert summary.val_loss == pytest.approx(2.745984e-02)
    assert summary.best_val_loss == pytest.approx(2.745984e-02) and summary.best_epoch == 20
    assert summary.finished and summary.phase == "finished"
    assert summary.info["version"] == "1.0.6"
    assert summary.info["parameters"] == 7684960
    assert (summary.info["train_size"], summary.info["val_size"], summary.info["test_size"]) == (3000, 1000, 999)
    assert summary.info["model"] == "eagle-H" and summary.info["loss"] == "mae"


# The lines of a deepx 1.0.6 start as DeepH-pack's documentation prints them (H2O-5K example), one per phase.
START = """\
[ 11.20-11:54:34 ]                  Version 1.0.6
[ 11.20-11:54:34 ] [system] Under the machine `sppz4531@gn32317`, with `x86_64 (64 cores)` CPU, and `1007GB` RAM.
[ 11.20-11:54:42 ] [system] Set random stream with seed `137`, type `key<fry>`.
[ 11.20-11:55:14 ] [graph] Building the graph with type: `train-HS`.
[ 11.20-11:55:14 ] [rawdata] Read in features from json: `/home/u/H2O_5K/inputs/dft/features.json`.
[ 11.20-11:55:14 ] [graph] Start processing `4999` structures with `32` processes.
[ 11.20-11:55:40 ] [dataloader] Train size: `3000`. Val size: `1000`. Test size: `999`.
[ 11.20-11:55:40 ] [model] Building the model `eagle-H` with loss `mae`.
[ 11.20-11:55:42 ] [model] Initializing the net parameters with dummy data...
[ 11.20-11:56:39 ] [optimizer] Using the optimizer `AdamW` with: betas `[0.9, 0.999]`, eps `1e-08`, weight decay strength `0.001`, and initial learning rate `0.001`.
[ 11.20-11:56:43 ] [model] We will save the model into `/home/u/H2O_5K/outputs/2025-11-20_11-54-09/model`. The best model will be saved. The latest model (keep `10` each `1` epoch) will be saved.
[ 11.20-11:56:43 ] [train] JAX networks: Parallel threads AOT-compiling `1` frameworks for training and `1` for validation.
[ 11.20-11:57:57 ] [train] Compile networks done!
[ 11.20-11:57:57 ] [train] Starting the training process ...
[ 11.20-11:58:29 ] [train] Epoch 1 | Time 26.27 s | Train-Loss 2.617852e+00 | Val-Loss 1.980336e+00 | Scale 1.0
"""
PHASES = ["starting", "starting", "starting", "graph building", "graph building", "graph building", "loading data",
          "model building", "model building", "model building", "model building", "compiling", "compiling",
          "training", "training"]


def test_phases_before_the_first_epoch(tmp_path):
    """Graph building and compiling can take many minutes: the phase says which, before any epoch."""
    parser = DeepH().log_parser(base_config(tmp_path), {})
    seen = []
    for line in START.splitlines(keepends=True):
        parser.feed(line)
        seen.append(parser.summary().phase)
    assert seen == PHASES
    assert parser.summary().epoch == 1


def test_a_tagged_line_during_training_is_no_new_phase(tmp_path):
    parser = DeepH().log_parser(base_config(tmp_path), {})
    parser.feed(START)
    parser.feed("[ 11.20-11:59:00 ] [model] Saved the best model at epoch `1`.\n")
    assert parser.summary().phase == "training"
    parser.feed("[ 11.21-08:00:00 ]                  Version 1.2.1\n")  # a new start (a resumed run's new log)
    assert parser.summary().phase == "starting"
    parser.feed("[ 11.21-08:00:10 ] [graph] Building the graph with type: `train-HS`.\n")
    assert parser.summary().phase == "graph building"


def test_not_finished_before_max_epoch(tmp_path):
    config = base_config(tmp_path)
    config["process"]["train"]["max_epoch"] = 500
    summary = feed(H2O, config)[0].summary()
    assert not summary.finished and summary.phase == "training" and summary.max_epoch == 500


def test_scale_falling_below_minimum_finishes(tmp_path):
    config = base_config(tmp_path)
    config["process"]["train"]["max_epoch"] = 500
    text = H2O + "[ 11.20-12:01:12 ] [train] Epoch 21 | Time 3.20 s | Train-Loss 2.9e-02 | Val-Loss 2.7e-02 | " \
                 "Scale 6.103515625e-05\n"
    summary = feed(text, config)[0].summary()
    assert summary.finished and summary.info["stop_reason"] == "min_learning_rate_scale"


def test_warmup_starting_below_minimum_is_not_finished(tmp_path):
    config = base_config(tmp_path)
    config["process"]["train"]["max_epoch"] = 500
    text = "[ 11.20-11:58:29 ] [train] Epoch 1 | Time 26.27 s | Train-Loss 2.6 | Val-Loss 1.9 | Scale 1e-05\n"
    assert not feed(text, config)[0].summary().finished


def test_nan_losses_and_long_scale(tmp_path):
    config = base_config(tmp_path)
    config["process"]["train"]["max_epoch"] = 500
    text = H2O + (
        "[ 11.20-12:01:12 ] [train] Epoch 21 | Time 3.21 s | Train-Loss nan | Val-Loss nan | "
        "Scale 0.49999999999999994\n")
    parser, rows = feed(text, config)
    assert math.isnan(rows[-1].val_loss) and math.isnan(rows[-1].train_loss)
    assert rows[-1].lr_scale == 0.49999999999999994
    summary = parser.summary()
    assert math.isnan(summary.val_loss)
    assert summary.best_val_loss == pytest.approx(2.745984e-02) and summary.best_epoch == 20
    json.loads(json.dumps(parser.state, allow_nan=False))  # the state is strict JSON


def test_unknown_and_odd_lines_are_ignored(tmp_path):
    noise = ("garbage without a tag\n[ 11.20-11:58:30 ] [train] Epoch | Time s\n"
             "2025-11-20 11:58:31.123456: W external/xla/xla/service/gpu/gpu_hlo_schedule.cc:654] warning\n"
             "\x00\xff weird bytes\n[ 11.20-11:58:30 ] [train] Epoch 3 | Time x s | Train-Loss ? | Val-Loss - \n")
    parser, rows = feed(H2O + noise, base_config(tmp_path))
    assert [r.epoch for r in rows] == [1, 2, 20, 3]
    assert rows[-1].val_loss is None and parser.summary().best_epoch == 20


def test_state_round_trip_continues_exactly(tmp_path):
    config = base_config(tmp_path)
    lines = H2O.splitlines(keepends=True)
    first = DeepH().log_parser(config, {})
    first.feed("".join(lines[:10]))
    state = json.loads(json.dumps(first.state))
    second = DeepH().log_parser(config, {}, state=state)
    second.feed("".join(lines[10:]))
    whole = feed(H2O, config)[0]
    assert second.summary() == whole.summary()


_LINE_KINDS = st.sampled_from([
    "[ 11.20-11:58:30 ] [train] Epoch {e} | Time 3.2 s | Train-Loss {t} | Val-Loss {v} | Scale {s}",
    "[ 11.20-11:58:30 ] [train] Epoch {e} | Time 3.2 s | Train-Loss {t} | Val-Loss {v} | Scale {s}   ",
    "[ 11.20-11:58:30 ] [train] Epoch {e} | Train-Loss {t} | Val-Loss {v}",        # another spelling
    "[ 11.20-11:58:30 ] [train] Epoch {e} | Time x s | Train-Loss `{t}` | Val-Loss {v} | Scale {s}",
    "[ 11.20-11:58:30 ]                  Version 1.0.{e}",
    "[ 11.20-11:58:30 ] [dataloader] Train size: `{e}`. Val size: `3`. Test size: `2`.",
    "[ 11.20-11:58:30 ] [model] The parameters size is `{e}`.",
    "[ 11.20-11:58:30 ] [train] Compile networks done!",
    "[ 11.20-11:58:30 ] [train] Starting the training process ...",
    "[ 11.20-11:58:30 ] [graph] building {e}",
    "noise Epoch {e} without a bar",
])
_NUMBERS = st.sampled_from(["1.5e-01", "nan", "inf", "0.5", "2", "-1e-3", "?", "1e-05"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_LINE_KINDS, st.integers(0, 30), _NUMBERS, _NUMBERS, _NUMBERS), max_size=40),
       st.integers(0, 40))
def test_fast_feed_equals_line_by_line(lines, split):
    """DeepHLogParser.feed inlines DeepH's own epoch lines: it must end in exactly the state, rows and summary
    that feeding every line through feed_line gives, also when fed in two pieces with the state saved between."""
    text = "".join(kind.format(e=e, t=t, v=v, s=s) + "\n" for kind, e, t, v, s in lines)
    options = {"max_epoch": 25, "min_learning_rate_scale": 1e-4}
    slow = DeepH().log_parser({}, options)
    slow_rows = [r for r in map(slow.feed_line, text.splitlines()) if r is not None]
    cut = sum(len(line) for line in text.splitlines(keepends=True)[:split])
    fast = DeepH().log_parser({}, options)
    fast_rows = fast.feed(text[:cut])
    fast = DeepH().log_parser({}, options, state=json.loads(json.dumps(fast.state)))
    fast_rows += fast.feed(text[cut:])
    assert repr(fast_rows) == repr(slow_rows)  # repr: nan != nan
    assert json.dumps(fast.state, sort_keys=True) == json.dumps(slow.state, sort_keys=True)
    assert repr(fast.summary()) == repr(slow.summary())


def test_options_override_the_config(tmp_path):
    parser = DeepH().log_parser(base_config(tmp_path), {"max_epoch": 2})
    parser.feed(H2O)
    assert parser.summary().max_epoch == 2 and parser.summary().finished


def test_hundred_thousand_epochs(tmp_path):
    config = base_config(tmp_path)
    config["process"]["train"]["max_epoch"] = 100_000
    best_epoch = 73_456
    lines = []
    for epoch in range(1, 100_001):
        val = 0.001 if epoch == best_epoch else 1.0 / epoch + 0.01
        lines.append(f"[ 11.20-11:58:29 ] [train] Epoch {epoch} | Time 3.20 s | Train-Loss {val * 1.1:.6e} | "
                     f"Val-Loss {val:.6e} | Scale 1.0\n")
    parser, rows = feed("".join(lines), config)
    summary = parser.summary()
    assert len(rows) == 100_000 and summary.epoch == 100_000
    assert summary.best_epoch == best_epoch and summary.best_val_loss == pytest.approx(0.001)
    assert summary.finished
    assert len(json.dumps(parser.state)) < 2000  # state stays small whatever the log length


# -- find_log and resume ----------------------------------------------------------------------------------------

def make_run(outputs: Path, stamp: str, log: bool = True, model: str | None = "latest") -> Path:
    run = outputs / stamp
    run.mkdir(parents=True)
    if log:
        (run / "deepx.log").write_text(H2O)
    if model:
        (run / "model" / "params" / f"{model}.pytree" / "epoch_20").mkdir(parents=True)
    return run


def test_find_log_picks_the_newest_run_folder(tmp_path):
    outputs = tmp_path / "config001"
    program = DeepH()
    assert program.find_log(outputs) is None
    make_run(outputs, "2025-11-20_11-54-09")
    newest = make_run(outputs, "2025-11-21_08-00-00")
    make_run(outputs, "2025-11-22_08-00-00", log=False)  # started, no log yet
    (outputs / "notes").mkdir()
    (outputs / "2099-01-01_00-00-00.txt").write_text("not a run folder")
    assert program.find_log(outputs) == newest / "deepx.log"


def test_resume_from_newest_run_with_a_latest_model(tmp_path):
    outputs = tmp_path / "config001"
    config = base_config(tmp_path)
    config["data"]["outputs_dir"] = str(outputs)
    config["process"]["train"]["continued"]["rtol_extra"] = "dropped"
    program = DeepH()
    assert program.resume_config(config, outputs) is None
    make_run(outputs, "2025-11-20_11-54-09")
    with_model = make_run(outputs, "2025-11-21_08-00-00")
    make_run(outputs, "2025-11-22_08-00-00", model=None)  # died while compiling
    (outputs / "2025-11-23_08-00-00" / "model" / "params" / "latest.pytree").mkdir(parents=True)  # nothing saved
    before = copy.deepcopy(config)
    resumed = program.resume_config(config, outputs)
    assert config == before  # a copy
    continued = resumed["process"]["train"]["continued"]
    # Exactly DeepH's keys, in its order: same data, the saved optimizer, the latest saved epoch.
    assert list(continued.items()) == [("enable", True), ("new_training_data", False), ("new_optimizer", False),
                                       ("previous_output_dir", str(with_model)), ("load_model_type", "latest"),
                                       ("load_model_epoch", -1)]
    fresh = program.fresh_config(resumed)
    assert fresh["process"]["train"]["continued"]["enable"] is False
    assert fresh["process"]["train"]["continued"]["previous_output_dir"] == ""


def test_no_resume_from_a_run_that_saved_only_its_best_model(tmp_path):
    outputs = tmp_path / "config001"
    make_run(outputs, "2025-11-20_11-54-09", model="best")
    assert DeepH().resume_config(base_config(tmp_path), outputs) is None


def test_fresh_keeps_a_continuation_from_elsewhere(tmp_path):
    config = base_config(tmp_path)
    config["data"]["outputs_dir"] = str(tmp_path / "outputs" / "config001")
    config["process"]["train"]["continued"].update(enable=True, previous_output_dir="/models/pretrained/run")
    assert DeepH().fresh_config(config) == config


def test_parser_state_spans_a_resumed_attempt(tmp_path):
    """A resumed run writes a new deepx.log; the poller keeps the parser state and feeds the new file."""
    config = base_config(tmp_path)
    config["process"]["train"]["max_epoch"] = 40
    parser = DeepH().log_parser(config, {})
    parser.feed(H2O)
    second = H2O.replace("Epoch 20 |", "Epoch 40 |").replace("Epoch 1 |", "Epoch 21 |").replace(
        "Epoch 2 |", "Epoch 22 |").replace("Val-Loss 1.274947e+00", "Val-Loss 1.0e-03")
    parser.feed(second.splitlines()[0] + "\n")
    assert parser.summary().phase == "starting" and not parser.summary().finished
    parser.feed("\n".join(second.splitlines()[1:]) + "\n")
    summary = parser.summary()
    assert summary.epoch == 40 and summary.finished
    assert summary.best_epoch == 22 and summary.best_val_loss == pytest.approx(1e-3)


# The GPU training config of DeepH-pack's documentation (the H2O-5K example, with the examples' own spelling
# dateset_split_json), plus the 1.2.x keys of its parameter reference that the example leaves out.
DOCS_TRAIN_TOML = """\
[system]
note = "DeepH-JAX"
device = "gpu*1"
float_type = "fp32"
random_seed = 137
log_level = "info"
jax_memory_preallocate = true
show_train_process_bar = false

[data]
inputs_dir = "./inputs"
outputs_dir = "./outputs"

[data.dft]
data_dir_depth = 0
validation_check = false

[data.graph]
dataset_name = "H2O_5K"
graph_type = "HS"
storage_type = "memory"
common_orbital_types = ""
parallel_num = -1
only_save_graph = false

[data.model_save]
best = true
latest = true
latest_interval = 1
latest_num = 10
latest_cache_mid_step_interval = -1

[model]
net_type = "eagle"
target_type = "H"
loss_type = "mae"

[model.advanced]
gaussian_basis_rmax = 10.0
net_irreps = "64x0e+48x1e+32x2e+16x3e+8x4e+8x5e+4x6e"
num_blocks = 3
num_heads = 2
enable_bs3b_layer = false
bs3b_orbital_types = ""
consider_parity = false
standardize_gauge = false

[process.train]
max_epoch = 10000

multi_way_jit_num = 1
ahead_of_time_compile = true
do_remat = false

[process.train.dataloader]
batch_size = 100

train_size = 3000
validate_size = 1000
test_size = 999
dateset_split_json = "splits/dataset_split.json"
only_use_train_loss = false

[process.train.drop]
dropout_rate = 0.0
stochastic_depth = 0.0
proj_rate = 0.0

[process.train.optimizer]
type = "adamw"
init_learning_rate = 1E-3
clip_norm_factor = -1.0
betas = [0.9, 0.999]
weight = 0.001
eps = 1E-8

[process.train.scheduler]
min_learning_rate_scale = 1E-5
type = "reduce_on_plateau"
factor = 0.5
patience = 500
rtol = 0.05
cooldown = 120
accum_size = -1

[process.train.continued]
enable = false
new_training_data = false
new_optimizer = false
previous_output_dir = ""
load_model_type = "latest"
load_model_epoch = -1

[process.train.with_plugin]
enable = false
plugin = "null"
env_path = "./need/user/set/this"
script_path = "./need/user/set/this"
"""


def test_a_deeph_1_2_config_from_the_documentation_passes_the_checks(tmp_path):
    from hpc_sweep.common.formats import tomllib

    config = tomllib.loads(DOCS_TRAIN_TOML)
    split = tmp_path / "dataset_split.json"
    split.write_text(json.dumps({"train": ["1"], "validate": ["2"], "test": ["3"]}))
    config["process"]["train"]["dataloader"]["dateset_split_json"] = str(split)
    assert DeepH().check(config, 1) == ([], [])


def test_generate_makes_both_spellings_of_the_split_file_absolute(tmp_path):
    import subprocess
    import sys

    from hpc_sweep.common.formats import tomllib

    base = tmp_path / "train.toml"
    base.write_text(DOCS_TRAIN_TOML.replace('dateset_split_json = "splits/dataset_split.json"',
                                            'dateset_split_json = "splits/dataset_split.json"\n'
                                            'dataset_split_json = "splits/dataset_split.json"'))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "dataset_split.json").write_text(json.dumps({"train": ["1"], "test": ["2"]}))

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    cli("init", str(tmp_path / "sweep"), "--base", str(base))
    # init copies the base into the sweep folder: relative paths resolve against that copy's folder.
    (tmp_path / "sweep" / "configs" / "splits").mkdir()
    (tmp_path / "sweep" / "configs" / "splits" / "dataset_split.json").write_text(
        json.dumps({"train": ["1"], "test": ["2"]}))
    done = cli("generate", str(tmp_path / "sweep"))
    assert "warning" not in done.stdout + done.stderr
    config = tomllib.loads((tmp_path / "sweep" / "configs" / "config001.toml").read_text())
    loader = config["process"]["train"]["dataloader"]
    expected = str(tmp_path / "sweep" / "configs" / "splits" / "dataset_split.json")
    assert loader["dataset_split_json"] == expected and loader["dateset_split_json"] == expected
