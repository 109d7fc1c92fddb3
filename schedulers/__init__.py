"""Scheduler adapters: pure argv builders and output parsers, one module per scheduler (slurm, pbspro, torque,
local), the contract they share (base), what PBS Pro and Torque share (pbs_family), array index lists (arrays) and
scheduler detection from version output (detect). Nothing here runs a process: hpc_sweep.common.shell does.

Installed as ``hpc_sweep.schedulers`` (pyproject maps this folder). Room 2: may import only hpc_sweep.common (and
submitit's job-id reader).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def get_scheduler(name: str, sweep_dir: Optional[Path] = None, version: Optional[tuple] = None,
                  me_refused: bool = False):
    """The adapter for ``name``. ``sweep_dir`` is used by the local adapter only (its runner keeps its spool
    in the sweep folder); the cluster adapters need nothing but argv. ``version`` and ``me_refused`` (Slurm only):
    what earlier queries found out about the scheduler (``squeue --me`` needs Slurm 20.11)."""
    if name == "slurm":
        from hpc_sweep.schedulers.slurm import SlurmScheduler

        return SlurmScheduler(version, me_refused)
    if name == "pbspro":
        from hpc_sweep.schedulers.pbspro import PbsProScheduler

        return PbsProScheduler()
    if name == "torque":
        from hpc_sweep.schedulers.torque import TorqueScheduler

        return TorqueScheduler()
    if name == "local":
        from hpc_sweep.schedulers.local import LocalScheduler

        return LocalScheduler(sweep_dir=sweep_dir)
    raise KeyError(name)
