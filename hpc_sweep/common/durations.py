"""Walltimes and intervals: "24:00:00", "1-12:00:00", "90m", "2h", "45s", or plain seconds; and times of day as
the status snapshot and the local runner print them."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Optional, Union

_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SUFFIXED = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_duration(value: Union[str, int, float]) -> int:
    """Seconds. Raises ValueError with the accepted forms in the message."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '24:00:00', '90m' or '2h'")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return int(value)
    text = str(value).strip().lower()
    match = _SUFFIXED.match(text)
    if match:
        seconds = int(float(match.group(1)) * _UNIT[match.group(2)])
    else:
        match = _CLOCK.match(text)
        if not match:
            raise ValueError(f"'{value}' is not a duration like '24:00:00', '1-12:00:00', '90m' or '2h'")
        days, first, second, third = match.groups()
        parts = [int(p) for p in (first, second, third) if p is not None]
        if len(parts) == 1:
            hours, minutes, secs = 0, parts[0], 0   # Slurm reads a bare number as minutes
        elif len(parts) == 2:
            hours, minutes, secs = parts[0], parts[1], 0
        else:
            hours, minutes, secs = parts
        seconds = int(days or 0) * 86400 + hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def format_hms(seconds: int) -> str:
    """HH:MM:SS (hours may exceed 24), the form every scheduler accepts."""
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_short(seconds: float) -> str:
    """Human form for tables: 45s, 12m, 3h05m, 2d04h."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def iso_time(stamp: Optional[float]) -> Optional[str]:
    """A Unix time as local ISO 8601 with its offset, to the second ("2026-11-23T12:43:15+01:00"); None stays None."""
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, timezone.utc).astimezone().isoformat(timespec="seconds")
