"""sweep.toml's ``[early_stop]`` and ``[search]``: read, validated, and refused where they cannot work together.

```toml
[early_stop]
rule = "asha"          # asha (asynchronous successive halving) | median
metric = "val_loss"    # or train_loss; lower is better            (default val_loss)
min_epochs = 10        # no run is stopped before this epoch       (default 10)
reduction = 3          # asha: at each rung keep the best 1/reduction (default 3)
# rungs = [10, 30, 90] # asha: default min_epochs × reduction^k below max_epoch

[search]
method = "tpe"         # adaptive sampling (Optuna's TPE; the optional extra hpc-sweep[search])
budget = 40            # configs the search may ask for in all
seed = 1               # (default 0)
# metric = "val_loss"  # what the search minimises: default [early_stop]'s metric, else val_loss
[search.params]        # the grammar of [random.params]
"process.train.optimizer.init_learning_rate" = { dist = "loguniform", low = 1e-4, high = 1e-2 }
```

Every mistake is one UserError naming the file, the key and the fix (through sweepfile's reader). The
distributions are parsed by sweepfile's own [random] code, so both sections accept exactly the same grammar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hpc_sweep.common.errors import UserError
from hpc_sweep.sweep.sweepfile import MAX_CONFIGS, SweepSpec, _nearest, _parse_random, _Reader, parse_sweep

RULES = ("asha", "median")
METRICS = ("val_loss", "train_loss")
METHODS = ("tpe",)
DEFAULT_MIN_EPOCHS = 10
DEFAULT_REDUCTION = 3
_KEYS = {
    "early_stop": ("rule", "metric", "min_epochs", "reduction", "rungs"),
    "search": ("method", "budget", "seed", "metric", "params"),
}
_ASHA_ONLY = ("reduction", "rungs")
# Programs whose logs always carry both metrics; a generic program has the ones its [log] has a pattern for.
_BOTH_METRICS = ("deeph", "xequinet")


@dataclass(frozen=True)
class EarlyStopSpec:
    rule: str
    metric: str = "val_loss"
    min_epochs: int = DEFAULT_MIN_EPOCHS
    reduction: int = DEFAULT_REDUCTION
    rungs: Optional[tuple] = None   # None: min_epochs × reduction^k below max_epoch


@dataclass(frozen=True)
class SearchSpec:
    method: str
    budget: int
    params: tuple                   # sweepfile.RandomParam, in the file's order
    seed: int = 0
    metric: str = "val_loss"


@dataclass(frozen=True)
class SweepOptions:
    early_stop: Optional[EarlyStopSpec] = None
    search: Optional[SearchSpec] = None


@dataclass
class _ParamsOnly:
    """What sweepfile's [random] parser fills in; only its params are kept."""

    random_count: int = 0
    random_seed: int = 0
    random_params: list = field(default_factory=list)


class _SearchReader(_Reader):
    """sweepfile's reader, naming [search.params] where its [random] parser says random.params."""

    def fail(self, key: str, message: str, fix: Optional[str] = None) -> UserError:
        if key.startswith("random.params"):
            key = "search.params" + key[len("random.params"):]
        return super().fail(key, message, fix)


def parse_sweep_and_options(data: dict, path: Path) -> tuple:
    """The whole sweep.toml: (SweepSpec, SweepOptions); the spec also holds both as ``early_stop``/``search``."""
    spec = parse_sweep(data, path)
    return spec, SweepOptions(early_stop=spec.early_stop, search=spec.search)


def parse_options(data: dict, path: Path, spec: SweepSpec) -> SweepOptions:
    reader = _Reader(path)
    for section, allowed in _KEYS.items():
        table = data.get(section)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise reader.fail(section, "must be a table", fix=f"write it as [{section}] with key = value lines")
        for key in table:
            if key not in allowed:
                raise reader.fail(f"{section}.{key}", "is not a known key", fix=_nearest(key, allowed))
    early_stop = _parse_early_stop(reader, data.get("early_stop"), spec)
    search = _parse_search(path, data.get("search"), spec, early_stop)
    return SweepOptions(early_stop=early_stop, search=search)


def _parse_early_stop(reader: _Reader, table: Optional[dict], spec: SweepSpec) -> Optional[EarlyStopSpec]:
    if table is None:
        return None
    rule = reader.typed(table, "early_stop", "rule", str, required=True)
    if rule not in RULES:
        raise reader.fail("early_stop.rule", f"'{rule}' is not a rule", fix=_nearest(rule, RULES))
    metric = _metric(reader, table, "early_stop", "val_loss", spec)
    min_epochs = reader.typed(table, "early_stop", "min_epochs", int, default=DEFAULT_MIN_EPOCHS)
    if min_epochs < 1:
        raise reader.fail("early_stop.min_epochs", "must be at least 1", fix="e.g. min_epochs = 10")
    if rule != "asha":
        for key in _ASHA_ONLY:
            if key in table:
                raise reader.fail(f"early_stop.{key}", f"only rule = \"asha\" uses {key}",
                                  fix=f"remove {key}, or set rule = \"asha\"")
    reduction = reader.typed(table, "early_stop", "reduction", int, default=DEFAULT_REDUCTION)
    if reduction < 2:
        raise reader.fail("early_stop.reduction", f"must be at least 2, not {reduction}",
                          fix="reduction = 3 keeps the best third at each rung")
    rungs = _rungs(reader, table, min_epochs)
    return EarlyStopSpec(rule=rule, metric=metric, min_epochs=min_epochs, reduction=reduction, rungs=rungs)


def _rungs(reader: _Reader, table: dict, min_epochs: int) -> Optional[tuple]:
    rungs = reader.typed(table, "early_stop", "rungs", list)
    if rungs is None:
        return None
    if not rungs or not all(isinstance(r, int) and not isinstance(r, bool) for r in rungs):
        raise reader.fail("early_stop.rungs", f"must be a list of epochs, not {rungs!r}",
                          fix="e.g. rungs = [10, 30, 90]")
    if any(b <= a for a, b in zip(rungs, rungs[1:])):
        raise reader.fail("early_stop.rungs", f"{rungs} must increase", fix="list each epoch once, in order")
    if rungs[0] < min_epochs:
        raise reader.fail("early_stop.rungs", f"rung {rungs[0]} comes before min_epochs = {min_epochs}",
                          fix=f"start the rungs at {min_epochs} or later, or lower min_epochs")
    return tuple(rungs)


def _metric(reader: _Reader, table: dict, section: str, default: str, spec: SweepSpec) -> str:
    metric = reader.typed(table, section, "metric", str, default=default)
    if metric not in METRICS:
        raise reader.fail(f"{section}.metric", f"'{metric}' is not a metric", fix=_nearest(metric, METRICS))
    if spec.program not in _BOTH_METRICS and metric not in spec.log:
        other = "train_loss" if metric == "val_loss" else "val_loss"
        raise reader.fail(f"{section}.metric", f"the {spec.program} program's [log] has no {metric} pattern, "
                          "so its runs have no such curve",
                          fix=f"add [log] {metric} = \"regex\", or set metric = \"{other}\" if [log] has that")
    return metric


def _parse_search(path: Path, table: Optional[dict], spec: SweepSpec,
                  early_stop: Optional[EarlyStopSpec]) -> Optional[SearchSpec]:
    if table is None:
        return None
    reader = _SearchReader(path)
    method = reader.typed(table, "search", "method", str, required=True)
    if method not in METHODS:
        raise reader.fail("search.method", f"'{method}' is not a search method", fix=_nearest(method, METHODS))
    budget = reader.typed(table, "search", "budget", int, required=True)
    if not 1 <= budget <= MAX_CONFIGS:
        raise reader.fail("search.budget", f"must be between 1 and {MAX_CONFIGS}, not {budget}",
                          fix="budget = how many configs the search may ask for in all")
    seed = reader.typed(table, "search", "seed", int, default=0)
    default_metric = early_stop.metric if early_stop else "val_loss"
    metric = _metric(reader, table, "search", default_metric, spec)
    if early_stop and metric != early_stop.metric:
        raise reader.fail("search.metric", f"the search minimises {metric} but [early_stop] judges runs by "
                          f"{early_stop.metric}", fix="use one metric for both, or leave search.metric out")
    params = _search_params(reader, table, spec)
    _refuse_other_spaces(reader, spec)
    return SearchSpec(method=method, budget=budget, params=tuple(params), seed=seed, metric=metric)


def _search_params(reader: _Reader, table: dict, spec: SweepSpec) -> list:
    if "params" not in table:
        raise reader.fail("search.params", "is missing: the search has nothing to vary",
                          fix='add [search.params] "key" = { dist = "loguniform", low = 1e-4, high = 1e-2 }')
    scratch = _ParamsOnly()
    _parse_random(reader, {"count": 1, "params": table["params"]}, scratch)  # type: ignore[arg-type]
    for param in scratch.random_params:
        bad = [v for v in param.values or () if not _plain(v)]
        if bad:
            raise reader.fail(f"search.params.{param.key}.values", f"{bad[0]!r} cannot be a choice of the search",
                              fix="choices must be numbers, strings or booleans")
        if param.key in spec.fixed:
            raise reader.fail(f"search.params.{param.key}", "is both searched and fixed",
                              fix="remove it from [fixed] or from [search.params]")
    return scratch.random_params


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _refuse_other_spaces(reader: _Reader, spec: SweepSpec) -> None:
    """The search asks for every config itself; a grid, zip, explicit configs or [random] beside it would be a
    second source of configs that the search neither counts nor learns from."""
    others = (("grid", spec.grid), ("zip", spec.zips), ("configs", spec.explicit), ("random", spec.random_params))
    for section, given in others:
        if given:
            raise reader.fail("search", f"cannot be combined with [{section}]: the search picks every config",
                              fix=f"remove [{section}] (keep its values as [search.params] choices), "
                              "or remove [search]")
