"""Pieces the three log parsers share: number parsing and the per-run bookkeeping kept in ``state``.

State must survive ``json.dumps``/``json.loads`` in strict form, so non-finite floats are stored as the strings
"nan", "inf", "-inf" and turned back into floats when the summary is built.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Optional

from hpc_sweep.common.dotted import get_dotted
from hpc_sweep.programs.base import EpochRow, LogParser, LogSummary


def number(text: Optional[str]) -> Optional[float]:
    """A float from a log token (``1.0``, ``2.6e+00``, ``nan``); None when it is not a number."""
    if text is None:
        return None
    try:
        return float(text.strip().strip("`,;"))
    except ValueError:
        return None


def encode(value: Optional[float]) -> Any:
    """A float as strict JSON can hold it."""
    if value is None or math.isfinite(value):
        return value
    return str(value)  # "nan", "inf", "-inf"


def decode(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, str) else value


def record_row(state: dict, row: EpochRow) -> EpochRow:
    """Remember ``row`` as the last epoch and update the best (lowest, nan ignored) validation loss."""
    state["rows"] = state.get("rows", 0) + 1
    state["last"] = last_entry(row)
    val = row.val_loss
    best = decode(state.get("best"))
    # Strict '<' keeps the earliest epoch on ties; nan compares False and is never best.
    if val is not None and not math.isnan(val) and (best is None or val < best):
        state["best"] = encode(val)
        state["best_epoch"] = row.epoch
    return row


def last_entry(row: EpochRow) -> list:
    """``row`` as ``state["last"]`` keeps it (strict JSON); :func:`last_row` reads it back."""
    return [row.epoch, encode(row.train_loss), encode(row.val_loss), encode(row.seconds), encode(row.lr_scale)]


def last_row(state: dict) -> Optional[EpochRow]:
    last = state.get("last")
    if not last:
        return None
    epoch, train, val, seconds, lr = last
    return EpochRow(epoch, decode(train), decode(val), decode(seconds), decode(lr))


def summary_from(state: dict, max_epoch: Optional[int]) -> LogSummary:
    """The fields every program fills the same way; callers adjust phase/finished."""
    last = last_row(state)
    return LogSummary(
        phase=state.get("phase"),
        epoch=last.epoch if last else None,
        max_epoch=max_epoch,
        train_loss=last.train_loss if last else None,
        val_loss=last.val_loss if last else None,
        best_val_loss=decode(state.get("best")),
        best_epoch=state.get("best_epoch"),
        finished=bool(state.get("finished", False)),
        info=dict(state.get("info", {})),
    )


def as_int(value: Any) -> Optional[int]:
    """``value`` when it is a real integer (bool is not), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def choice_problem(config: dict, key: str, choices: tuple) -> Optional[str]:
    """A message when ``key`` is set to a value outside ``choices`` (unset keys take the trainer's default)."""
    value = get_dotted(config, key, None)
    if value is None or value in choices:
        return None
    near = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return f"{key}: '{value}' is not one of {', '.join(choices)}{hint}"


class InfoParser(LogParser):
    """A parser that keeps free-form facts (sizes, version, units...) under ``state["info"]``."""

    def _info(self, name: str, value: Any) -> None:
        self.state.setdefault("info", {})[name] = value
