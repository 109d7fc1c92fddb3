"""Which configs go, and in which chunks: candidates (generated or waiting, in the definition, not held by an open
submission), grouped by resource shape and walltime, cut to the array size the scheduler allows and to the room
under the user's queue cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from hpc_sweep.schedulers.base import QueueLimits
from hpc_sweep.state.rows import ConfigRow
from hpc_sweep.state.states import SUBMITTABLE, SUBMITTING, sql_list
from hpc_sweep.submit import intents

if TYPE_CHECKING:
    from hpc_sweep.session import Session




@dataclass
class Chunk:
    shape: str
    walltime_s: int
    configs: list[ConfigRow]


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
    walltime_default = session.spec.walltime_s or session.profile.walltime_s
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
        start = 0
        while start < len(members) and (left is None or left > 0):
            size = min(max_size, len(members) - start, left if left is not None else len(members))
            chunks.append(Chunk(shape, walltime, members[start:start + size]))
            start += size
            if left is not None:
                left -= size
    return chunks


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
