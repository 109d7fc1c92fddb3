"""Early-stopping rules (hpc_sweep/track/early_stop.py): worked examples, then properties over simulated sweeps.

The simulation: runs with fixed full curves start at different times; a poll every few time units sees each
run's curve up to then, asks the rule, freezes the curves of the runs it stops, and stores asha's ``passed`` for
the next poll, as the poll will.
"""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpc_sweep.track.early_stop import MEDIAN_MIN_RUNS, Curve, decide, rungs_for
from hpc_sweep.sweep.options import EarlyStopSpec

ASHA = EarlyStopSpec(rule="asha", metric="val_loss", min_epochs=10, reduction=3)
MEDIAN = EarlyStopSpec(rule="median", metric="val_loss", min_epochs=5)


def flat(name: str, value: float, epochs: int, state: str = "running", keep: bool = False) -> Curve:
    return Curve(name, state, tuple((e, value) for e in range(1, epochs + 1)), keep=keep)


def names(decision) -> list:
    return [stop.name for stop in decision.stops]


# --- asha, by example -------------------------------------------------------------------------------------------

def test_asha_keeps_the_best_third_of_runs_reaching_a_rung_together():
    curves = [flat(f"config{i:03d}", float(i), 12) for i in range(1, 10)]
    decision = decide(curves, ASHA, max_epoch=100)
    assert names(decision) == [f"config{i:03d}" for i in range(4, 10)]
    assert decision.passed == {"config001": 10, "config002": 10, "config003": 10}
    worst = decision.stops[-1]
    assert (worst.epoch, worst.value, worst.threshold) == (10, 9.0, 3.0)
    assert worst.reason == "early stop: best val 9 at epoch 10; rung 10 keeps ≤ 3 (best 3 of 9)"


def test_asha_judges_a_run_once_at_a_rung_against_those_that_reached_it_before():
    """Ray's _Bracket example in minimising form: 2 goes on (first at the rung), 4 stops (worse than all before it
    while fewer than `reduction` reached the rung), 1 goes on, and 2 is not judged again when 1 arrives."""
    spec = EarlyStopSpec(rule="asha", min_epochs=1, reduction=2)
    first = decide([flat("a", 2.0, 1)], spec, max_epoch=10)
    assert names(first) == [] and first.passed == {"a": 1}
    second = decide([flat("a", 2.0, 1), flat("b", 4.0, 1)], spec, first.passed, max_epoch=10)
    assert names(second) == ["b"]
    third = decide([flat("a", 2.0, 1), flat("b", 4.0, 1, "stopped"), flat("c", 1.0, 1)], spec, second.passed,
                   max_epoch=10)
    assert names(third) == [] and third.passed == {"a": 1, "c": 1}


def test_asha_judges_the_best_value_up_to_the_rung_not_later_epochs():
    early_good = Curve("a", "running", ((1, 1.0), (10, 1.0), (11, 9.0)))
    late_bad = Curve("b", "running", ((1, 5.0), (10, 5.0), (11, 0.5)))  # the overall best: protected
    others = [flat(f"c{i}", 3.0 + i, 11) for i in range(4)]
    decision = decide([early_good, late_bad, *others], ASHA, max_epoch=100)
    assert "a" not in names(decision)
    assert "b" not in names(decision)  # worse at rung 10, but the best so far: never stopped
    assert decision.passed["b"] == 10


def test_a_run_that_jumped_two_rungs_in_one_poll_is_judged_at_the_lower_first():
    done = [flat(f"d{i}", float(i), 40, "finished") for i in range(1, 7)]
    decision = decide([*done, flat("j", 10.0, 34)], ASHA, max_epoch=100)
    assert [(s.name, s.epoch, s.threshold) for s in decision.stops] == [("j", 10, 2.0)]


def test_the_current_best_and_kept_runs_are_never_stopped():
    finished = [flat(f"d{i}", 1.0 + i, 20, "finished") for i in range(6)]
    kept = flat("k", 50.0, 12, keep=True)
    decision = decide([*finished, kept, flat("x", 40.0, 12)], ASHA, max_epoch=100)
    assert names(decision) == ["x"]
    assert decision.passed == {"k": 10}


def test_a_run_with_no_finite_value_is_stopped_at_its_rung():
    nan_run = flat("n", math.nan, 11)
    decision = decide([nan_run, flat("a", 1.0, 11), flat("b", 1.0, 11)], ASHA, max_epoch=100)
    assert names(decision) == ["n"]  # (a and b tie at the threshold: both go on)
    assert decision.stops[0].reason == "early stop: no finite val by epoch 10"


def test_close_values_are_printed_apart():
    curves = [flat("a", 0.123401, 10), flat("b", 0.123456, 10)]
    reason = decide(curves, EarlyStopSpec(rule="asha", metric="train_loss", min_epochs=10, reduction=2),
                    max_epoch=50).stops[0].reason
    assert "best train 0.1235 at epoch 10; rung 10 keeps ≤ 0.1234" in reason  # 3 digits would print 0.123 twice


@pytest.mark.parametrize("max_epoch, rungs", [(100, (10, 30, 90)), (90, (10, 30)), (10, ()), (None, (10, 30))])
def test_default_rungs_are_min_epochs_times_reduction_powers_below_max_epoch(max_epoch, rungs):
    assert rungs_for(ASHA, max_epoch, last_epoch=45) == rungs


def test_configured_rungs_replace_the_default():
    spec = EarlyStopSpec(rule="asha", min_epochs=5, reduction=2, rungs=(5, 7, 50))
    assert rungs_for(spec, 20) == (5, 7, 50)
    decision = decide([flat("a", 1.0, 7), flat("b", 2.0, 7)], spec, {"a": 5, "b": 5}, max_epoch=20)
    assert [(s.name, s.epoch) for s in decision.stops] == [("b", 7)]


# --- median, by example -----------------------------------------------------------------------------------------

def test_median_stops_a_run_worse_than_the_median_of_the_others_at_its_epoch():
    curves = [flat("a", 1.0, 8), flat("b", 2.0, 8), flat("c", 3.0, 8), flat("d", 1.5, 8)]
    decision = decide(curves, MEDIAN)
    assert names(decision) == ["b", "c"]  # b: 2 > median(1, 1.5, 3); c: 3 > median(1, 1.5, 2); d: 1.5 < 2
    assert decision.stops[1].reason == ("early stop: best val 3 at epoch 8; median of 3 other runs at epoch 8 "
                                        "is 1.5")


def test_median_needs_three_other_runs_and_min_epochs():
    assert names(decide([flat("a", 1.0, 8), flat("b", 2.0, 8), flat("c", 3.0, 8)], MEDIAN)) == []
    young = [flat("a", 1.0, 4), flat("b", 2.0, 4), flat("c", 3.0, 4), flat("d", 9.0, 4)]
    assert names(decide(young, MEDIAN)) == []


def test_median_judges_a_run_ahead_of_the_others_where_enough_of_them_are():
    ahead = Curve("x", "running", tuple((e, 5.0 if e <= 6 else 0.1) for e in range(1, 21)))
    others = [flat("a", 1.0, 6, "finished"), flat("b", 2.0, 6, "finished"), flat("c", 3.0, 9, "finished")]
    # at epoch 20 only x is there; at 6 all three others are, and x's best by epoch 6 (5.0) is worse than 2.0 —
    # but x holds the best value so far (0.1), so it goes on
    assert names(decide([ahead, *others], MEDIAN)) == []
    slow = Curve("y", "running", tuple((e, 5.0) for e in range(1, 21)))
    decision = decide([slow, *others], MEDIAN)
    assert [(s.name, s.epoch, s.threshold) for s in decision.stops] == [("y", 6, 2.0)]


def test_duplicate_names_and_unknown_states_are_refused():
    with pytest.raises(ValueError, match="twice"):
        decide([flat("a", 1.0, 3), flat("a", 2.0, 3)], ASHA)
    with pytest.raises(ValueError, match="state"):
        decide([flat("a", 1.0, 3, state="pending")], ASHA)


# --- properties over simulated sweeps --------------------------------------------------------------------------

value = st.one_of(st.floats(0.0, 10.0), st.just(math.nan), st.sampled_from([0.5, 1.0, 2.0]))
run = st.tuples(st.lists(value, min_size=1, max_size=40), st.integers(0, 20), st.integers(0, 9))
rule = st.one_of(
    st.builds(EarlyStopSpec, rule=st.just("asha"), min_epochs=st.integers(1, 6), reduction=st.integers(2, 4)),
    st.builds(EarlyStopSpec, rule=st.just("asha"), min_epochs=st.integers(1, 3), reduction=st.integers(2, 4),
              rungs=st.lists(st.integers(3, 30), min_size=1, max_size=4, unique=True).map(lambda r: tuple(sorted(r)))),
    st.builds(EarlyStopSpec, rule=st.just("median"), min_epochs=st.integers(1, 6)),
)


def simulate(runs: list, spec: EarlyStopSpec, interval: int, check) -> dict:
    """Poll every ``interval`` time units until every run ended; ``check(curves, decision, passed, max_epoch)``
    after each poll (``passed``: what the poll was given). Returns run name -> Stop."""
    full = {f"r{i:02d}": values for i, (values, _, _) in enumerate(runs)}
    start = {f"r{i:02d}": begin for i, (_, begin, _) in enumerate(runs)}
    keep = {f"r{i:02d}": spare == 0 for i, (_, _, spare) in enumerate(runs)}  # about one in ten resubmitted
    max_epoch = max(len(v) for v in full.values())
    stopped: dict = {}
    passed: dict = {}
    time = 0
    while True:
        curves = []
        for name, values in full.items():
            seen = min(len(values), time - start[name]) if name not in stopped else stopped[name].seen
            if seen <= 0:
                continue
            state = "stopped" if name in stopped else ("finished" if seen == len(values) else "running")
            curves.append(Curve(name, state, tuple(enumerate(values[:seen], 1)), keep=keep[name]))
        decision = decide(curves, spec, passed, max_epoch=max_epoch)
        check(curves, decision, passed, max_epoch)
        for stop in decision.stops:
            stopped[stop.name] = _Stopped(stop, len(next(c for c in curves if c.name == stop.name).points))
        passed = decision.passed
        if curves and all(c.state != "running" for c in curves) and len(curves) == len(full):
            return {name: s.stop for name, s in stopped.items()}
        time += interval


class _Stopped:
    def __init__(self, stop, seen: int):
        self.stop, self.seen = stop, seen


def best_by(curve: Curve, epoch: int):
    seen = [v if math.isfinite(v) else math.inf for e, v in curve.points if e <= epoch]
    return min(seen) if seen else None


def general_checks(spec: EarlyStopSpec):
    def check(curves, decision, passed, max_epoch):
        by_name = {c.name: c for c in curves}
        finite = [best_by(c, 10**9) for c in curves if c.points]
        finite = [b for b in finite if b is not None and math.isfinite(b)]
        best = min(finite) if finite else None
        for stop in decision.stops:
            curve = by_name[stop.name]
            assert curve.state == "running" and not curve.keep          # only running runs, never kept ones
            assert best is None or best_by(curve, 10**9) != best        # never the current best
            assert stop.epoch >= spec.min_epochs                        # never before min_epochs
            assert curve.points[-1][0] >= stop.epoch                    # judged on epochs it ran
            assert math.isclose(stop.value, best_by(curve, stop.epoch)) or math.isinf(stop.value)
        # deterministic, whatever the order the poll lists the configs in
        assert decide(list(reversed(curves)), spec, passed, max_epoch) == decision
    return check


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(run, min_size=1, max_size=12), spec=rule, interval=st.integers(1, 7))
def test_rules_never_stop_the_best_a_kept_run_or_before_min_epochs(runs, spec, interval):
    simulate(runs, spec, interval, general_checks(spec))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(run, min_size=1, max_size=12), spec=rule, interval=st.integers(1, 7))
def test_a_poll_with_no_new_epochs_stops_nothing_more(runs, spec, interval):
    """A stopped run stays stopped and a decision is not taken twice: asking again with the stops applied and
    the returned `passed` stops nothing."""
    def check(curves, decision, passed, max_epoch):
        stopped = {s.name for s in decision.stops}
        after = [Curve(c.name, "stopped", c.points, c.keep) if c.name in stopped else c for c in curves]
        again = decide(after, spec, decision.passed, max_epoch)
        assert again.stops == () and again.passed == decision.passed
    simulate(runs, spec, interval, check)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(run, min_size=1, max_size=12), spec=rule.filter(lambda s: s.rule == "asha"),
       interval=st.integers(1, 7))
def test_asha_stops_a_run_only_when_a_reduction_th_of_its_rung_did_better(runs, spec, interval):
    """Each run judged at a rung goes on if it is among the best max(1, n // reduction) of the n runs that reached
    the rung by then; so the best run at every rung goes on."""
    def check(curves, decision, passed, max_epoch):
        stopped_now = {s.name: s.epoch for s in decision.stops}
        for stop in decision.stops:
            if math.isinf(stop.value):
                continue
            there = [c for c in curves if c.points and c.points[-1][0] >= stop.epoch
                     and best_by(c, stop.epoch) is not None and stopped_now.get(c.name, stop.epoch) >= stop.epoch]
            better = [c for c in there if best_by(c, stop.epoch) < stop.value]
            assert len(better) >= max(1, len(there) // spec.reduction), (stop, len(there))
    simulate(runs, spec, interval, check)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=30), reduction=st.integers(2, 4))
def test_asha_keeps_at_least_a_reduction_th_of_runs_reaching_a_new_rung_together(values, reduction):
    spec = EarlyStopSpec(rule="asha", min_epochs=5, reduction=reduction)
    curves = [flat(f"r{i:02d}", v, 6) for i, v in enumerate(values)]
    decision = decide(curves, spec, max_epoch=100)
    assert len(values) - len(decision.stops) >= max(1, len(values) // reduction)
    assert set(decision.passed) == {c.name for c in curves} - set(names(decision))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(run, min_size=1, max_size=12), spec=rule.filter(lambda s: s.rule == "median"),
       interval=st.integers(1, 7))
def test_median_stops_only_runs_worse_than_the_median_of_enough_others(runs, spec, interval):
    def check(curves, decision, passed, max_epoch):
        for stop in decision.stops:
            others = [c for c in curves if c.name != stop.name and c.points and c.points[-1][0] >= stop.epoch]
            values = [[v if math.isfinite(v) else math.inf for e, v in c.points if e <= stop.epoch][-1]
                      for c in others]
            assert len(values) >= MEDIAN_MIN_RUNS
            assert stop.value > statistics.median(values) or math.isinf(stop.value)
    simulate(runs, spec, interval, check)
