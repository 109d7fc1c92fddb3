"""Which configs go, and in which chunks: candidates (generated or waiting, in the definition, not held by an open
submission), grouped by resource shape and walltime, cut to the array size the scheduler allows and to the room
under the user's queue cap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from hpc_sweep.schedulers.base import QueueLimits
from hpc_sweep.state.rows import ConfigRow
from hpc_sweep.state.states import SUBMITTABLE, SUBMITTING, ConfigState, sql_list
from hpc_sweep.submit import intents
from hpc_sweep.submit.packing import Packing, allocation_gpus, lanes, plan_tasks, session_packing, waves_for

if TYPE_CHECKING:
    from hpc_sweep.session import Session


@dataclass
class Chunk:
    """One submission: configs of one shape and walltime. Packed (:mod:`hpc_sweep.submit.packing`): ``tasks`` says
    how many configs each array task runs, in order; otherwise each config is a task of its own."""

    shape: str
    walltime_s: int
    configs: list[ConfigRow]
    tasks: Optional[list] = None
    packing: Optional[Packing] = None

    @property
    def ntasks(self) -> int:
        """Array tasks (allocations): what the queue cap counts."""
        return len(self.tasks) if self.tasks else len(self.configs)

    @property
    def device_type(self) -> str:
        return self.shape.split(":")[0]

    @property
    def gpus(self) -> int:
        """GPUs one task asks for (a node-packed task: the node's)."""
        gpus = self.configs[0].gpus
        return allocation_gpus(gpus, self.packing) if self.tasks else gpus

    @property
    def runs_per_gpu(self) -> int:
        return self.packing.runs_per_gpu if self.tasks else 1


def candidates(session: Session, only: Optional[Sequence[str]] = None) -> list[ConfigRow]:
    """Configs that may be submitted: generated or waiting, in the definition, not held by an open submission."""
    held = intents.held_configs(session)
    rows = [r for r in session.store.configs(states=SUBMITTABLE) if r.in_definition and r.name not in held]
    if only:
        wanted = set(only)
        session.store.require_names(wanted)
        rows = [r for r in rows if r.name in wanted]
    return rows


def plan_chunks(session: Session, rows: list[ConfigRow], limits: QueueLimits, room: Optional[int]) -> list[Chunk]:
    """Chunks of one shape and walltime, each at most an array's size; ``room``: tasks the queue cap still allows
    (a packed task holds several configs but counts once)."""
    walltime_default = session.spec.walltime_s or session.profile.walltime_s
    packing = session_packing(session)
    longest = longest_runs(session) if packing.node and not packing.waves else {}
    groups: dict = {}
    for row in rows:
        key = (row.shape, row.walltime_s or walltime_default)
        groups.setdefault(key, []).append(row)
    max_size = limits.max_array_size or 1001
    if limits.max_job_count:
        max_size = min(max_size, limits.max_job_count)
    chunks = []
    left = room
    for (shape, walltime), members in groups.items():
        lane_count = len(lanes(members[0].gpus, packing))  # 0: not packed
        start = 0
        while start < len(members) and (left is None or left > 0):
            tasks_allowed = min(max_size, left) if left is not None else max_size
            if lane_count:
                waves = waves_for(packing, walltime, longest.get(shape))
                sizes = plan_tasks(len(members) - start, lane_count, tasks_allowed, waves)
                size, used = sum(sizes), len(sizes)
                chunks.append(Chunk(shape, walltime, members[start:start + size], sizes, packing))
            else:
                size = used = min(tasks_allowed, len(members) - start)
                chunks.append(Chunk(shape, walltime, members[start:start + size]))
            start += size
            if left is not None:
                left -= used
    return chunks


def longest_runs(session: Session) -> dict:
    """Shape -> the longest run of it seen, in seconds: ended whole, timed out (at least that long) or still
    running (so far). A node task's default waves are planned from it (:func:`hpc_sweep.submit.packing.waves_for`)."""
    rows = session.store.conn.execute(
        "SELECT c.shape, MAX(COALESCE(a.ended_at, ?) - a.started_at) FROM attempts a JOIN configs c "
        "ON c.name = a.config WHERE a.started_at IS NOT NULL AND a.state IN (?, ?, ?) GROUP BY c.shape",
        (time.time(), ConfigState.COMPLETED, ConfigState.TIMEOUT, ConfigState.RUNNING)).fetchall()
    return {shape: seconds for shape, seconds in rows if seconds is not None and seconds > 0}


def submittable_names(session: Session, only: Optional[Sequence[str]]) -> list[str]:
    """The configs :func:`candidates` may return, in its order, without loading the rows; reconciling intents can
    only take some away. Configs of an open intent are left out (their job may be queued already)."""
    names = [row[0] for row in session.store.conn.execute(
        f"SELECT name FROM configs WHERE in_definition AND state IN ({sql_list(SUBMITTABLE)}) AND name NOT IN "
        f"(SELECT config FROM attempts WHERE state = '{SUBMITTING}') ORDER BY idx")]
    if only:
        wanted = set(only)
        names = [name for name in names if name in wanted]
    return names


def may_submit(session: Session, only: Optional[Sequence[str]]) -> bool:
    """Whether :func:`candidates` could find anything (open intents included: reconciling may abandon them)."""
    names = {row[0] for row in session.store.conn.execute(
        f"SELECT name FROM configs WHERE in_definition AND state IN ({sql_list(SUBMITTABLE)})")}
    return bool(names & set(only)) if only else bool(names)
