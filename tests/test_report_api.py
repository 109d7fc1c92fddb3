"""The analysis helpers of hpc_sweep.api (hpc_sweep.results.analysis) and the plot/markdown pieces of
hpc_sweep.results.report, on hand-made records."""

from __future__ import annotations

import math
import random

import pytest

from hpc_sweep.results.analysis import (NO_INFLUENCE, _step_beyond, advise, convergence_flags, failure_groups,
                                        parameter_effects, rank, thin)
from hpc_sweep.results.report import Code, Table, _md_block, make_plots, md_text


def _record(name: str, params: dict, score, state: str = "completed", trend=None) -> dict:
    return {"config": name, "state": state, "attempt": 1, "params": params, "best_val_loss": score,
            "best_epoch": 5 if score is not None else None, "val_loss": score, "train_loss": score, "epoch": 10,
            "max_epoch": 10, "trend": trend, "reason": None, "log": None}


def _random_sweep(n: int = 60) -> list:
    """Random-search samples: lr log-uniform in [1e-5, 1e-2], loss falls with lr; width has no effect."""
    rng = random.Random(7)
    records = []
    for i in range(n):
        lr = float(f"{math.exp(rng.uniform(math.log(1e-5), math.log(1e-2))):.6g}")
        width = rng.choice([64, 128])
        records.append(_record(f"config{i + 1:03d}", {"lr": lr, "width": width}, 0.01 / lr ** 0.3))
    return records


def test_random_samples_are_binned_and_the_edge_is_found():
    effects = parameter_effects(_random_sweep(), ["lr", "width"])
    lr = effects[0]
    assert lr["key"] == "lr" and lr["binned"] and len(lr["levels"]) == 5
    assert sum(level["n"] for level in lr["levels"]) == 60
    assert lr["levels"][-1]["label"].endswith(f"{max(r['params']['lr'] for r in _random_sweep()):g}")
    advice = "\n".join(advise(effects, [], [], [], _random_sweep()))
    top = max(r["params"]["lr"] for r in _random_sweep())
    assert f"lr: the best value, {top:g}, is the largest tried — extend the range beyond {top:g}" in advice


def test_a_flat_parameter_is_to_be_fixed_and_a_dead_value_dropped():
    records = [_record(f"c{i}", {"a": a, "b": b}, 1.0 + a + (0.001 * b if b != 3 else 0))
               for i, (a, b) in enumerate((a, b) for a in (0.0, 0.5, 1.0) for b in (1, 2, 3))]
    records += [_record("c90", {"a": 0.0, "b": 9}, None, state="failed"),
                _record("c91", {"a": 0.5, "b": 9}, None, state="failed")]
    effects = parameter_effects(records, ["a", "b"])
    assert [e["key"] for e in effects] == ["a", "b"] and effects[1]["influence"] < NO_INFLUENCE
    advice = advise(effects, rank({"configs": records}, ["a", "b"]), [], [], records)
    assert any(line.startswith("b makes no measurable difference") and "fix it" in line for line in advice)
    assert "b = 9: none of its 2 runs produced a validation score (failed or nan) — drop this value." in advice


@pytest.mark.parametrize("values,up,expected", [
    ([1e-4, 1e-3, 1e-2], True, 0.1), ([1e-4, 1e-3, 1e-2], False, 1e-5), ([16, 32, 64], True, 128),
    ([0.1, 0.2, 0.3], True, 0.4), ([0.1, 0.2, 0.3], False, 0.05), ([2, 3, 4], False, 1)])
def test_one_step_beyond_the_grid(values, up, expected):
    assert _step_beyond(values, up) == pytest.approx(expected)


def test_zip_partners_share_an_effect():
    records = [_record(f"c{i}", {"w": w, "bs": bs}, 1.0 / w) for i, (w, bs) in enumerate([(32, 4), (64, 2)] * 3)]
    effects = parameter_effects(records, ["w", "bs"], zips=[["w", "bs"]])
    assert {e["key"]: e["together_with"] for e in effects} == {"w": ["bs"], "bs": ["w"]}
    assert effects[0]["influence"] == effects[1]["influence"]


def test_thin_keeps_first_last_and_best():
    rows = [("c", 1, e, 1.0, 1.0 / e if e != 333 else 1e-9) for e in range(1, 1001)]
    thinned = thin(rows, 50)
    epochs = [r[2] for r in thinned]
    assert epochs[0] == 1 and epochs[-1] == 1000 and 333 in epochs and len(thinned) <= 52
    assert epochs == sorted(epochs)
    assert thin(rows[:10], 50) == rows[:10]


def test_flags_and_failure_groups(tmp_path):
    records = [_record("c1", {}, 0.1, trend="flat"), _record("c2", {}, 0.3, trend="flat"),
               _record("c3", {}, 0.2, trend="diverging"), _record("c4", {}, None, trend="nan"),
               dict(_record("c5", {}, None, state="oom"), reason="out of memory (GPU)"),
               dict(_record("c6", {}, None, state="oom"), reason="out  of memory\n(GPU)"),
               _record("c7", {}, None, state="cancelled")]
    flags = {f["config"]: f["flag"] for f in convergence_flags(records, [])}
    assert flags == {"c2": "plateaued", "c3": "diverged", "c4": "nan"}
    (tmp_path / "c5.1.log").write_text("line\nCUDA out of memory\n")
    groups = failure_groups(records, tmp_path)
    assert [(g["reason"], g["configs"], g["example"]) for g in groups] == [("out of memory (GPU)", ["c5", "c6"], "c5")]
    assert groups[0]["log"] == str(tmp_path / "c5.1.log")


def test_plots_survive_mathtext_and_markup_in_values():
    pytest.importorskip("matplotlib")
    hostile = ["$\\frac{1}{0}$", "<b>x</b>", "a$b", "{\"k\": [1, 2]}"]
    records = [_record(f"config{i:03d}", {"v": v}, 0.1 * (i + 1)) for i, v in enumerate(hostile)]
    effects = parameter_effects(records, ["v"])
    ranking = rank({"configs": records}, ["v"])
    curves = {r["config"]: [{"config": r["config"], "attempt": 1, "epoch": e, "train_loss": 1.0 / e,
                             "val_loss": None if e == 2 else float("nan") if e == 3 else 1.0 / e}
                            for e in range(1, 6)] for r in records}
    plots = make_plots({"curves": curves, "effects": effects, "ranking": ranking, "flags": []})
    assert set(plots) == {"curves", "effects"}
    assert all(png[:4] == b"\x89PNG" for png in plots.values())


def test_markdown_escapes_tables_and_fences_logs():
    table = _md_block(Table(["value"], [["a|b<script>"]]), {})
    assert table[-1] == "| a\\|b&lt;script&gt; |"
    code = _md_block(Code("tail", ["```", "end"]), {})
    assert code[2] == "````" and code[-1] == "````"
    assert md_text("two\nlines") == "two lines"
