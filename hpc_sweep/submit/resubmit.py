"""`hpc-sweep resubmit`: run named configs again, from their checkpoint unless --fresh. A config stopped by
``[early_stop]`` comes back this way, and is never stopped again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from hpc_sweep.common.durations import parse_duration
from hpc_sweep.common.errors import UserError
from hpc_sweep.state.states import ACTIVE, ConfigState
from hpc_sweep.submit.submitting import SubmitReport, submit
from hpc_sweep.sweep.search import reopen

if TYPE_CHECKING:
    from hpc_sweep.session import Session


def resubmit(session: Session, names: Sequence[str], walltime: Optional[str], fresh: bool) -> SubmitReport:
    store = session.store
    store.require_names(names)
    configs = {c.name: c for c in store.configs()}
    for name in names:
        if configs[name].state in ACTIVE:
            raise UserError(f"{name} is {configs[name].state}", fix=f"cancel it first: hpc-sweep cancel {name}")
    seconds = None
    if walltime:
        try:
            seconds = parse_duration(walltime)
        except ValueError as exc:
            raise UserError(str(exc), key="--walltime") from None
    with store.transaction():
        for name in names:
            mode = "fresh" if fresh or configs[name].attempt == 0 else "resume"
            store.conn.execute(f"UPDATE configs SET state = '{ConfigState.WAITING}', next_mode = ?, reason = ?, "
                               "walltime_s = COALESCE(?, walltime_s) WHERE name = ?",
                               (mode, f"resubmitted by hand ({mode})", seconds, name))
            store.add_event("resubmit", f"{mode}" + (f", walltime {walltime}" if walltime else ""), name)
        # Brought back by hand after an early stop: the rule must not stop it again (it would, at once).
        store.set_early_stops(("exempt",), [(1, n) for n in names if configs[n].state == ConfigState.STOPPED])
        if session.spec.search is not None:  # the sampler hears how the new run ends
            reopen(store.conn, names)
    return submit(session, only=list(names))
