"""The notebook API: ``from hpc_sweep.api import load``. The records and the analysis behind them live in
:mod:`hpc_sweep.results.analysis`; this module keeps the name notebooks import."""

from __future__ import annotations

from hpc_sweep.results.analysis import (  # noqa: F401  (re-exported)
    NO_INFLUENCE,
    PLATEAU_FACTOR,
    Sweep,
    advise,
    attempt_seconds,
    config_diff,
    convergence_flags,
    failure_groups,
    load,
    parameter_effects,
    progress_summary,
    rank,
    thin,
    value_label,
)
from hpc_sweep.state.states import QUEUED as QUEUED_STATES  # noqa: F401  (the names this module had before)
from hpc_sweep.state.states import UNSUCCESSFUL as FAILED_STATES  # noqa: F401

__all__ = ["load", "Sweep", "rank", "parameter_effects", "convergence_flags", "failure_groups", "advise",
           "progress_summary", "attempt_seconds", "config_diff", "thin", "value_label", "NO_INFLUENCE",
           "PLATEAU_FACTOR", "QUEUED_STATES", "FAILED_STATES"]
