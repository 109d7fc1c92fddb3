"""Rendered job scripts: a snapshot per shipped site profile, valid bash, and hostile values kept inert.

A render asks the profile's scheduler for its limits: the stand-ins of tests/fakes answer (for Slurm with real
Slurm 22.05 output from tests/fixtures), never the host's own commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_sweep.common.formats import tomllib
from hpc_sweep.sweep.sites import profile_files

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))

import fakepbs  # noqa: E402
import slurm_limits  # noqa: E402

SNAPSHOTS = Path(__file__).parent / "snapshots"
BASE = 'tag = "plain"\nlr = 0.1\n[model]\nwidth = 4\n'


def hpc(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def scheduler_env(tmp_path: Path, site: str) -> dict:
    """The environment for a render of ``site``: stand-ins for its scheduler's commands first on PATH."""
    scheduler = tomllib.loads(profile_files()[site].read_text())["scheduler"]
    if scheduler in ("pbspro", "torque"):
        return fakepbs.environ(tmp_path, scheduler)
    return slurm_limits.environ(tmp_path) if scheduler == "slurm" else dict(os.environ)


def render(tmp_path: Path, root: Path, site: str) -> subprocess.CompletedProcess:
    return hpc("render", str(root), env=scheduler_env(tmp_path, site))


def make_sweep(tmp_path: Path, site: str, tags: list, device: str = "gpu*2") -> Path:
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text(BASE)
    tag_list = ", ".join(json.dumps(t) for t in tags)
    (root / "sweep.toml").write_text(f"""
[sweep]
name = "render-test"
program = "generic"
base = "configs/.base_config.toml"
command = "cat {{config}}"
site = "{site}"
walltime = "02:30:00"
device = "{device}"

[grid]
tag = [{tag_list}]

[log]
path = "train.log"
epoch = "epoch (\\\\d+)"
""")
    result = hpc("generate", str(root))
    assert result.returncode == 0, result.stderr
    return root


def normalised(script: str, root: Path) -> str:
    text = script.replace(str(root), "/SWEEP")
    return re.sub(r"render-test-[0-9a-f]{6}", "render-test-PREFIX", text)


@pytest.mark.parametrize("profile", sorted(profile_files()))
def test_rendered_script_matches_snapshot_and_parses(tmp_path, profile):
    root = make_sweep(tmp_path, profile, ["a", "b", "c"])
    result = render(tmp_path, root, profile)
    assert result.returncode == 0, result.stderr
    scripts = sorted((root / "script").glob("*.sh"))
    assert len(scripts) == 1
    text = scripts[0].read_text()
    assert subprocess.run(["bash", "-n", str(scripts[0])]).returncode == 0
    if profile_files()[profile].read_text().find('scheduler = "slurm"') >= 0:
        assert "#PBS" not in text  # sbatch honours #PBS lines: a Slurm script must carry none
    snapshot = SNAPSHOTS / f"{profile}.sh"
    got = normalised(text, root)
    if os.environ.get("UPDATE_SNAPSHOTS") or (not snapshot.exists() and not os.environ.get("CI")):
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(got)
    assert got == snapshot.read_text(), f"{profile}: rendered script changed (UPDATE_SNAPSHOTS=1 to accept)"


def test_slurm_directives_follow_the_profile(tmp_path):
    root = make_sweep(tmp_path, "example-a100-slurm", ["a", "b"], device="gpu*3")
    assert render(tmp_path, root, "example-a100-slurm").returncode == 0
    text = next((root / "script").glob("*.sh")).read_text()
    assert "#SBATCH --gpus-per-node=a100:3" in text
    assert "#SBATCH --partition=gpu-a100" in text and "#SBATCH --account=chem-ml" in text
    assert re.search(r"#SBATCH --array=0[-,]1%16\n", text) and "#SBATCH --time=02:30:00" in text
    assert "#SBATCH --cpus-per-task=24" in text and "#SBATCH --mem=184320M" in text
    assert "#SBATCH --constraint=a100_80g" in text and "module load cuda/12.4" in text
    directives = [i for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH")]
    first_command = next(i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#"))
    assert max(directives) < first_command  # sbatch stops reading directives at the first command


def test_dcu_resource_name(tmp_path):
    root = make_sweep(tmp_path, "example-dcu-slurm", ["a", "b"], device="dcu*4")
    assert render(tmp_path, root, "example-dcu-slurm").returncode == 0
    assert "#SBATCH --gres=dcu:4" in next((root / "script").glob("*.sh")).read_text()


def test_pbs_single_config_is_a_plain_job(tmp_path):
    root = make_sweep(tmp_path, "pbspro", ["only"])
    assert render(tmp_path, root, "pbspro").returncode == 0
    text = next((root / "script").glob("*.sh")).read_text()
    assert "#PBS -J" not in text and "#PBS -l select=1:ncpus=8:ngpus=2:mem=32768mb" in text


HOSTILE = ["$(touch PWNED)", "`touch PWNED`", "a'b\"c", "line1\nline2; touch PWNED", "; rm -rf / #"]


def test_hostile_values_stay_inert_text(tmp_path):
    tags = [t.replace("PWNED", str(tmp_path / "pwned")) for t in HOSTILE]
    root = make_sweep(tmp_path, "local", tags)
    result = render(tmp_path, root, "local")
    assert result.returncode == 0, result.stderr
    script = next((root / "script").glob("*.sh"))
    text = script.read_text()
    for tag in tags:
        assert tag not in text
    for index, tag in enumerate(tags):
        env = dict(os.environ, HPC_SWEEP_INDEX=str(index), HPC_SWEEP_TASK_ID=f"t{index}")
        run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        name = f"config{index + 1:03d}"
        printed = (root / "logs" / f"{name}.1.log").read_text()
        assert tomllib.loads(printed)["tag"] == tag  # the config reached the command verbatim
        marker = json.loads((root / ".hpc_sweep" / "markers" / f"{name}.1.exit").read_text())
        assert marker["exit_code"] == 0
    assert not (tmp_path / "pwned").exists()
