"""A generated sweep of the generic program over a grid of tags, its command a stand-in trainer: the job-script
tests' (tests/test_jobscript.py, tests/test_packed_task.py), which render and run its job script without a
scheduler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple


def generic_sweep(root: Path, name: str, command: str, count: int, base: str, site: str = "local",
                  walltime: Optional[str] = None, files: Optional[Mapping[str, str]] = None) -> Path:
    """``root`` with a sweep.toml of ``count`` CPU configs (tag = t0, t1, ...) over ``base``, the ``files`` beside it
    (name -> text), generated (it must succeed)."""
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text(base)
    for file_name, text in (files or {}).items():
        (root / file_name).write_text(text)
    tags = ", ".join(f'"t{i}"' for i in range(count))
    walltime_line = f'walltime = "{walltime}"\n' if walltime else ""
    (root / "sweep.toml").write_text(f"""
[sweep]
name = "{name}"
program = "generic"
base = "configs/.base_config.toml"
command = {json.dumps(command)}
site = {json.dumps(site)}
{walltime_line}device = "cpu"

[grid]
tag = [{tags}]

[log]
path = "train.log"
epoch = "epoch (\\\\d+)"
""")
    done = subprocess.run([sys.executable, "-m", "hpc_sweep.cli", "generate", str(root)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return root


def render_job(root: Path, job: str, entry_of: Callable, context_of: Callable) -> Tuple[Path, list]:
    """The job script and map of one submission ``job`` of the sweep in ``root``, as submit writes them, without
    submitting: ``entry_of(position, config row, outputs folder)`` makes each config's map entry (its output folder
    is made) and ``context_of(session, map file, entries)`` the template's context. Returns (script, entries)."""
    from hpc_sweep.common.jobmap import map_text
    from hpc_sweep.session import Session
    from hpc_sweep.submit.scripts import render_script

    session = Session.open(root)
    try:
        paths = session.paths
        for folder in (paths.script, paths.logs, paths.markers):
            folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for position, row in enumerate(session.store.configs()):
            outputs = paths.config_outputs(row.name)
            outputs.mkdir(parents=True, exist_ok=True)
            entries.append(entry_of(position, row, str(outputs)))
        map_file = paths.script / f"{job}.map"
        context = context_of(session, map_file, entries)
        map_file.write_text(map_text(entries))
        script = paths.script / f"{job}.sh"
        script.write_text(render_script(session, context))
        return script, entries
    finally:
        session.close()
