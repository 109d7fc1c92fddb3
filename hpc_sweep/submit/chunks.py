"""The files of one submission: each config's run config for this attempt (a copy where the cluster's device
view, a resume or a fresh restart changes it), its output folder, the index map and the job script. Worked out
in full before anything is written; a dry run writes nothing.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from hpc_sweep.common.atomicio import write_atomic
from hpc_sweep.common.jobmap import MapEntry, map_text
from hpc_sweep.programs import task_environment
from hpc_sweep.state.rows import ConfigRow
from hpc_sweep.submit.scripts import render_script, script_context

if TYPE_CHECKING:
    from hpc_sweep.session import Session
    from hpc_sweep.submit.planning import Chunk


@functools.lru_cache(maxsize=256)
def _allocation_view(device: str) -> str:
    """The allocation view of a device string, worked out once per distinct string (a sweep has a few)."""
    from hpc_sweep.sweep.device import allocation_view, parse_device

    return allocation_view(parse_device(device))


def _run_config(session: Session, row: ConfigRow, attempt: int, write: bool = True) -> tuple:
    """The config file this attempt runs, the device string it carries (allocation view on a cluster), for a
    resubmission how it starts ("resumed from its checkpoint" or a fresh restart and why), and the config itself
    when it is a copy of its own (None: the generated file as it is). ``write=False``: work it out, write nothing
    (a dry run)."""
    from hpc_sweep.common.dotted import set_dotted
    from hpc_sweep.common.formats import dump_structured, format_of, load_structured

    program = session.program
    path = Path(row.path)
    local = session.profile.scheduler == "local"
    device = row.device if local else _allocation_view(row.device)
    key = program.device_key()
    needs_device = key is not None and not local and device != row.device
    mode = row.next_mode
    if not needs_device and mode is None and attempt == 1:
        return str(path), device, None, None
    config = load_structured(path)
    if needs_device:
        set_dotted(config, key, device)
    start = None
    if mode == "resume":
        resumed = program.resume_config(config, session.paths.config_outputs(row.name)) if write else None
        if resumed is not None:
            config, start = resumed, "resumed from its checkpoint"
        else:
            start = "restarted fresh: no checkpoint found" if write else "resumed from its checkpoint if it has one"
    if mode in ("fresh", None) and attempt > 1:
        if hasattr(program, "fresh_config"):
            config = program.fresh_config(config)
        start = start or "restarted fresh"
    suffix = "yaml" if format_of(path) == "yaml" else "toml"
    target = session.paths.script / "run" / f"{row.name}.a{attempt}.{suffix}"
    if write:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, dump_structured(config, format_of(path), like=path), fsync=False)
    return str(target), device, start, config


def job_name(session: Session, chunk: Chunk, offset: int = 0, persist: bool = True) -> str:
    store = session.store
    seq = int(store.get_meta("submission_seq", "0")) + 1 + offset
    if persist:
        store.set_meta("submission_seq", str(seq))
    tag = chunk.shape.replace(":", "").replace("*", "")
    return f"{session.prefix}-{tag}-{seq}"


def _make_folder(path: str) -> None:
    """os.makedirs(path, exist_ok=True) in one system call where the parent exists (the usual case)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)


@dataclass
class ChunkFiles:
    entries: list
    script_file: Path
    map_file: Path
    script_text: str
    map_text: str
    starts: dict  # config -> how its attempt starts (resubmissions only)


def chunk_files(session: Session, chunk: Chunk, name: str, array: Optional[str], write: bool) -> ChunkFiles:
    """The run configs, the index map and the job script of one submission; ``write=False`` (a dry run) only
    works out their texts: nothing is written into the sweep."""
    paths = session.paths
    outputs_root = str(paths.outputs)
    entries, starts = [], {}
    for index, row in enumerate(chunk.configs):
        outputs = os.path.join(outputs_root, row.name)  # paths.config_outputs, without a Path per config
        if write:
            _make_folder(outputs)  # the trainer writes there from its start
        attempt = row.attempt + 1
        config_file, device, start, run_config = _run_config(session, row, attempt, write=write)
        if start:
            starts[row.name] = start
        env = task_environment(session.program, row.next_mode, run_config, outputs)
        entries.append(MapEntry(index, row.name, attempt, config_file, outputs, device, row.gpus, env))
    map_file = paths.script / f"{name}.map"
    script_file = paths.script / f"{name}.sh"
    context = script_context(session, name, array, len(entries), chunk.configs[0].gpus,
                             chunk.shape.split(":")[0], chunk.walltime_s, map_file)
    # Both texts first: a template or map error leaves no file behind.
    files = ChunkFiles(entries, script_file, map_file, render_script(session, context), map_text(entries), starts)
    if write:
        write_atomic(map_file, files.map_text)
        write_atomic(script_file, files.script_text, mode=0o755)
    return files


@dataclass
class Premade:
    """Output folders made while the scheduler answered, before it was known which configs go now."""

    root: Optional[str] = None                        # the outputs folder itself, when it was made here
    folders: dict = field(default_factory=dict)       # config name -> its output folder, made here

    def remove_unused(self, used: set) -> None:
        """Remove (if still empty) the folders of configs that were not submitted, so the sweep ends exactly as
        if each folder had been made at its config's submission."""
        for name, path in self.folders.items():
            if name not in used:
                _remove_empty(path)
        if self.root is not None:
            _remove_empty(self.root)


def _remove_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # not empty, or gone: nothing of ours to undo
