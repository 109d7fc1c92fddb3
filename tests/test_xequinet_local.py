"""A XequiNet sweep on the local backend, end to end: the genuine base config, the command `hpc-sweep init` writes,
stand-ins for torchrun and `xeq train` that behave as the real ones do (tests/xeq_standin.py), and the real runner,
job scripts and polls. Nothing of hpc-sweep is mocked.

What it proves: the grid `init` suggests ("trainer.max_lr" = [5e-4, 1e-3]) generates on the real base; a cpu
config starts torchrun with a process count of 1; a run killed at its time limit in the middle of an epoch is
resumed from its checkpoint with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in its environment, repeats that epoch and
continues; the curve holds every epoch once.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from test_local_runner import Sweep, base_env, wait_until
from xeq_standin import OmegaConfLoader, write_commands

from hpc_sweep.api import load

FIXTURES = Path(__file__).parent / "fixtures" / "xequinet-real"
REAL_BASE = FIXTURES / "run1.config.yaml"


def xequinet_sweep(tmp_path: Path, env: dict, walltime: str = "20s") -> Sweep:
    """`hpc-sweep init` on the real base, then the sweep.toml edits a user makes: uncomment init's own grid line,
    a cpu device, the local site. The command is the one init wrote."""
    sweep = Sweep(tmp_path / "sweep", env)
    sweep.cli("init", str(sweep.root), "--base", str(REAL_BASE), "--site", "local")
    site = tmp_path / "site.toml"
    site.write_text('scheduler = "local"\ncpu_slots = 2\npoll_min_interval = "1s"\n')
    text = (sweep.root / "sweep.toml").read_text()
    assert 'command = "torchrun --nproc-per-node={nprocs} --master-port={port}' in text
    text = text.replace('# "trainer.max_lr" = [5e-4, 1e-3]', '"trainer.max_lr" = [5e-4, 1e-3]')
    text = text.replace('site = "local"', f'site = "{site}"\ndevice = "cpu"').replace(
        'walltime = "24:00:00"', f'walltime = "{walltime}"')
    text = text.replace('[fixed]                                # applied to every config',
                        '[fixed]\n"trainer.max_epochs" = 5')
    (sweep.root / "sweep.toml").write_text(text)
    return sweep


def standin_env(tmp_path: Path, **extra: str) -> dict:
    bin_dir = write_commands(tmp_path / "bin")
    return base_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **extra)


def test_grid_from_init_generates_on_the_real_base(tmp_path: Path) -> None:
    sweep = xequinet_sweep(tmp_path, standin_env(tmp_path))
    sweep.cli("generate", str(sweep.root))
    base_lines = REAL_BASE.read_text().splitlines()
    for name, lr in (("config001", 5e-4), ("config002", 1e-3)):
        text = (sweep.root / "configs" / f"{name}.yaml").read_text()
        max_lr = yaml.load(text, Loader=OmegaConfLoader)["trainer"]["max_lr"]  # as XequiNet reads it
        assert isinstance(max_lr, float) and max_lr == lr
        changed = {line.split(":")[0].strip() for line in text.splitlines() if line not in base_lines}
        # The swept key, the [fixed] one and the two that hpc-sweep points at the config's own outputs; every
        # other line as the user wrote it.
        assert changed == ({"max_lr"} if lr != 5e-4 else set()) | {"max_epochs", "run_name", "save_dir"}
    assert "  max_lr: 5e-4" in (sweep.root / "configs" / "config001.yaml").read_text()  # the base's value, as spelt
    assert "  max_lr: 0.001" in (sweep.root / "configs" / "config002.yaml").read_text()


def test_timed_out_run_resumes_from_its_checkpoint_and_continues_its_epochs(tmp_path: Path, sweeps: list) -> None:
    # config001 (max_lr 5e-4) stops in the middle of epoch 3 and is killed at its 10 s limit; config002 trains.
    sweep = xequinet_sweep(tmp_path, standin_env(tmp_path, XEQ_STANDIN_HANG="config001:3"), walltime="10s")
    sweeps.append(sweep)
    sweep.cli("generate", str(sweep.root))
    config001 = sweep.root / "configs" / "config001.yaml"
    sweep.cli("submit", str(sweep.root))

    def settled() -> dict:
        states = sweep.status_json()
        return states if all(c["state"] in ("completed", "failed") for c in states.values()) else {}

    states = wait_until(settled, 90, "both configs to finish (config001 after a resume)", interval=0.5)
    one, two = states["config001"], states["config002"]
    assert (two["state"], two["attempt"], two["epoch"]) == ("completed", 1, 5), two
    assert (one["state"], one["attempt"], one["epoch"], one["max_epoch"]) == ("completed", 2, 5, 5), one
    assert one["reason"] == "trained to epoch 5 of 5"

    outputs = sweep.root / "outputs" / "config001"
    # The resume config: the generated one plus resume and the checkpoint, every other line as generated.
    run_config = sweep.root / "script" / "run" / "config001.a2.yaml"
    resumed = yaml.load(run_config.read_text(), Loader=OmegaConfLoader)["trainer"]
    assert resumed["resume"] is True and resumed["ckpt_file"] == str(outputs / "config001_last.pt")
    generated = config001.read_text().splitlines()
    assert [line for line in run_config.read_text().splitlines() if line not in generated] == [
        "  resume: true", f"  ckpt_file: {outputs / 'config001_last.pt'}"]
    # The map gave the resumed task its environment, and it reached the trainer (which refuses to load without).
    map_lines = [line for m in (sweep.root / "script").glob("*.map") for line in m.read_text().splitlines()]
    assert [line.split("\t")[7:] for line in map_lines if line.split("\t")[1:3] == ["config001", "2"]] == [
        ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"]]
    assert all(len(line.split("\t")) == 7 for line in map_lines if line.split("\t")[2] == "1")
    ran = json.loads((outputs / "standin.json").read_text())
    assert ran["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1" and ran["first_epoch"] == 3
    assert ran["nproc"] == "1"  # a cpu config: {nprocs} is 1 where {gpus} is 0
    assert json.loads((sweep.root / "outputs" / "config002" / "standin.json").read_text())["nproc"] == "1"

    # The log: epoch 3 cut short by the kill, then "Loaded checkpoint from", epoch 3 again from its start.
    log = (outputs / "loss.log").read_text()
    epochs = [int(m) for m in re.findall(r"Train  MAE\s+(\d+)", log)]
    assert epochs == [1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5]
    assert log.count("Loaded checkpoint from") == 1 and log.count("Start training") == 1
    # One curve: each epoch once, epoch 3 with the complete values of the resumed attempt.
    curve = load(sweep.root).curves("config001")
    assert [(row["epoch"], row["attempt"]) for row in curve] == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
    assert curve[2]["val_loss"] == pytest.approx(1.0 / 3 + 100 * 1.5 / 3, rel=1e-3)
    assert one["best_epoch"] == 5 and one["best_val_loss"] == pytest.approx(1.0 / 5 + 100 * 1.5 / 5, rel=1e-3)
