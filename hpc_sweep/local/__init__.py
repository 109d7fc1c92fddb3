"""The bare-metal backend, for a machine without a batch scheduler: spool (the runner's queue in the sweep folder),
processes (process identity through /proc), placement (GPU and CPU slots from nvidia-smi), runner (the detached
run loop and its own command line, ``python -m hpc_sweep.local.runner``, which the local adapter drives).

Room 7: may import common, schedulers, state, programs, sweep and session.
"""
