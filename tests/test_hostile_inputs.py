"""Hostile and malformed input through the real CLI (a subprocess per case, nothing mocked).

The corpus lives in tests/data/hostile/ (manifest.json says what each file must produce):

- sweep/*.toml  -- used as a sweep's sweep.toml, then `hpc-sweep generate`;
- base/*        -- used as configs/.base_config.<ext> of a good sweep, then `hpc-sweep generate`;
- site/*.toml   -- used as the site.toml of a generated sweep, then `hpc-sweep submit --dry-run`;
- devices.json  -- device strings, as sweep.device and as a grid value of a DeepH system.device;
- values.json   -- legal but hostile strings: they must generate fine and stay inert.

A refusal is: exit status 2, exactly one line on stderr (``str.splitlines``, so \\r, U+2028... count as breaks)
naming the file (and the key where the input has one), no traceback, and the sweep folder's file tree -- names,
sizes and modification times -- exactly as before.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpc_sweep.common.formats import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))

import slurm_limits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOSTILE = Path(__file__).resolve().parent / "data" / "hostile"
MANIFEST = json.loads((HOSTILE / "manifest.json").read_text())["expected_key"]
DEVICES = json.loads((HOSTILE / "devices.json").read_text())["devices"]
VALUES = json.loads((HOSTILE / "values.json").read_text())["values"]
DEMO_BASE = REPO / "examples" / "demo" / "base.toml"
PWNED = "PWNED"

BASE_TOML = 'lr = 0.1\ntag = "plain"\n[model]\nwidth = 4\n'
BASE_YAML = 'lr: 0.1\ntag: plain\nmodel:\n  width: 4\n'


def sweep_toml(ext: str = "toml", site: str = "local", grid: str = 'lr = [0.1, 0.2]', program: str = "generic",
               extra: str = "", sweep_extra: str = "") -> str:
    log = '[log]\npath = "train.log"\nepoch = "epoch (\\\\d+)"\n' if program == "generic" else ""
    return (f'[sweep]\nname = "hostile"\nprogram = "{program}"\nbase = "configs/.base_config.{ext}"\n'
            f'command = "cat {{config}}"\nsite = "{site}"\n{sweep_extra}\n[grid]\n{grid}\n\n{log}{extra}')


def hpc(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith("HPC_SWEEP_")}
    return subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def tree(root: Path) -> dict:
    """Every file and folder under root: (size, mtime in ns) -- what 'nothing written' compares."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            stat = path.lstat()
            found[str(path.relative_to(root))] = (stat.st_size if name in files else None, stat.st_mtime_ns)
    return found


def assert_refused(result: subprocess.CompletedProcess, file: Path, key, root: Path, before: dict) -> str:
    err = result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout, err)
    assert len(err.splitlines()) == 1 and err.endswith("\n"), repr(err)
    assert err.startswith("hpc-sweep: error: "), err
    assert "Traceback" not in err + result.stdout
    assert str(file) in err, (str(file), err)
    if key is not None:
        assert f"key '{key}" in err, (key, err)
    assert tree(root) == before, "the refused command wrote into the sweep folder"
    return err


def corpus(kind: str) -> list:
    return sorted(name for name in MANIFEST if name.startswith(kind + "/"))


def test_manifest_covers_every_corpus_file():
    files = {f"{d.name}/{f.name}" for d in HOSTILE.iterdir() if d.is_dir() for f in d.iterdir()}
    assert files == set(MANIFEST)


@pytest.mark.parametrize("name", corpus("sweep"))
def test_hostile_sweep_file_is_refused(tmp_path, name):
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text(BASE_TOML)
    shutil.copy(HOSTILE / name, root / "sweep.toml")
    before = tree(root)
    result = hpc("generate", str(root))
    assert_refused(result, root / "sweep.toml", MANIFEST[name], root, before)
    assert not (tmp_path / PWNED).exists() and not Path("/tmp/hpc-sweep-pwned").exists()


@pytest.mark.parametrize("name", corpus("base"))
def test_hostile_base_is_refused_before_any_state_exists(tmp_path, name):
    ext = Path(name).suffix[1:]
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "sweep.toml").write_text(sweep_toml(ext, grid=""))
    base = root / "configs" / f".base_config.{ext}"
    shutil.copy(HOSTILE / name, base)
    before = tree(root)
    result = hpc("generate", str(root))
    assert_refused(result, base, MANIFEST[name], root, before)
    assert not (root / ".hpc_sweep").exists()  # no state database, no lock: a first generate checks first


@pytest.mark.parametrize("name", ["base/alias-bomb.yaml", "base/deep-nesting.toml", "base/int-beyond-64-bit.toml"])
def test_hostile_base_after_generate_leaves_state_and_configs_untouched(tmp_path, name):
    ext = Path(name).suffix[1:]
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "sweep.toml").write_text(sweep_toml(ext))
    base = root / "configs" / f".base_config.{ext}"
    base.write_text(BASE_YAML if ext == "yaml" else BASE_TOML)
    assert hpc("generate", str(root)).returncode == 0
    shutil.copy(HOSTILE / name, base)
    before = tree(root)
    assert_refused(hpc("generate", str(root)), base, MANIFEST[name], root, before)


@pytest.fixture(scope="module")
def generated_for_sites(tmp_path_factory):
    """One generated sweep whose site.toml each site case replaces (copied per case)."""
    root = tmp_path_factory.mktemp("sites") / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text(BASE_TOML)
    (root / "sweep.toml").write_text(sweep_toml(site="site.toml"))
    (root / "site.toml").write_text('scheduler = "slurm"\n')
    result = hpc("generate", str(root))
    assert result.returncode == 0, result.stderr
    return root


@pytest.mark.parametrize("name", corpus("site"))
def test_hostile_site_profile_is_refused(tmp_path, generated_for_sites, name):
    root = tmp_path / "sweep"
    shutil.copytree(generated_for_sites, root)
    shutil.copy(HOSTILE / name, root / "site.toml")
    before = tree(root)
    result = hpc("submit", str(root), "--dry-run")
    assert_refused(result, root / "site.toml", MANIFEST[name], root, before)
    assert not Path("/tmp/hpc-sweep-pwned").exists()


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


@pytest.mark.parametrize("device", DEVICES, ids=[repr(d)[:40] for d in DEVICES])
def test_bad_device_string_is_refused(tmp_path, device):
    # As sweep.device (a generic program: the device of every run) ...
    root = tmp_path / "generic"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text(BASE_TOML)
    (root / "sweep.toml").write_text(sweep_toml(sweep_extra=f"device = {_toml_string(device)}"))
    before = tree(root)
    assert_refused(hpc("generate", str(root)), root / "sweep.toml", "sweep.device", root, before)
    # ... and as a swept DeepH system.device, next to a good one.
    root = tmp_path / "deeph"
    (root / "configs").mkdir(parents=True)
    shutil.copy(DEMO_BASE, root / "configs" / ".base_config.toml")
    (root / "sweep.toml").write_text(sweep_toml(program="deeph", grid=f'"system.device" = ["gpu*1", '
                                                                        f'{_toml_string(device)}]'))
    before = tree(root)
    assert_refused(hpc("generate", str(root)), root / "sweep.toml", "system.device", root, before)


# -- legal but hostile: generated fine, inert ------------------------------------------------------------------
def _configs(root: Path) -> list:
    return sorted(p for p in (root / "configs").glob("config*") if p.is_file())


def test_hostile_values_in_a_yaml_base_sweep_round_trip(tmp_path):
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.yaml").write_text(BASE_YAML)
    values = ", ".join(_toml_string(v) for v in VALUES)
    (root / "sweep.toml").write_text(sweep_toml("yaml", grid=f"tag = [{values}]", site="slurm"))
    result = hpc("generate", str(root))
    assert result.returncode == 0, result.stderr
    files = _configs(root)
    assert [yaml.safe_load(p.read_text(encoding="utf-8"))["tag"] for p in files] == VALUES
    # The values reach only the config files: the rendered Slurm script never carries one of them.
    rendered = hpc("render", str(root), env=slurm_limits.environ(tmp_path))  # its limit queries: stand-ins
    assert rendered.returncode == 0, rendered.stderr
    (script,) = (root / "script").glob("*.sh")
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for value in VALUES:
        if len(value) > 3:
            assert value not in text, value
    assert not (tmp_path / PWNED).exists()


def test_hostile_values_in_explicit_fixed_and_random_tables_round_trip(tmp_path):
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text('note = ""\nseed = "s"\n' + BASE_TOML)
    explicit = "".join(f"\n[[configs]]\ntag = {_toml_string(v)}\n" for v in VALUES[:6])
    choice = ", ".join(_toml_string(v) for v in VALUES[6:12])
    extra = (f'[fixed]\nnote = {_toml_string(VALUES[-3])}\n{explicit}\n[random]\ncount = 12\nseed = 3\n'
             f'[random.params]\nseed = {{ dist = "choice", values = [{choice}] }}\n')
    (root / "sweep.toml").write_text(sweep_toml(grid="", extra=extra))
    result = hpc("generate", str(root))
    assert result.returncode == 0, result.stderr
    loaded = [tomllib.loads(p.read_text(encoding="utf-8")) for p in _configs(root)]
    assert all(c["note"] == VALUES[-3] for c in loaded)
    assert [c["tag"] for c in loaded[:6]] == VALUES[:6]
    assert {c["seed"] for c in loaded[6:]} <= set(VALUES[6:12]) and len(loaded) > 6
    status = json.loads(hpc("status", str(root), "--format", "json").stdout)
    assert [c["params"].get("tag") for c in status["configs"][:6]] == VALUES[:6]


HOSTILE_FOLDER = "sw $(touch PWNED) ;'\"`touch PWNED`"


def test_hostile_sweep_folder_path_runs_inert_locally_and_is_refused_for_slurm(tmp_path):
    """The sweep folder's own path is a value that does reach the job script: quoted there, inert when run; a
    scheduler whose directives cannot carry it refuses it with one line, before writing anything."""
    root = tmp_path / HOSTILE_FOLDER
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text(BASE_TOML)
    (root / "sweep.toml").write_text(sweep_toml())
    assert hpc("generate", str(root)).returncode == 0
    result = hpc("render", str(root), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    (script,) = (root / "script").glob("*.sh")
    for index in range(2):
        env = dict(os.environ, HPC_SWEEP_INDEX=str(index), HPC_SWEEP_TASK_ID=f"t{index}")
        run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=str(tmp_path))
        assert run.returncode == 0, run.stderr
        name = f"config{index + 1:03d}"
        assert tomllib.loads((root / "logs" / f"{name}.1.log").read_text())["lr"] == [0.1, 0.2][index]
        assert json.loads((root / ".hpc_sweep" / "markers" / f"{name}.1.exit").read_text())["exit_code"] == 0
    assert not list(tmp_path.rglob(PWNED))
    # The same folder on Slurm: refused, one line naming the folder, nothing written.
    (root / "sweep.toml").write_text(sweep_toml(site="slurm"))
    before = tree(root)
    refused = hpc("render", str(root), cwd=str(tmp_path))
    err = assert_refused(refused, root, None, root, before)
    assert "directives" in err


def test_init_refuses_a_hostile_name_and_quotes_what_it_writes(tmp_path):
    base = tmp_path / "train.yaml"
    base.write_text('lr: 0.1\n"evil\\n[grid]\\nlr": 1\n')
    target = tmp_path / "named"
    result = hpc("init", str(target), "--base", str(base), "--name", "$(touch PWNED)")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "--name" in result.stderr and not target.exists()
    # A folder name that is no usable job name is made one; a hostile --site and a base key holding newlines
    # are written so that sweep.toml still says exactly what was given.
    folder = tmp_path / "my sweep $(touch PWNED)"
    site = 'x"\n[evil]\nname = "'
    result = hpc("init", str(folder), "--base", str(base), "--site", site)
    assert result.returncode == 0, result.stderr
    data = tomllib.loads((folder / "sweep.toml").read_text())
    assert set(data) <= {"sweep", "grid", "fixed", "smoke", "log"} and not any("evil" in k for k in data)
    assert data["sweep"]["site"] == site and data["grid"] == {}
    name = data["sweep"]["name"]
    assert name and all(ch.isalnum() or ch in "-_." for ch in name)
    assert not list(tmp_path.rglob(PWNED))
