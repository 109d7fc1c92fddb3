"""init → generate → status through the real CLI, on DeepH and XequiNet bases; bad input exits 2, writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpc_sweep.common.formats import tomllib

DEEPH_BASE = """\
[system]
device = "gpu*8:0"
float_type = "fp32"
random_seed = 137
show_train_process_bar = false

[data]
inputs_dir = "./inputs"
outputs_dir = "./outputs"

[model]
net_type = "eagle"
target_type = "H"
loss_type = "mae"

[model.advanced]
net_irreps = "64x0e+48x1e+32x2e"
num_blocks = 3
num_heads = 2

[process.train]
max_epoch = 10000

[process.train.dataloader]
batch_size = 1
train_size = 30
validate_size = 10
test_size = 5
dataset_split_json = ""

[process.train.drop]
dropout_rate = 0.1

[process.train.optimizer]
type = "adamw"
init_learning_rate = 2e-3

[process.train.scheduler]
type = "reduce_on_plateau"
min_learning_rate_scale = 1e-4
"""

XEQ_BASE = """\
model:
  model_name: xpainn
  model_kwargs: {}
data:
  db_path: ./data
  cutoff: 5.0
  targets: [energy, forces]
  batch_size: 8
trainer:
  run_name: water
  lossfn: smoothl1
  losses_weight: {energy: 1.0, forces: 100.0}
  max_lr: 0.0005
  max_epochs: 300
  ema_decay: 0.995
  save_dir: ./
"""

GRID = """
[grid]
"process.train.optimizer.init_learning_rate" = [1e-2, 1e-3, 1e-4]
"model.advanced.num_blocks" = [3, 4, 5]
"process.train.drop.dropout_rate" = [0.0, 0.1]
"""


def hpc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True, cwd=cwd)


def make_sweep(tmp_path: Path, base_text: str = DEEPH_BASE, suffix: str = "toml", extra: str = GRID,
               site: str = "local") -> Path:
    base = tmp_path / f"train.{suffix}"
    base.write_text(base_text)
    result = hpc("init", str(tmp_path / "sweep"), "--base", str(base), "--site", site)
    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "sweep"
    text = (sweep / "sweep.toml").read_text()
    head = text.split("\n[grid]")[0]
    (sweep / "sweep.toml").write_text(head + "\n" + extra)
    return sweep


def snapshot_tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_deeph_grid_gives_18_valid_configs(tmp_path):
    sweep = make_sweep(tmp_path)
    result = hpc("generate", str(sweep))
    assert result.returncode == 0, result.stderr
    files = sorted((sweep / "configs").glob("config*.toml"))
    assert [f.name for f in files] == [f"config{i:03d}.toml" for i in range(1, 19)]
    base = tomllib.loads(DEEPH_BASE)
    outputs, combos = set(), set()
    for f in files:
        cfg = tomllib.loads(f.read_text())
        out = cfg["data"]["outputs_dir"]
        assert Path(out).is_absolute() and out == str(sweep.resolve() / "outputs" / f.stem)
        outputs.add(out)
        assert cfg["data"]["inputs_dir"] == str((sweep / "configs" / "inputs").resolve())
        lr = cfg["process"]["train"]["optimizer"]["init_learning_rate"]
        blocks = cfg["model"]["advanced"]["num_blocks"]
        drop = cfg["process"]["train"]["drop"]["dropout_rate"]
        assert isinstance(lr, float) and isinstance(blocks, int) and isinstance(drop, float)
        combos.add((lr, blocks, drop))
        # Every other key equals the base.
        for section in ("system", "model"):
            for key, value in base[section].items():
                if key != "advanced":
                    assert cfg[section][key] == value
        assert cfg["model"]["advanced"]["net_irreps"] == base["model"]["advanced"]["net_irreps"]
        assert cfg["process"]["train"]["dataloader"] == base["process"]["train"]["dataloader"]
    assert len(outputs) == 18 and len(combos) == 18


def test_generate_is_idempotent_and_numbers_stick(tmp_path):
    sweep = make_sweep(tmp_path)
    assert hpc("generate", str(sweep)).returncode == 0
    before = snapshot_tree(sweep / "configs")
    first = {f.name: f.read_text() for f in (sweep / "configs").glob("config*.toml")}
    assert "0 written, 18 unchanged" in hpc("generate", str(sweep)).stdout
    assert snapshot_tree(sweep / "configs") == before
    text = (sweep / "sweep.toml").read_text().replace("[1e-2, 1e-3, 1e-4]", "[1e-2, 1e-3, 1e-4, 1e-5]")
    (sweep / "sweep.toml").write_text(text)
    result = hpc("generate", str(sweep))
    assert "6 written, 18 unchanged" in result.stdout, result.stdout
    for name, content in first.items():
        assert (sweep / "configs" / name).read_text() == content
    new = tomllib.loads((sweep / "configs" / "config019.toml").read_text())
    assert new["process"]["train"]["optimizer"]["init_learning_rate"] == 1e-5


def test_status_json_lists_generated_configs_with_params(tmp_path):
    sweep = make_sweep(tmp_path)
    hpc("generate", str(sweep))
    result = hpc("status", str(sweep), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["sweep"] == "sweep" and data["counts"] == {"generated": 18}
    first = data["configs"][0]
    for key in ("config", "state", "attempt", "job_id", "params", "epoch", "max_epoch", "train_loss", "val_loss",
                "best_val_loss", "best_epoch", "output_dir", "log", "reason"):
        assert key in first
    assert first["params"] == {"process.train.optimizer.init_learning_rate": 0.01, "model.advanced.num_blocks": 3,
                               "process.train.drop.dropout_rate": 0.0}
    assert all(c["state"] == "generated" and c["epoch"] is None for c in data["configs"])


def test_xequinet_zip_group(tmp_path):
    extra = """
[grid]
"trainer.max_lr" = [5e-4, 1e-3]

[[zip]]
"data.cutoff" = [4.0, 5.0, 6.0]
"data.batch_size" = [8, 16, 32]
"""
    sweep = make_sweep(tmp_path, XEQ_BASE, "yaml", extra)
    result = hpc("generate", str(sweep))
    assert result.returncode == 0, result.stderr
    files = sorted((sweep / "configs").glob("config*.yaml"))
    assert len(files) == 6
    pairs = set()
    for f in files:
        cfg = yaml.safe_load(f.read_text())
        pairs.add((cfg["data"]["cutoff"], cfg["data"]["batch_size"]))
        assert cfg["trainer"]["run_name"] == f.stem
        assert cfg["trainer"]["save_dir"] == str(sweep.resolve() / "outputs" / f.stem)
        assert (sweep / "outputs" / f.stem).is_dir()
        assert cfg["trainer"]["losses_weight"] == {"energy": 1.0, "forces": 100.0}
    assert pairs == {(4.0, 8), (5.0, 16), (6.0, 32)}


BAD_SWEEPS = {
    "unknown dotted key": ('[grid]\n"model.advanced.num_block" = [3, 4]\n', "model.advanced.num_blocks"),
    "wrong value type": ('[grid]\n"model.advanced.num_blocks" = ["three"]\n', "num_blocks"),
    "float for int": ('[grid]\n"model.advanced.num_blocks" = [3.5]\n', "num_blocks"),
    "empty value list": ('[grid]\n"model.advanced.num_blocks" = []\n', "empty"),
    "unequal zip": ('[[zip]]\n"model.advanced.num_blocks" = [3, 4]\n"model.advanced.num_heads" = [2]\n', "unequal"),
    "malformed toml": ('[grid\n"a" = 1\n', "malformed TOML"),
    "bad device": ('[grid]\n"system.device" = ["gpu*8:9"]\n', "9"),
    "zero device count": ('[grid]\n"system.device" = ["gpu*0"]\n', "system.device"),
    "reversed range": ('[grid]\n"system.device" = ["gpu*8:4-1"]\n', "system.device"),
    "duplicate ids": ('[grid]\n"system.device" = ["gpu*8:1,1"]\n', "system.device"),
    "unknown device type": ('[grid]\n"system.device" = ["gpx*2"]\n', "system.device"),
    "trailing junk": ('[grid]\n"system.device" = ["gpu*8:1x"]\n', "system.device"),
    "unknown section": ('[gird]\n"a" = [1]\n', "grid"),
    "bad irreps": ('[grid]\n"model.advanced.net_irreps" = ["1x0e+4x1e"]\n', "net_irreps"),
}


@pytest.mark.parametrize("case", sorted(BAD_SWEEPS))
def test_bad_sweep_exits_2_one_line_nothing_written(tmp_path, case):
    sweep = make_sweep(tmp_path, extra=BAD_SWEEPS[case][0])
    before = snapshot_tree(sweep)
    result = hpc("generate", str(sweep))
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert BAD_SWEEPS[case][1] in lines[0] and "sweep.toml" in lines[0] or ".base_config" in lines[0], lines[0]
    assert snapshot_tree(sweep) == before


def test_malformed_yaml_base_exits_2(tmp_path):
    base = tmp_path / "train.yaml"
    base.write_text("trainer:\n  max_lr: [1, 2\n")
    result = hpc("init", str(tmp_path / "s"), "--base", str(base))
    assert result.returncode == 2 and "malformed YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_base_path_escaping_the_sweep_is_refused(tmp_path):
    sweep = make_sweep(tmp_path)
    text = (sweep / "sweep.toml").read_text().replace('base = "configs/.base_config.toml"',
                                                       'base = "../../etc/passwd"')
    (sweep / "sweep.toml").write_text(text)
    result = hpc("generate", str(sweep))
    assert result.returncode == 2 and "outside the sweep folder" in result.stderr
    assert not list((sweep / "configs").glob("config*"))


def test_changing_a_submitted_config_needs_force(tmp_path):
    from hpc_sweep.common.layout import SweepPaths
    from hpc_sweep.session import Session
    from hpc_sweep.state.store import open_store

    sweep = make_sweep(tmp_path)
    hpc("generate", str(sweep))
    with Session.open(sweep, write=True) as session:
        with session.store.transaction():
            session.store.conn.execute("UPDATE configs SET attempt = 1, state = 'running' WHERE name = 'config001'")
    text = (sweep / "sweep.toml").read_text() + '\n[fixed]\n"process.train.max_epoch" = 50\n'
    (sweep / "sweep.toml").write_text(text)
    result = hpc("generate", str(sweep))
    assert result.returncode == 2 and "config001" in result.stderr and "--force" in result.stderr
    assert "max_epoch = 10000" in (sweep / "configs" / "config001.toml").read_text()
    result = hpc("generate", str(sweep), "--force")
    assert result.returncode == 0 and "1 rewritten with --force" in result.stdout
    assert "max_epoch = 50" in (sweep / "configs" / "config001.toml").read_text()
    store = open_store(SweepPaths.at(sweep))
    assert [e.config for e in store.events("forced_regenerate")] == ["config001"]
    store.close()


def test_random_samples_are_seeded_and_typed(tmp_path):
    extra = """
[random]
count = 5
seed = 3
[random.params]
"process.train.optimizer.init_learning_rate" = { dist = "loguniform", low = 1e-4, high = 1e-2 }
"model.advanced.num_blocks" = { dist = "int", low = 3, high = 6 }
"model.loss_type" = { dist = "choice", values = ["mae", "mse"] }
"""
    sweep = make_sweep(tmp_path, extra=extra)
    assert hpc("generate", str(sweep)).returncode == 0
    first = [tomllib.loads(f.read_text()) for f in sorted((sweep / "configs").glob("config*.toml"))]
    assert len(first) == 5
    for cfg in first:
        assert 1e-4 <= cfg["process"]["train"]["optimizer"]["init_learning_rate"] <= 1e-2
        assert 3 <= cfg["model"]["advanced"]["num_blocks"] <= 6
        assert cfg["model"]["loss_type"] in ("mae", "mse")
    assert "0 written, 5 unchanged" in hpc("generate", str(sweep)).stdout


def test_help_of_every_command_shows_an_example():
    from hpc_sweep.cli import cli

    for name, command in cli.commands.items():
        result = hpc(name, "--help")
        assert result.returncode == 0
        assert "hpc-sweep" in result.stdout and "xample" in result.stdout, name


def test_version():
    from hpc_sweep import __version__

    result = hpc("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_no_sweep_here_is_a_user_error(tmp_path):
    result = hpc("status", str(tmp_path))
    assert result.returncode == 2 and "sweep.toml" in result.stderr and "init" in result.stderr
