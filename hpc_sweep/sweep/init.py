"""`hpc-sweep init`: lay out a sweep folder, copy the base config, write a commented sweep.toml."""

from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path
from typing import Optional

from hpc_sweep.common.atomicio import write_atomic
from hpc_sweep.common.dotted import iter_leaves
from hpc_sweep.common.errors import UserError, one_line
from hpc_sweep.common.formats import format_of, load_structured
from hpc_sweep.common.layout import SweepPaths
from hpc_sweep.state.lock import sweep_lock
from hpc_sweep.state.store import open_store
from hpc_sweep.sweep.sweepfile import _NAME, PROGRAMS

COMMANDS = {
    "deeph": "deeph-train {config}",
    # {nprocs}: the GPU count, at least 1 (torchrun refuses --nproc-per-node=0, which a cpu config would get).
    "xequinet": "torchrun --nproc-per-node={nprocs} --master-port={port} --no-python xeq train --config {config}",
    "generic": "python train.py {config}",
}
SMOKE_OVERRIDES = {
    "deeph": '"process.train.max_epoch" = 2',
    "xequinet": '"trainer.max_epochs" = 2',
    "generic": "",
}
GRID_EXAMPLES = {
    "deeph": ['"process.train.optimizer.init_learning_rate" = [1e-2, 1e-3, 1e-4]',
              '"model.advanced.num_blocks" = [3, 4, 5]'],
    "xequinet": ['"trainer.max_lr" = [5e-4, 1e-3]', '"data.cutoff" = [4.0, 5.0]'],
    "generic": ['"lr" = [1e-2, 1e-3]'],
}


def guess_program(base: dict, path: Path) -> str:
    if format_of(path) == "yaml":
        return "xequinet" if "trainer" in base else "generic"
    if "system" in base and isinstance(base.get("process"), dict) and "train" in base["process"]:
        return "deeph"
    return "generic"


def new_prefix(name: str) -> str:
    """The sweep name plus a random suffix: job names this sweep can recognise as its own."""
    return f"{name[:40]}-{secrets.token_hex(3)}"


def init_sweep(root: Path, base_file: Path, program: Optional[str] = None, name: Optional[str] = None,
               site: Optional[str] = None) -> tuple[SweepPaths, str]:
    paths = SweepPaths.at(root)
    if paths.sweep_file.exists():
        raise UserError("a sweep already exists here", file=paths.sweep_file,
                        fix="edit it, or choose another folder")
    base_file = base_file.resolve()
    base = load_structured(base_file, "base config")  # validate before writing anything
    program = program or guess_program(base, base_file)
    if program not in PROGRAMS:
        raise UserError(f"unknown program '{program}'", fix=f"use one of {', '.join(PROGRAMS)}")
    if name is not None and not _NAME.fullmatch(name):
        raise UserError(f"'{name}' is not a usable sweep name", key="--name",
                        fix="use letters, digits, '-', '_' or '.', at most 64 characters")
    # The folder's name, made usable: it also starts every job name.
    name = name or (re.sub(r"[^A-Za-z0-9_.-]", "-", paths.root.name).lstrip("-_.")[:64] or "sweep")
    ext = "yaml" if format_of(base_file) == "yaml" else "toml"
    for folder in paths.all_dirs():
        folder.mkdir(parents=True, exist_ok=True)
    base_copy = paths.configs / f".base_config.{ext}"
    if base_copy.resolve() != base_file:
        shutil.copyfile(base_file, base_copy)
    text = sweep_toml_text(name, program, f"configs/.base_config.{ext}", base, site)
    prefix = new_prefix(name)
    with sweep_lock(paths) as lock:
        store = open_store(paths, create=True, lock=lock)
        try:
            with store.transaction():
                store.set_meta("prefix", prefix)
                store.set_meta("name", name)
        finally:
            store.close()
    write_atomic(paths.sweep_file, text)
    return paths, program


def sweep_toml_text(name: str, program: str, base_rel: str, base: dict, site: Optional[str]) -> str:
    # Comment lines: a key holding a newline must not put a live line into sweep.toml.
    leaves = [f"#   {one_line(str(key))} = {value!r}" for key, value in iter_leaves(base)]
    grid = "\n".join(f"# {line}" for line in GRID_EXAMPLES[program])
    site_line = f'site = {json.dumps(site)}' if site else '# site = "local"                   # a profile (hpc-sweep sites) or a path; default: detect'
    smoke = SMOKE_OVERRIDES[program]
    log = ""
    if program == "generic":
        log = ('\n[log]                                 # how to read a generic trainer\'s log\n'
               'path = "train.log"                    # relative to the config\'s outputs folder\n'
               'epoch = "epoch (\\\\d+)"\n'
               'train_loss = "train_loss ([0-9.eE+-]+|nan)"\n'
               'val_loss = "val_loss ([0-9.eE+-]+|nan)"\n'
               '# outputs_key = "output_dir"          # config key that receives each config\'s outputs folder\n')
    device = '# device = "gpu*1"                  # GPUs per run for programs whose config has no device key\n' \
        if program != "deeph" else ""
    return f"""# hpc-sweep sweep definition. Reference: the README's "sweep.toml reference".
[sweep]
name = "{name}"
program = "{program}"                   # deeph | xequinet | generic
base = "{base_rel}"
command = "{COMMANDS[program]}"
{site_line}
walltime = "24:00:00"
{device}# max_retries = 2                    # automatic resumes of runs that ended in resume_states
# resume_states = ["timeout", "preempted", "node_fail"]
# allow_new_keys = false             # true lets the grid add keys the base does not have

[grid]                                 # Cartesian product over dotted keys
{grid}

# [[zip]]                              # keys that vary together (equal-length lists)
# "a.b" = [1, 2]
# "a.c" = ["x", "y"]

# [[configs]]                          # explicit extra configs
# "a.b" = 7

# [random]                             # seeded random samples, each one extra config
# count = 8
# seed = 1
# [random.params]
# "a.lr" = {{ dist = "loguniform", low = 1e-4, high = 1e-2 }}   # uniform | loguniform | int | choice (values = [..])

[fixed]                                # applied to every config
# "a.b" = 1

[smoke]                                # hpc-sweep smoke: a short run of a few configs before the real sweep
count = 2
timeout = "15m"
[smoke.overrides]
{smoke}
{log}
# Sweepable keys of the base (key = current value):
""" + "\n".join(leaves) + "\n"
