"""Which batch scheduler a host has, from the output of two version commands (pure: they are run through
:mod:`hpc_sweep.common.shell` by :func:`hpc_sweep.sweep.sites.detect_scheduler`).

Slurm is checked first, because Slurm sites may install Torque-style ``qstat``/``qsub`` wrappers. Then
``qstat --version``: PBS Pro/OpenPBS print ``pbs_version = 19.2.8...`` on stdout; Torque prints ``Version: 6.1.3``
(with ``Commit: ...`` from 6.x on) on stderr in its source, on stdout in some releases, so both streams are read.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from hpc_sweep.schedulers.base import CommandResult

DETECT_ARGVS = {"slurm": ["sbatch", "--version"], "pbs": ["qstat", "--version"]}

# "slurm 22.05.8" upstream, "slurm-wlm 22.05.8" from Debian's packages
_SLURM = re.compile(r"^\s*slurm(?:-wlm)?\s+(\d+)\.(\d+)(?:\.(\d+))?", re.I | re.M)
_PBSPRO = re.compile(r"^\s*pbs_version\s*=\s*\S+", re.M)
_TORQUE = re.compile(r"^\s*version:\s*\d+(?:\.\d+)+", re.I | re.M)


def detect_from_outputs(sbatch_version: Optional[CommandResult],
                        qstat_version: Optional[CommandResult]) -> Optional[str]:
    """"slurm" | "pbspro" | "torque" | None (a command not run, not found or not recognised counts as absent)."""
    if sbatch_version is not None and slurm_version(sbatch_version) is not None:
        return "slurm"
    if qstat_version is None:
        return None
    text = _both(qstat_version)
    if _SLURM.search(text):
        return "slurm"  # a Slurm qstat wrapper answered although sbatch did not
    if _PBSPRO.search(text):
        return "pbspro"
    if _TORQUE.search(text):
        return "torque"
    return None


def slurm_version(result: CommandResult) -> Optional[Tuple[int, int, int]]:
    """(22, 5, 8) from ``sbatch --version``; None when the output is not Slurm's."""
    match = _SLURM.search(_both(result))
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def _both(result: CommandResult) -> str:
    return f"{result.stdout}\n{result.stderr}"
