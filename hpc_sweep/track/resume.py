"""When a run is resumed: a config whose attempt ended in one of the sweep's ``resume_states`` (timeout, preempted
and node_fail by default) waits for resubmission from its checkpoint, while its attempts number at most
``max_retries + 1``. How the resumed attempt starts (its checkpoint, or fresh when there is none) is worked out
at submission (:mod:`hpc_sweep.submit.chunks`) by the program's resume recipe (:mod:`hpc_sweep.programs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpc_sweep.state.states import ConfigState
from hpc_sweep.state.store import placeholders

if TYPE_CHECKING:
    from hpc_sweep.session import Session
    from hpc_sweep.track.poll import PollReport


def resume_ended(session: Session, report: PollReport) -> None:
    """Runs that ended in a resumable state wait for resubmission from their checkpoint, up to max_retries."""
    spec, store = session.spec, session.store
    ended = store.query(f"SELECT name, state, attempt FROM configs WHERE state IN ({placeholders(spec.resume_states)}) "
                        "AND attempt <= ?", (*spec.resume_states, spec.max_retries))
    if not ended:
        return  # no empty transaction: each commit is a few fsyncs on the sweep's disk
    with store.transaction():
        for name, state, attempt in ended:
            store.conn.execute(f"UPDATE configs SET state = '{ConfigState.WAITING}', next_mode = 'resume', reason = ? "
                               "WHERE name = ?",
                               (f"resuming after {state} (attempt {attempt + 1} of {spec.max_retries + 1})", name))
            store.add_event("resume", f"after {state} in attempt {attempt}", name)
            report.resumed.append(name)
