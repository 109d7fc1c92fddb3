"""Scheduler adapters: pure argv builders and output parsers, one module per scheduler."""

from __future__ import annotations


def get_scheduler(name: str):
    if name == "slurm":
        from hpc_sweep.schedulers.slurm import SlurmScheduler

        return SlurmScheduler()
    if name == "pbspro":
        from hpc_sweep.schedulers.pbspro import PbsProScheduler

        return PbsProScheduler()
    if name == "torque":
        from hpc_sweep.schedulers.torque import TorqueScheduler

        return TorqueScheduler()
    if name == "local":
        from hpc_sweep.schedulers.local import LocalScheduler

        return LocalScheduler()
    raise KeyError(name)
