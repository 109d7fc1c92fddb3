"""Parameter space → parameter sets: grid × zip groups, then explicit configs, then seeded random samples.

Order is stable (first grid key varies slowest), so the same sweep.toml always yields the same list; config
numbers are attached later by identity, not by position (see :mod:`hpc_sweep.sweep.generate`).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any

from hpc_sweep.sweep.sweepfile import SweepSpec


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    sets: list[dict[str, Any]] = []
    axes: list[list[dict[str, Any]]] = [[{key: v} for v in values] for key, values in spec.grid.items()]
    for group in spec.zips:
        keys = list(group)
        axes.append([dict(zip(keys, row)) for row in zip(*group.values())])
    if axes:
        for combo in itertools.product(*axes):
            merged: dict[str, Any] = {}
            for part in combo:
                merged.update(part)
            sets.append(merged)
    sets.extend(dict(extra) for extra in spec.explicit)
    sets.extend(_random_samples(spec))
    if not sets:
        sets.append({})  # no space at all: one config, the base plus fixed overrides
    return _unique(sets)


def _random_samples(spec: SweepSpec) -> list[dict[str, Any]]:
    rng = random.Random(spec.random_seed)
    samples = []
    for _ in range(spec.random_count):
        sample: dict[str, Any] = {}
        for param in spec.random_params:
            if param.dist == "choice":
                sample[param.key] = rng.choice(param.values)
            elif param.dist == "int":
                sample[param.key] = rng.randint(int(param.low), int(param.high))
            elif param.dist == "loguniform":
                sample[param.key] = _round(math.exp(rng.uniform(math.log(param.low), math.log(param.high))))
            else:
                sample[param.key] = _round(rng.uniform(param.low, param.high))
        samples.append(sample)
    return samples


def _round(value: float) -> float:
    """Six significant digits: readable in tables and file names, and still distinct."""
    return float(f"{value:.6g}")


def params_key(params: dict[str, Any]) -> str:
    """Canonical identity of a parameter set (order-free, type-aware: 1 and 1.0 differ)."""
    return json.dumps(_typed(params), sort_keys=True, separators=(",", ":"))


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, float):
        return {"f": repr(value)}
    return value if isinstance(value, (str, int, bool)) or value is None else {"s": str(value)}


def _unique(sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = set()
    result = []
    for params in sets:
        key = params_key(params)
        if key not in seen:
            seen.add(key)
            result.append(params)
    return result
