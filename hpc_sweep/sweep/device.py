"""The DeepH ``system.device`` grammar: ``gpu*8:1-4,7``, ``gpu*3``, ``gpu*8:0``, ``cpu``.

Grammar (inferred from every example in DeepH's documentation, see reference/deeph.md)::

    device := type [ "*" num [ ":" item ("," item)* ] ]
    item   := int | int "-" int          (inclusive range)
    type   := cpu | gpu | cuda | rocm | dcu | tpu

``num`` is how many devices of that type the node has; the ids pick some of them. Without ids all ``num``
devices are used. How many devices a string selects (:attr:`Device.count`):

- ``gpu*8:1-4,7`` -> 5 (the ids), ``gpu*3`` -> 3 (all of num), ``gpu*8:0`` -> 1;
- ``gpu`` alone -> 1: DeepH never shows a bare accelerator type, so we read it as the smallest request;
- ``cpu`` -> 1 CPU partition, ``cpu*4`` -> 4. A CPU string selects no accelerator:
  :attr:`Device.accelerators` is 0 for every ``cpu`` string, and that is the number a scheduler request uses.

Parsing is strict (lowercase type, no inner spaces, no leading sign) and every error names the bad part and the
fix, because a bad device string otherwise only shows up when a queued job finally starts.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

DEVICE_TYPES = ("cpu", "gpu", "cuda", "rocm", "dcu", "tpu")

# Scheduler GRES / resource name per device type. A site profile overrides entries (e.g. a ROCm site whose
# Slurm calls its cards "gpu", or a DCU site that does), so this is only the default.
DEFAULT_RESOURCE_NAMES: dict[str, str] = {
    "gpu": "gpu",
    "cuda": "gpu",
    "rocm": "gpu",
    "dcu": "dcu",
    "tpu": "tpu",
}

# No node has more devices than this; a larger count is a typo (and ids up to it would be expanded one by one).
MAX_DEVICES = 1024

_INT = re.compile(r"[0-9]+")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)")


class DeviceError(ValueError):
    """A device string that does not follow the grammar; the message names the bad part and the fix."""


@dataclass(frozen=True)
class Device:
    """A parsed device string. ``ids`` keep the order written (DeepH may treat the first as the head device)."""

    type: str
    num: Optional[int] = None
    ids: Optional[tuple[int, ...]] = None

    @property
    def count(self) -> int:
        """Devices of this type the string selects (CPU partitions for ``cpu``)."""
        if self.ids is not None:
            return len(self.ids)
        return self.num if self.num is not None else 1

    @property
    def is_accelerator(self) -> bool:
        return self.type != "cpu"

    @property
    def accelerators(self) -> int:
        """Accelerators to request from a scheduler: 0 for ``cpu``, :attr:`count` otherwise."""
        return self.count if self.is_accelerator else 0


def parse_device(text: object) -> Device:
    """Parse a device string; raise :class:`DeviceError` naming the bad part and the fix."""
    if not isinstance(text, str):
        raise DeviceError(f"device must be a string like 'gpu*1' or 'cpu', not {type(text).__name__} {text!r}")
    whole = text.strip()  # outer whitespace is harmless; inner whitespace is not in the grammar
    if not whole:
        raise DeviceError("device string is empty; write e.g. 'gpu*1', 'gpu*8:0' or 'cpu'")
    if any(ch.isspace() for ch in whole):
        squeezed = "".join(whole.split())
        raise DeviceError(f"device {whole!r} has spaces inside; write {squeezed!r}")
    head, star, rest = whole.partition("*")
    if ":" in head:
        kind, _, ids_text = head.partition(":")
        raise DeviceError(f"device {whole!r} gives ids without a count; write '{kind}*N:{ids_text}' "
                          "where N is the number of devices on the node")
    dtype = _parse_type(head, whole)
    if not star:
        return Device(dtype)
    num_text, colon, ids_text = rest.partition(":")
    num = _parse_num(num_text, whole, dtype)
    if not colon:
        return Device(dtype, num)
    ids = _parse_ids(ids_text, whole, dtype, num)
    return Device(dtype, num, ids)


def _parse_type(head: str, whole: str) -> str:
    if head in DEVICE_TYPES:
        return head
    if not head:
        raise DeviceError(f"device {whole!r} has no type before '*'; start with one of {', '.join(DEVICE_TYPES)}")
    if head.lower() in DEVICE_TYPES:
        raise DeviceError(f"device type {head!r} in {whole!r} must be lowercase; write {head.lower()!r}")
    near = difflib.get_close_matches(head.lower(), DEVICE_TYPES, n=1, cutoff=0.5)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise DeviceError(f"unknown device type {head!r} in {whole!r}; {hint}(types: {', '.join(DEVICE_TYPES)})")


def _parse_num(num_text: str, whole: str, dtype: str) -> int:
    if not num_text:
        raise DeviceError(f"device {whole!r} has no count after '*'; write e.g. '{dtype}*1'")
    if num_text.startswith("-") and _INT.fullmatch(num_text[1:]):
        raise DeviceError(f"device count {num_text} in {whole!r} is negative; write a positive count like '{dtype}*1'")
    if not _INT.fullmatch(num_text):
        raise DeviceError(f"device count {num_text!r} in {whole!r} is not a whole number; write e.g. '{dtype}*8' "
                          f"(ids go after a ':', as in '{dtype}*8:0')")
    digits = num_text.lstrip("0") or "0"
    num = int(digits) if len(digits) <= 6 else MAX_DEVICES + 1
    if num > MAX_DEVICES:
        raise DeviceError(f"device count {num_text} in {whole!r} is more than a node has (at most {MAX_DEVICES}); "
                          f"write the node's real count, e.g. '{dtype}*8'")
    if num == 0:
        fix = " (or 'cpu' for no accelerator)" if dtype != "cpu" else " or 'cpu'"
        raise DeviceError(f"device count 0 in {whole!r} must be at least 1; write '{dtype}*1'{fix}")
    return num


def _parse_ids(ids_text: str, whole: str, dtype: str, num: int) -> tuple[int, ...]:
    if not ids_text:
        raise DeviceError(f"device {whole!r} has no ids after ':'; write e.g. '{dtype}*{num}:0' or drop the ':'")
    ids: list[int] = []
    for item in ids_text.split(","):
        ids.extend(_parse_item(item, whole, num))
    _check_unique(ids, whole, dtype, num)
    return tuple(ids)


def _parse_item(item: str, whole: str, num: int) -> list[int]:
    if not item:
        raise DeviceError(f"device {whole!r} has an empty id between commas; write ids like '0,2' or '1-4'")
    if item.startswith("-"):
        raise DeviceError(f"id {item!r} in {whole!r} is negative; ids count from 0 up to {num - 1}")
    if any(len(part) > 6 for part in item.split("-")):  # never converted: thousands of digits would not parse
        raise DeviceError(f"id {item!r} is out of range 0-{num - 1} in {whole!r}; use ids 0-{num - 1}")
    if _INT.fullmatch(item):
        lo = hi = int(item)
    else:
        match = _RANGE.fullmatch(item)
        if match is None:
            raise DeviceError(f"unexpected {item!r} in the ids of {whole!r}; each id is a number like '3' "
                              f"or an inclusive range like '1-4'")
        lo, hi = int(match.group(1)), int(match.group(2))
        if lo > hi:
            raise DeviceError(f"range {item!r} in {whole!r} is reversed; write '{hi}-{lo}'")
    for value in (lo, hi):
        if value >= num:
            raise DeviceError(f"id {value} is out of range 0-{num - 1} in {whole!r} (the count says {num} devices); "
                              f"use ids 0-{num - 1} or raise the count")
    return list(range(lo, hi + 1))


def _check_unique(ids: list[int], whole: str, dtype: str, num: int) -> None:
    seen: set[int] = set()
    repeated: set[int] = set()
    for i in ids:
        (repeated if i in seen else seen).add(i)
    if repeated:
        merged = format_device(Device(dtype, num, tuple(sorted(seen))))
        which = ", ".join(str(i) for i in sorted(repeated))
        noun = "id" if len(repeated) == 1 else "ids"
        raise DeviceError(f"{noun} {which} selected more than once in {whole!r} (repeated or overlapping ranges); "
                          f"write {merged!r}")


def format_device(dev: Device) -> str:
    """The canonical spelling: ``gpu``, ``gpu*3``, ``gpu*8:1-4,7`` (runs of consecutive ids become ranges)."""
    if dev.num is None:
        return dev.type
    if dev.ids is None:
        return f"{dev.type}*{dev.num}"
    return f"{dev.type}*{dev.num}:{compress_ids(dev.ids)}"


def compress_ids(ids: Iterable[int]) -> str:
    """``[1, 2, 3, 4, 7]`` -> ``"1-4,7"``; keeps the given order, joining only ascending consecutive runs."""
    parts: list[str] = []
    run: list[int] = []
    for i in ids:
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(_run_text(run))
        run = [i]
    if run:
        parts.append(_run_text(run))
    return ",".join(parts)


def _run_text(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def allocation_view(dev: Device) -> str:
    """The device string a job uses inside a scheduler allocation, where visible GPUs are renumbered from 0.

    ``gpu*8:1-4,7`` -> ``gpu*5``, ``gpu*8:0`` -> ``gpu*1``, ``gpu`` -> ``gpu*1``; ``cpu`` strings are unchanged
    (CPU partitions are not renumbered devices).
    """
    if not dev.is_accelerator:
        return format_device(dev)
    return format_device(Device(dev.type, dev.count))


def visible_devices(dev: Device) -> Optional[str]:
    """``CUDA_VISIBLE_DEVICES``-style list of the ids a local run may use, or None when the string names none."""
    if not dev.is_accelerator or dev.ids is None:
        return None
    return ",".join(str(i) for i in dev.ids)


def resource_name(dev: Device, overrides: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The scheduler's resource (GRES) name for this device type, or None for ``cpu``.

    ``overrides`` is the site profile's table (type -> name); it wins over :data:`DEFAULT_RESOURCE_NAMES`.
    """
    if not dev.is_accelerator:
        return None
    table = dict(DEFAULT_RESOURCE_NAMES)
    table.update(overrides or {})
    return table.get(dev.type, dev.type)
