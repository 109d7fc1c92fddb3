"""Config files edited by hand after their submission: a queued or running run was submitted with the generated
version, which the user should hear of once (an event; status shows it in the reason).
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from hpc_sweep.state.states import ACTIVE, sql_list

if TYPE_CHECKING:
    from hpc_sweep.session import Session
    from hpc_sweep.track.poll import PollReport


def check_edited(session: Session, report: PollReport) -> None:
    """A queued or running config whose file was changed by hand after submission: said once (an event), and
    status shows it. Only files modified since their submission are hashed, so a poll stays cheap."""
    store = session.store
    rows = store.query(
        "SELECT c.name, c.path, c.digest, c.attempt, a.submitted_at FROM configs c JOIN attempts a "
        f"ON a.config = c.name AND a.attempt = c.attempt WHERE c.state IN ({sql_list(ACTIVE)})")
    found = []
    for name, path, recorded, attempt, submitted_at in rows:
        try:
            if os.stat(path).st_mtime <= (submitted_at or 0):
                continue
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            digest = "missing"
        if digest != recorded:
            found.append((name, attempt, path, digest))
    if not found:
        return
    told = {(e.config, e.detail) for e in store.events("edited")}
    with store.transaction():
        for name, attempt, path, digest in found:
            detail = f"attempt {attempt}: {path} edited after submission (now {digest[:12]})"
            if (name, detail) in told:
                continue
            store.add_event("edited", detail, name)
            report.notes.append(f"warning: {name}: {path} was edited after submission; the run was submitted with "
                                "the generated version (see 'hpc-sweep generate --force' to record a change)")
