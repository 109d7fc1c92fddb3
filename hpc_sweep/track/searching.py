"""The poll's adaptive-search step (sweep.toml ``[search]``): tell the sampler how runs ended, then, as room
appears, ask it for new configs, written as the next configNNN before the top-up submits them.

The sampler and its table are in :mod:`hpc_sweep.sweep.search`; this module decides how many configs to ask for.
The search keeps as many configs unfinished (waiting, queued or running) as the sweep can run at once: the sweep's
``throttle``, else the queue cap (the scheduler's or the profile's ``max_queued``), else the local backend's slots
(``cpu_slots``), else :data:`DEFAULT_IN_FLIGHT`. Asking for more at once would make TPE a random search: it learns
only from runs that ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from hpc_sweep.common.errors import UserError
from hpc_sweep.state.states import UNFINISHED, sql_list
from hpc_sweep.sweep.search import ask_configs, tell_ended

if TYPE_CHECKING:
    from hpc_sweep.session import Session

DEFAULT_IN_FLIGHT = 4


def grow_search(session: Session, notes: Optional[list] = None, fail: bool = False) -> list:
    """Tell, then ask for as many configs as there is room for. Returns the configs written. A problem (Optuna
    missing, a suggestion the base refuses) is a note for a poll, raised for ``fail`` (generate)."""
    spec, store = session.spec, session.store
    if spec.search is None:
        return []
    notes = notes if notes is not None else []
    try:
        told = tell_ended(spec, store)
        room = in_flight_target(session) - _unfinished(session)
        written = ask_configs(spec, store, session.paths, room) if room > 0 else []
    except UserError as exc:
        if fail:
            raise
        notes.append(f"search: no new configs asked: {exc}")
        return []
    if told:
        notes.append(f"search: told {len(told)} ended run(s) to the sampler")
    if written:
        asked = store.query("SELECT COUNT(*) FROM search_trials")[0][0]
        notes.append(f"search: asked for {', '.join(written)} ({asked} of {spec.search.budget} trials)")
    return written


def in_flight_target(session: Session) -> int:
    """How many configs the search keeps unfinished at once (see the module's docstring)."""
    from hpc_sweep.submit.queries import cached_limits

    profile = session.profile
    limits = cached_limits(session) or {}
    for value in (session.spec.throttle, limits.get("max_queued"), profile.max_queued, profile.cpu_slots):
        if value:
            return int(value)
    return DEFAULT_IN_FLIGHT


def _unfinished(session: Session) -> int:
    return session.store.query(f"SELECT COUNT(*) FROM configs WHERE state IN ({sql_list(UNFINISHED)})")[0][0]
