"""The map's environment column and the {nprocs} placeholder, through a rendered job script run by bash."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_sweep.common.jobmap import MapEntry, map_text, parse_map

COMMAND = ("sh -c 'echo nprocs=$1 gpus=$2 torch=${{TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD:-unset}} odd=${{ODD:-unset}}' "
           "x {nprocs} {gpus} {config}")


def test_old_maps_without_the_environment_column_still_read():
    old = "0\tconfig001\t1\t/s/configs/config001.yaml\t/s/outputs/config001\tcpu\t0\n"
    assert parse_map(old) == [MapEntry(0, "config001", 1, "/s/configs/config001.yaml", "/s/outputs/config001",
                                       "cpu", 0)]
    entry = MapEntry(3, "config004", 2, "/s/run.yaml", "/s/o", "gpu*1", 1, ("A=1", "B=x/y"))
    assert map_text([entry]).endswith("\tgpu*1\t1\tA=1 B=x/y\n")
    assert parse_map(map_text([entry])) == [entry]
    assert map_text([MapEntry(0, "c", 1, "f", "o", "cpu", 0)]).count("\t") == 6  # no column when there is none


@pytest.mark.parametrize("word", ["A=b c", "1A=x", "A", "A=\tb", "=x"])
def test_an_environment_word_must_be_name_equals_value(word):
    with pytest.raises(ValueError):
        MapEntry(0, "c", 1, "f", "o", "cpu", 0, (word,)).line()


def render(tmp_path: Path, device: str) -> Path:
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text('lr = 0.1\n')
    (root / "sweep.toml").write_text(f"""
[sweep]
name = "env-test"
program = "generic"
base = "configs/.base_config.toml"
command = {json.dumps(COMMAND)}
site = "local"
device = "{device}"

[grid]
lr = [0.1, 0.2]

[log]
path = "train.log"
epoch = "epoch ([0-9]+)"
""")
    for args in (["generate", str(root)], ["render", str(root)]):
        done = subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return next((root / "script").glob("*.sh"))


def run_task(script: Path, index: int) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "ODD")}
    env.update(HPC_SWEEP_INDEX=str(index), HPC_SWEEP_TASK_ID=f"t{index}")
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=script.parent)
    assert done.returncode == 0, done.stderr
    return (script.parents[1] / "logs" / f"config00{index + 1}.1.log").read_text().strip()


@pytest.mark.parametrize("device,nprocs,gpus", [("cpu", 1, 0), ("gpu*2", 2, 2)])
def test_nprocs_is_the_gpu_count_and_at_least_one(tmp_path, device, nprocs, gpus):
    script = render(tmp_path, device)
    assert run_task(script, 0) == f"nprocs={nprocs} gpus={gpus} torch=unset odd=unset"


def test_a_task_exports_its_environment_words_as_text(tmp_path):
    script = render(tmp_path, "cpu")
    map_file = script.with_suffix(".map")
    pwned = tmp_path / "pwned"
    entries = parse_map(map_file.read_text())
    entries[1] = dataclasses.replace(entries[1], env=("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1",
                                                      f"ODD=$(touch${{IFS}}{pwned})*"))
    map_file.write_text(map_text(entries))
    assert run_task(script, 0) == "nprocs=1 gpus=0 torch=unset odd=unset"  # only the task whose line has them
    assert run_task(script, 1) == f"nprocs=1 gpus=0 torch=1 odd=$(touch${{IFS}}{pwned})*"
    assert not pwned.exists()
