"""Reaching one run inside a packed task, through files among the markers (issue #16).

A packed task runs several configs in one allocation, so the scheduler's cancel (scancel, qdel) of that task
would end all of them. One run is stopped instead by a request file the task's launcher watches
(job_templates/packed.sh.j2), the same way on Slurm, PBS, Torque and the local backend:

- ``<config>.<attempt>.stop`` — written here (by ``cancel`` or the early-stopping rule): the launcher sends TERM
  to that run alone (its command's process group; the run records its own exit marker, 128+15 unless the trainer
  exits otherwise) and KILL a grace later. A config not started yet is never started. The request is seen
  within a tick, or after the shared file system's attribute cache (NFS: up to about a minute).
- ``<config>.<attempt>.skipped`` — written by the launcher: the config was not started (stop requested first,
  not enough of the walltime left, or the task was ended first) and holds no claim; the poll queues it again
  unless it was stopped for good.

A task holding only that config is still cancelled by its scheduler id: nothing else runs in it. Its ``.stop``
is written all the same, before the cancel is sent (:func:`hpc_sweep.submit.cancel.end_runs` writes one for every
run it ends): there it is only a record of the state and reason the run was ended with, which no job script
reads (the one-config script never looks for it; a packed launcher acts only on the ``.stop`` of a
``<config>.<attempt>`` of its own map lines) and which ``hpc-sweep repair`` reads to restore a run ended by this
tool as ``stopped`` or ``cancelled`` rather than as killed by a signal.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from hpc_sweep.common.atomicio import write_atomic

STOP, SKIPPED = "stop", "skipped"


def control_path(markers: Path, config: str, attempt: int, kind: str) -> Path:
    return Path(markers) / f"{config}.{attempt}.{kind}"


def request_stop(markers: Path, config: str, attempt: int, why: str, now: Optional[float] = None,
                 state: Optional[str] = None) -> bool:
    """Ask the task running (config, attempt) to stop that run only. A repeated request keeps the first.
    ``state``: what the run is recorded as (cancelled, stopped), for a poll that finds it ended before the
    controller recorded it, and for ``hpc-sweep repair``. Returns whether this call wrote it."""
    path = control_path(markers, config, attempt, STOP)
    if path.exists():
        return False
    request = {"why": why, "time": now if now is not None else time.time()}
    if state is not None:
        request["state"] = str(state)
    write_atomic(path, json.dumps(request) + "\n")
    return True


def read_control(markers: Path, config: str, attempt: int, kind: str) -> Optional[dict]:
    """A stop request or a skipped note, or None when there is none (or it is being written)."""
    try:
        data = json.loads(control_path(markers, config, attempt, kind).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
