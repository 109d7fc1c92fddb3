"""Fault injection for the test suite: die exactly where a crash, an OOM-killed login-node process or a
`kill -9` from a user would stop hpc-sweep.

Named points sit where dying matters: around every scheduler command (``before_call``/``after_call`` in
:mod:`hpc_sweep.common.shell`, plus the submit protocol's own ``before_submit``/``after_submit``), before every
commit of the state database (``before_commit``) and after every atomic file write (``after_write``), besides a few
special ones (``during_state_write``, ``poll_mid_write``, ``log_worker``).

``HPC_SWEEP_FAULT`` chooses where to die:

- ``NAME``: at the first pass through the point NAME;
- ``NAME@N``: at the N-th pass through NAME (1-based);
- ``*@N``: at the N-th pass through any point (a model-based test draws N to kill "between any two steps").

By default dying is ``SIGKILL`` to this process. A test that drives hpc-sweep in-process sets :data:`on_fault`
to a callable (which usually raises a ``BaseException``) instead.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Callable, Optional

ENV = "HPC_SWEEP_FAULT"

on_fault: Optional[Callable[[str], None]] = None  # in-process tests: called instead of SIGKILL
_passes: Counter = Counter()


def point(name: str) -> None:
    """A place where the test suite may kill this process (a no-op unless HPC_SWEEP_FAULT is set)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition("@")
    if target not in (name, "*"):
        return
    _passes[target] += 1
    if _passes[target] != (int(nth) if nth else 1):
        return
    if on_fault is not None:
        on_fault(name)
        return
    os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget the passes counted so far (in-process tests: one count per simulated process)."""
    _passes.clear()
