"""The demo trainer behaves like deeph-train: DeepH log lines, real learning, resume, failure and SIGTERM."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import pytest
import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "demo_trainer" / "train.py"
BASE = ROOT / "examples" / "demo" / "base.toml"

STAMP = r"\[ \d\d\.\d\d-\d\d:\d\d:\d\d \] "
EPOCH = re.compile(STAMP + r"\[train\] Epoch (\d+) \| Time (\d+\.\d\d) s \| Train-Loss (\S+) \| "
                   r"Val-Loss (\S+) \| Scale (\S+)$")
RUN_DIR = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d")

# Small and quick: a few epochs on a small split.
TINY = {
    "process.train.max_epoch": 4,
    "process.train.dataloader.train_size": 80,
    "process.train.dataloader.validate_size": 32,
    "process.train.dataloader.test_size": 16,
    "model.advanced.num_blocks": 1,
}


def write_config(folder: Path, name: str, overrides: dict[str, Any]) -> Path:
    config = tomllib.loads(BASE.read_text())
    for dotted, value in {**TINY, "data.outputs_dir": f"./outputs/{name}", **overrides}.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = folder / f"{name}.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    return path


def train(config: Path, env: Optional[dict[str, str]] = None,
          cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEMO_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(TRAIN), str(config)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=120)


def run_dirs(outputs: Path) -> list[Path]:
    return sorted(p for p in outputs.iterdir() if RUN_DIR.fullmatch(p.name))


def epochs(run_dir: Path) -> list[tuple[int, float, float, float]]:
    rows = []
    for line in (run_dir / "deepx.log").read_text().splitlines():
        match = EPOCH.match(line)
        if match:
            rows.append((int(match.group(1)), float(match.group(3)), float(match.group(4)), float(match.group(5))))
    return rows


def load_train_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_train", TRAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_log_is_in_deeph_format_and_run_folder_is_complete(tmp_path: Path) -> None:
    done = train(write_config(tmp_path, "fmt", {}))
    assert done.returncode == 0, done.stderr
    [run] = run_dirs(tmp_path / "outputs" / "fmt")
    lines = (run / "deepx.log").read_text().splitlines()
    assert all(re.match(STAMP, line) for line in lines)
    assert re.match(STAMP + r" +Version \S+$", lines[0])
    text = "\n".join(lines)
    order = ["[system] Use the CPU device(s) `[0]` of totally `1` device(s)", "[dataloader] Train size: `80`. "
             "Val size: `32`. Test size: `16`.", "[model] The parameters size is `", "[model] We will save the "
             f"model into `{run / 'model'}`", "[train] Compile networks done!", "[train] Starting the training "
             "process ...", "[train] Epoch 1 |"]
    positions = [text.index(fragment) for fragment in order]
    assert positions == sorted(positions)
    assert [e[0] for e in epochs(run)] == [1, 2, 3, 4]
    assert (run / "model" / "params" / "latest.pytree" / "epoch_4" / "params.json").is_file()
    assert list((run / "model" / "params" / "best.pytree").iterdir())
    assert set(json.loads((run / "dataset_split.json").read_text())) == {"train", "validate", "test"}
    assert (run / "model" / "train.toml").is_file()
    assert "Test-Loss" in done.stdout


def test_a_good_learning_rate_beats_an_absurd_and_a_tiny_one(tmp_path: Path) -> None:
    longer = {"process.train.max_epoch": 15, "process.train.dataloader.train_size": 200,
              "model.advanced.num_blocks": 2, "process.train.scheduler.min_learning_rate_scale": 1e-6}
    final = {}
    for name, lr in (("good", 3e-2), ("absurd", 30.0), ("tiny", 1e-6)):
        done = train(write_config(tmp_path, name, {**longer, "process.train.optimizer.init_learning_rate": lr}))
        assert done.returncode == 0, done.stderr
        [run] = run_dirs(tmp_path / "outputs" / name)
        rows = epochs(run)
        final[name] = rows[-1][2]
        if name == "good":
            assert rows[-1][2] < 0.5 * rows[0][2]  # it really learns
    assert final["good"] < final["absurd"]
    assert final["good"] < final["tiny"]


def test_resume_continues_in_a_new_folder_exactly_as_an_unbroken_run(tmp_path: Path) -> None:
    unbroken = train(write_config(tmp_path, "whole", {"process.train.max_epoch": 6}))
    assert unbroken.returncode == 0, unbroken.stderr
    first = train(write_config(tmp_path, "split", {"process.train.max_epoch": 3}))
    assert first.returncode == 0, first.stderr
    [previous] = run_dirs(tmp_path / "outputs" / "split")
    time.sleep(1.0)  # DeepH names folders by the second; keep the listing order obvious
    resumed = train(write_config(tmp_path, "split", {
        "process.train.max_epoch": 6,
        "process.train.continued.enable": True,
        "process.train.continued.previous_output_dir": str(previous),
    }))
    assert resumed.returncode == 0, resumed.stderr
    runs = run_dirs(tmp_path / "outputs" / "split")
    assert len(runs) == 2 and runs[0] == previous
    assert [e[0] for e in epochs(runs[1])] == [4, 5, 6]
    assert "Continue from the `latest` model of epoch `3`" in (runs[1] / "deepx.log").read_text()
    [whole] = run_dirs(tmp_path / "outputs" / "whole")
    assert epochs(runs[1]) == epochs(whole)[3:]  # params, optimizer and schedule all carried over
    assert (runs[1] / "model" / "params" / "latest.pytree" / "epoch_6").is_dir()


def test_resume_from_a_missing_checkpoint_fails_loudly(tmp_path: Path) -> None:
    done = train(write_config(tmp_path, "nothing", {"process.train.continued.enable": True,
                                                    "process.train.continued.previous_output_dir": "./nowhere"}))
    assert done.returncode != 0
    assert "FileNotFoundError" in done.stderr and "nowhere" in done.stderr


def test_fail_at_epoch_gives_a_traceback_and_nonzero_exit(tmp_path: Path) -> None:
    done = train(write_config(tmp_path, "boom", {}), env={"DEMO_FAIL_AT_EPOCH": "2"})
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "RuntimeError: non-finite gradients in epoch 2" in done.stderr
    [run] = run_dirs(tmp_path / "outputs" / "boom")
    assert [e[0] for e in epochs(run)] == [1]


def test_sigterm_stops_the_run_nonzero_with_a_complete_log(tmp_path: Path) -> None:
    config = write_config(tmp_path, "term", {"process.train.max_epoch": 50})
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMO_")}
    env["DEMO_EPOCH_SLEEP"] = "0.3"
    proc = subprocess.Popen([sys.executable, str(TRAIN), str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            outputs = tmp_path / "outputs" / "term"
            if outputs.is_dir() and run_dirs(outputs) and epochs(run_dirs(outputs)[0]):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM" in err
    [run] = run_dirs(tmp_path / "outputs" / "term")
    log = (run / "deepx.log").read_text()
    assert log.endswith("\n")
    done_epochs = [e[0] for e in epochs(run)]
    assert 1 <= len(done_epochs) < 50
    latest = run / "model" / "params" / "latest.pytree"
    for epoch_dir in latest.iterdir():  # whatever was saved is whole JSON
        json.loads((epoch_dir / "params.json").read_text())


def test_scale_below_minimum_stops_training(tmp_path: Path) -> None:
    done = train(write_config(tmp_path, "plateau", {
        "process.train.max_epoch": 30, "process.train.scheduler.rtol": 0.99,
        "process.train.scheduler.patience": 0, "process.train.scheduler.min_learning_rate_scale": 0.3,
    }))
    assert done.returncode == 0, done.stderr
    [run] = run_dirs(tmp_path / "outputs" / "plateau")
    rows = epochs(run)
    # epoch 1 always improves on "nothing yet"; then every epoch halves the scale until it is below 0.3
    assert [(e[0], e[3]) for e in rows] == [(1, 1.0), (2, 0.5), (3, 0.25)]


def test_relative_outputs_dir_resolves_against_the_config_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = train(write_config(tmp_path, "rel", {}), cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert run_dirs(tmp_path / "outputs" / "rel")
    assert not (elsewhere / "outputs").exists()


def test_gpu_device_string_is_reported_like_deeph(tmp_path: Path) -> None:
    done = train(write_config(tmp_path, "gpu", {"system.device": "gpu*8:1-4,7", "process.train.max_epoch": 1}))
    assert done.returncode == 0, done.stderr
    [run] = run_dirs(tmp_path / "outputs" / "gpu")
    assert ("[system] Use the GPU device(s) `[1, 2, 3, 4, 7]` of totally `8` device(s). "
            "Succeeded test on the head device `cuda:1`!") in (run / "deepx.log").read_text()


@pytest.mark.parametrize("overrides, message", [
    ({"model.advanced.net_irreps": ""}, "net_irreps is empty"),
    ({"process.train.dataloader.train_size": 990}, "exceeds the dataset"),
    ({"process.train.optimizer.init_learning_rate": -1.0}, "init_learning_rate must be positive"),
])
def test_bad_config_raises_value_error(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    done = train(write_config(tmp_path, "bad", overrides))
    assert done.returncode != 0
    assert "ValueError" in done.stderr and message in done.stderr


def test_two_starts_in_one_second_get_separate_folders(tmp_path: Path) -> None:
    module = load_train_module()
    first = module.new_run_dir(tmp_path)
    second = module.new_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert RUN_DIR.fullmatch(first.name) and RUN_DIR.fullmatch(second.name)


def test_default_demo_config_runs_in_seconds(tmp_path: Path) -> None:
    config = tomllib.loads(BASE.read_text())
    config["data"]["outputs_dir"] = str(tmp_path / "outputs")
    path = tmp_path / "base.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    began = time.monotonic()
    done = train(path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 15
    [run] = run_dirs(tmp_path / "outputs")
    rows = epochs(run)
    assert rows[-1][2] < rows[0][2]
    assert config["system"]["show_train_process_bar"] is False
    assert config["process"]["train"]["dataloader"]["test_size"] > 0
