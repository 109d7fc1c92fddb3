"""Array index lists in Slurm's syntax (``0-15:4,20``), which the local runner speaks too: the shortest spelling
of a set of indices and its expansion. Pure."""

from __future__ import annotations

import re
from typing import Iterable, List, Sequence, Tuple


_RANGE = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")


def compress_indices(indices: Iterable[int]) -> str:
    """A short Slurm array list for these indices: runs ``0-15``, steps ``0-15:4``, singles ``0,4,8``.

    Segments are consecutive in sorted order; from each position only the full arithmetic run starting there, the
    run minus its last element (so that element can open the next run) and a single index are worth trying.
    """
    xs = sorted(set(int(i) for i in indices))
    if not xs:
        raise ValueError("an array needs at least one index")
    if xs[0] < 0:
        raise ValueError(f"array indices must be >= 0, got {xs[0]}")
    n = len(xs)
    run = [1] * n  # run[i]: length of the arithmetic run that starts at i with step xs[i+1]-xs[i]
    for i in range(n - 2, -1, -1):
        step = xs[i + 1] - xs[i]
        run[i] = run[i + 1] + 1 if i + 2 < n and xs[i + 2] - xs[i + 1] == step else 2
    best: List[Tuple[int, int]] = [(0, 0)] * (n + 1)  # best[i] = (cost of xs[i:], elements in first segment)
    for i in range(n - 1, -1, -1):
        options = [(len(str(xs[i])) + 1 + best[i + 1][0], 1)]
        for length in {run[i], run[i] - 1}:
            if length >= 2 and i + length <= n:
                options.append((len(_segment(xs, i, length)) + 1 + best[i + length][0], length))
        best[i] = min(options, key=lambda option: (option[0], option[1]))
    parts, i = [], 0
    while i < n:
        length = best[i][1]
        parts.append(_segment(xs, i, length))
        i += length
    return ",".join(parts)


def _segment(xs: Sequence[int], start: int, length: int) -> str:
    first, last = xs[start], xs[start + length - 1]
    if length == 1:
        return str(first)
    step = xs[start + 1] - first
    return f"{first}-{last}" if step == 1 else f"{first}-{last}:{step}"


def expand_array_spec(spec: str) -> List[int]:
    """``"0-15:4,20%8"`` -> ``[0, 4, 8, 12, 20]`` (sorted, unique). ValueError when malformed."""
    body = spec.split("%", 1)[0]
    out = set()
    for part in body.split(","):
        match = _RANGE.fullmatch(part.strip())
        if not match:
            raise ValueError(f"bad array range {part!r} in {spec!r}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        step = int(match.group(3)) if match.group(3) else 1
        if last < first or step < 1:
            raise ValueError(f"bad array range {part!r} in {spec!r}")
        out.update(range(first, last + 1, step))
    return sorted(out)
