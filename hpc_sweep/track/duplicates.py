"""Duplicate tasks stopped by the job script's claim guard: a second task queued for a (config, attempt) another
task had claimed leaves ``<config>.<attempt>.duplicate.<task id>`` among the markers; said once (an event).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpc_sweep.session import Session
    from hpc_sweep.track.poll import PollReport


_DUPLICATE = re.compile(r"^(.+)\.(\d+)\.duplicate\.(.+)$")


def check_duplicates(session: Session, report: PollReport) -> None:
    """A second task queued for a (config, attempt) that another task had claimed is stopped by the job script's
    claim guard and leaves ``<config>.<attempt>.duplicate.<task id>`` among the markers: said once (an event)."""
    try:
        names = [name for name in os.listdir(session.paths.markers) if ".duplicate." in name]
    except FileNotFoundError:
        return
    found = sorted(m.groups() for m in map(_DUPLICATE.match, names) if m)
    if not found:
        return
    store = session.store
    told = {(e.config, e.detail) for e in store.events("duplicate")}
    new = []
    for name, attempt, task in found:
        detail = f"attempt {attempt}: task {task} stopped by the claim guard"
        if (name, detail) not in told:
            new.append((name, attempt, task, detail))
    if not new:
        return
    with store.transaction():
        for name, attempt, task, detail in new:
            store.add_event("duplicate", detail, name)
            report.notes.append(f"warning: a duplicate task of {name} attempt {attempt} (job {task}) was stopped by "
                                "the claim guard")
