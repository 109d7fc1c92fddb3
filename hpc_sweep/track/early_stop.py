"""Early stopping: which running configs to stop, from the parsed curves of every config. Pure functions.

Two rules, as the tools users know define them (lower metric is better):

- ``asha``, asynchronous successive halving (Li et al. 2020; Ray Tune's ASHAScheduler, Optuna's
  SuccessiveHalvingPruner): rungs at ``min_epochs × reduction^k`` epochs. A run is judged once at each rung, when
  its curve first reaches it, against every run that reached that rung before (in this poll or earlier): it goes
  on when its best value by the rung is among the best ``max(1, n // reduction)`` of the ``n`` values there (Optuna's
  rule, the judged run included; so the first run at a rung always goes on, and while fewer than ``reduction``
  runs reached it only a run better than all before it does). A decision is final: a run kept at a rung is not
  judged there again (``passed`` records it, and the caller stores it between polls). Runs that reach a rung in
  the same poll are judged together, so the order in which a poll lists them does not matter.
- ``median`` (Optuna's MedianPruner, Ray's MedianStoppingRule): a run whose best value by epoch ``e`` is worse than
  the median of the other runs' values at ``e``. ``e`` is the run's last epoch, or the latest epoch that at least
  ``MEDIAN_MIN_RUNS`` other runs reached when the run is ahead of them (a cron poll sees runs at different epochs;
  Ray waits for 3 samples, Optuna for 5 completed trials, which in a sweep that starts every run at once would be
  never). Runs of every state count as "other runs": finished and stopped curves are evidence too.

Both: no run is judged before ``min_epochs``; the run with the best value so far (over every curve, finished runs
included) is never stopped; only running runs are stopped, and never one the user brought back (``keep``); a
non-finite value (nan, inf) counts as the worst. The decision depends only on the input, not on its order.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Optional

if TYPE_CHECKING:
    from hpc_sweep.sweep.options import EarlyStopSpec

RUNNING, FINISHED, STOPPED = "running", "finished", "stopped"
STATES = (RUNNING, FINISHED, STOPPED)
MEDIAN_MIN_RUNS = 3  # other runs needed at an epoch before the median means anything (Ray's min_samples_required)
_SHORT = {"val_loss": "val", "train_loss": "train"}


@dataclass(frozen=True)
class Curve:
    """One config's curve of the rule's metric: ``points`` are (epoch, value) pairs, each epoch once (epochs
    without a value are left out). ``state``: running (may be stopped), finished (ended any way but by this rule),
    stopped (by this rule). ``keep``: the user resubmitted it after a stop: never stop it again."""

    name: str
    state: str
    points: tuple
    keep: bool = False


@dataclass(frozen=True)
class Stop:
    name: str
    epoch: int         # the epoch it was judged at (the rung, or the median's epoch)
    value: float       # its best value by that epoch
    threshold: float   # asha: the worst value the rung keeps; median: the median it had to beat
    reason: str


@dataclass(frozen=True)
class Decision:
    stops: tuple                                  # Stop, ordered by name
    passed: dict = field(default_factory=dict)    # asha: config -> the highest rung it was judged at and kept


class _Run:
    """A curve made ready for judging: epochs ascending, non-finite values as +inf, the running best kept so that
    "best by epoch e" is one bisection (a poll judges thousands of curves)."""

    def __init__(self, curve: Curve):
        if curve.state not in STATES:
            raise ValueError(f"{curve.name}: state {curve.state!r} is not one of {STATES}")
        values = {int(e): _finite_or_inf(v) for e, v in curve.points if v is not None}
        self.name, self.state, self.keep = curve.name, curve.state, curve.keep
        self.epochs = sorted(values)
        self.values = [values[e] for e in self.epochs]
        self.bests = list(itertools.accumulate(self.values, min))
        self.last = self.epochs[-1] if self.epochs else 0
        self.best = self.bests[-1] if self.bests else None

    def best_by(self, epoch: int) -> Optional[float]:
        """The lowest value at or before ``epoch``; None before the first value."""
        at = bisect.bisect_right(self.epochs, epoch)
        return self.bests[at - 1] if at else None

    def value_at(self, epoch: int) -> Optional[float]:
        """The value of the latest epoch at or before ``epoch`` (a curve logged every k epochs still counts)."""
        at = bisect.bisect_right(self.epochs, epoch)
        return self.values[at - 1] if at else None

    @property
    def stoppable(self) -> bool:
        return self.state == RUNNING and not self.keep


def _finite_or_inf(value) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.inf


def rungs_for(spec: "EarlyStopSpec", max_epoch: Optional[int], last_epoch: int = 0) -> tuple:
    """The asha rungs: the configured ones, or ``min_epochs × reduction^k`` below ``max_epoch`` (unknown: up to
    ``last_epoch``, the furthest any curve went, which is as far as a rung can matter now)."""
    if spec.rungs:
        return tuple(r for r in spec.rungs if r >= spec.min_epochs)
    limit = max_epoch if max_epoch is not None else last_epoch + 1
    rungs, rung = [], spec.min_epochs
    while rung < limit:
        rungs.append(rung)
        rung *= spec.reduction
    return tuple(rungs)


def decide(curves: Iterable[Curve], spec: "EarlyStopSpec", passed: Optional[Mapping[str, int]] = None,
           max_epoch: Optional[int] = None) -> Decision:
    """Which running configs the rule stops now. ``passed``: what the last decision returned (asha's record of
    the rungs each run was judged at and kept); ``max_epoch``: the runs' last epoch, for the default rungs."""
    runs = _prepare(curves)
    protected = _current_best(runs)
    if spec.rule == "asha":
        return _asha(runs, spec, dict(passed or {}), protected, max_epoch)
    if spec.rule == "median":
        return Decision(stops=_median(runs, spec, protected), passed=dict(passed or {}))
    raise ValueError(f"unknown early-stopping rule {spec.rule!r}")


def _prepare(curves: Iterable[Curve]) -> list:
    runs = sorted((_Run(c) for c in curves), key=lambda r: r.name)
    for before, after in zip(runs, runs[1:]):
        if before.name == after.name:
            raise ValueError(f"config {before.name} appears twice")
    return runs


def _current_best(runs: list) -> set:
    """Names of the runs holding the best finite value so far (all of them on a tie)."""
    bests = {r.name: r.best for r in runs if r.best is not None and math.isfinite(r.best)}
    if not bests:
        return set()
    low = min(bests.values())
    return {name for name, value in bests.items() if value == low}


# --- asha --------------------------------------------------------------------------------------------------

def _asha(runs: list, spec: "EarlyStopSpec", passed: dict, protected: set, max_epoch: Optional[int]) -> Decision:
    stops: list = []
    stopped: set = set()
    for rung in rungs_for(spec, max_epoch, max((r.last for r in runs), default=0)):
        earlier = [r for r in runs if _judged_before(r, rung, passed)]
        arrivals = [r for r in runs if r.state == RUNNING and r.name not in stopped and r.last >= rung
                    and passed.get(r.name, 0) < rung and r.best_by(rung) is not None]
        if not arrivals:
            continue
        values = sorted([r.best_by(rung) for r in earlier] + [r.best_by(rung) for r in arrivals])
        keeps = max(1, len(values) // spec.reduction)
        threshold = values[keeps - 1]
        for run in arrivals:
            value = run.best_by(rung)
            if run.stoppable and run.name not in protected and (value > threshold or math.isinf(value)):
                reason = _asha_reason(spec.metric, value, rung, threshold, keeps, len(values))
                stops.append(Stop(run.name, rung, value, threshold, reason))
                stopped.add(run.name)
            else:
                passed[run.name] = rung
    return Decision(stops=tuple(sorted(stops, key=lambda s: s.name)), passed=passed)


def _judged_before(run: _Run, rung: int, passed: Mapping[str, int]) -> bool:
    """Reached ``rung`` before this poll: a running run kept there, or an ended run whose curve got that far."""
    if run.best_by(rung) is None or run.last < rung:
        return False
    return run.state != RUNNING or passed.get(run.name, 0) >= rung


def _asha_reason(metric: str, value: float, rung: int, threshold: float, keeps: int, count: int) -> str:
    name = _SHORT.get(metric, metric)
    if math.isinf(value):
        return f"early stop: no finite {name} by epoch {rung}"
    mine, cut = _pair(value, threshold)
    return (f"early stop: best {name} {mine} at epoch {rung}; rung {rung} keeps ≤ {cut} "
            f"(best {keeps} of {count})")


# --- median ------------------------------------------------------------------------------------------------

def _median(runs: list, spec: "EarlyStopSpec", protected: set) -> tuple:
    stops = []
    lasts = sorted((r.last for r in runs if r.epochs), reverse=True)
    at_epoch: dict = {}  # epoch -> sorted values there of every run that reached it (computed once per epoch)
    for run in runs:
        if not run.stoppable or run.name in protected or run.last < spec.min_epochs:
            continue
        epoch = _median_epoch(run, lasts)
        if epoch is None or epoch < spec.min_epochs:
            continue
        if epoch not in at_epoch:
            at_epoch[epoch] = sorted(v for v in (o.value_at(epoch) for o in runs if o.last >= epoch) if v is not None)
        others = list(at_epoch[epoch])
        own = run.value_at(epoch)
        if own is not None:  # the run itself is in the list: take it out
            del others[bisect.bisect_left(others, own)]
        value = run.best_by(epoch)
        if len(others) < MEDIAN_MIN_RUNS or value is None:
            continue
        median = statistics.median(others)
        if value > median or math.isinf(value):
            reason = _median_reason(spec.metric, value, epoch, median, len(others))
            stops.append(Stop(run.name, epoch, value, median, reason))
    return tuple(stops)


def _median_epoch(run: _Run, lasts: list) -> Optional[int]:
    """The run's last epoch, or, when it is ahead, the latest epoch MEDIAN_MIN_RUNS other runs reached
    (``lasts``: every run's last epoch, descending, the run's own included)."""
    others = lasts[:MEDIAN_MIN_RUNS + 1]  # the furthest runs are all that matter
    if run.last in others:
        others.remove(run.last)
    others = others[:MEDIAN_MIN_RUNS]
    if len(others) < MEDIAN_MIN_RUNS:
        return None
    return min(run.last, others[MEDIAN_MIN_RUNS - 1])


def _median_reason(metric: str, value: float, epoch: int, median: float, count: int) -> str:
    name = _SHORT.get(metric, metric)
    if math.isinf(value):
        return f"early stop: no finite {name} by epoch {epoch}"
    mine, mid = _pair(value, median)
    return f"early stop: best {name} {mine} at epoch {epoch}; median of {count} other runs at epoch {epoch} is {mid}"


def _pair(a: float, b: float) -> tuple:
    """Both numbers with 3 significant digits, or as many more as it takes to tell them apart."""
    for digits in range(3, 10):
        left, right = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if left != right or a == b:
            break
    return left, right
