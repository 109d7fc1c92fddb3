"""A stand-in Slurm for the model-based tests: answers the argv the Slurm adapter builds, in the formats of the
real Slurm 22.05 captures, and runs each array task as the REAL rendered job script under bash.

- :mod:`standin.slurm` — the controller: jobs, tasks, sbatch/squeue/sacct/scancel/scontrol/sacctmgr, and the
  faults it can be told to show (accept then time out, refuse at the cap, time out without queuing, failing or
  hanging lookups, dropped or disabled accounting, a frozen controller, hidden exit markers, node failure).
- :mod:`standin.tasks` — one task's processes: bash running the job script, the trainer it starts, the gate the
  test opens to let the trainer finish.
- :mod:`standin.harness` — a sweep driven through ``hpc_sweep.cli.main`` in this process (the stand-in answers
  through the test hook ``hpc_sweep.common.shell.stand_in``), with a simulated clock, fault points that raise instead
  of killing, and an independent check that every write to the state database happens under the writers' lock.

Unknown argv fails loudly: the stand-in raises :class:`UnknownCommand` (a BaseException, so the tool's own
error handling cannot swallow it) and records it in ``errors``.
"""
