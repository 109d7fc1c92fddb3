"""Trainer plugins: ``get_program(name)`` returns the :class:`~hpc_sweep.programs.base.Program` for a sweep.

Modules are imported on demand, so ``import hpc_sweep.programs`` costs nothing at CLI start-up. A program says how
its config is shaped and checked, where it logs and how the log is parsed, how a run resumes, and what counts as
evidence of training.

Room 4: may import common, schedulers and state.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from hpc_sweep.programs.base import Program

PROGRAMS = ("deeph", "xequinet", "generic")

_CLASSES = {"deeph": ("deeph", "DeepH"), "xequinet": ("xequinet", "XequiNet"), "generic": ("generic", "Generic")}


def get_program(name: str, log: Optional[dict] = None) -> "Program":
    """The program called ``name``. ``log`` is sweep.toml's ``[log]`` table, which only ``generic`` reads
    (path, epoch, train_loss, val_loss, outputs_key, max_epoch_key). Raises KeyError for an unknown name."""
    if name not in _CLASSES:
        raise KeyError(f"unknown program '{name}' (known: {', '.join(PROGRAMS)})")
    module_name, class_name = _CLASSES[name]
    cls = getattr(import_module(f"hpc_sweep.programs.{module_name}"), class_name)
    return cls.from_log_table(log) if name == "generic" else cls()


def task_environment(program: "Program", mode: Optional[str], run_config: Optional[dict], outputs: str) -> tuple:
    """The map's environment words for one task: what ``program`` asks for the config the task runs. Only a
    resumed attempt (``mode`` "resume", running its own copy of the config, ``run_config``) asks; every other task
    of a large submission costs nothing."""
    if mode != "resume" or run_config is None:
        return ()
    from hpc_sweep.common.jobmap import env_words

    return env_words(program.run_environment(run_config, Path(outputs)))