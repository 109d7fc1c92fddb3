"""A sweep's results as plain records (dicts and lists, no pandas), for notebooks and for `hpc-sweep report`.

    >>> from hpc_sweep.api import load
    >>> with load("my-sweep") as sweep:
    ...     top = sweep.best()                       # the winner, its swept values and its full diff from the base
    ...     table = sweep.ranking()                  # scored configs, best validation loss first
    ...     effects = sweep.effects()                # per parameter: each value's best and median score
    ...     curve = sweep.curves("config007")        # [{'config', 'attempt', 'epoch', 'train_loss', 'val_loss'}]

``pandas.DataFrame(sweep.ranking())`` works if you want a frame. The report is built from these same methods,
so what a notebook computes and what the report shows cannot disagree. Scores, epochs and states are the
values of the status snapshot (``sweep.status()``, the object `hpc-sweep status --format json` prints); run
times and loss curves come straight from the state database. Nothing here changes the sweep: it is opened as a
read session, without the writers' lock, and never writes the state database.

A "score" is a config's best validation loss (``best_val_loss``): lower is better.
"""

from __future__ import annotations

import itertools
import json
import operator
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Union

from hpc_sweep.state.rows import AttemptRow, ConfigRow, CurveRow, columns
from hpc_sweep.state.states import QUEUED, UNSUCCESSFUL, ConfigState

if TYPE_CHECKING:
    from hpc_sweep.session import Session

NO_INFLUENCE = 0.02      # per-value medians within 2 % of the overall median: the parameter does not matter
PLATEAU_FACTOR = 2.0     # "flat" at twice the best score or worse: stuck, not converged
MAX_LEVELS = 10          # more distinct numeric values than this (random sampling) are grouped into bins
BINS = 5
TAIL_LINES = 15
SAME_REASON_MIN = 3      # this many failures with one reason is a pattern worth a line of advice
SHARED_VALUE_SHARE = 0.6


def load(sweep_dir: Union[str, Path] = ".") -> "Sweep":
    """Open the sweep in ``sweep_dir`` (the folder holding sweep.toml). Close it with ``.close()`` or ``with``."""
    from hpc_sweep.session import Session

    return Sweep(Session.open(Path(sweep_dir)))


class Sweep:
    """One sweep's results. Each method returns fresh plain records; ``reload()`` re-reads the database."""

    def __init__(self, session: Session):
        self._session = session
        self.spec = session.spec
        self.paths = session.paths
        self._cache: dict = {}

    # -- plumbing -----------------------------------------------------------------------------------------
    def __enter__(self) -> "Sweep":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def reload(self) -> None:
        """Forget what was read: the next call sees the latest poll."""
        self._cache.clear()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def root(self) -> Path:
        return self.paths.root

    def _cached(self, key: str, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _snap(self) -> dict:
        # One snapshot per load: every method ranks and counts the same numbers, and running configs'
        # elapsed times do not drift between two calls.
        from hpc_sweep.results.status import snapshot

        return self._cached("snapshot", lambda: snapshot(self._session))

    def keys(self) -> list[str]:
        """The swept dotted keys: sweep.toml's order, then keys only older (retired) configs carry."""
        return list(self._cached("keys", self._make_keys))

    def _make_keys(self) -> list[str]:
        keys = dict.fromkeys(self.spec.swept_keys)
        for rec in self._snap()["configs"]:
            keys.update(dict.fromkeys(rec["params"]))
        return list(keys)

    # -- the records ----------------------------------------------------------------------------------------
    def status(self) -> dict:
        """The status snapshot: sweep, scheduler, polled_at, counts, configs (as `status --format json`)."""
        return _clone(self._snap())

    def configs(self) -> list[dict]:
        """Every config's status record plus gpus, shape, file, attempts, run_s (all attempts' seconds) and
        gpu_hours (run_s × gpus); run_s/gpu_hours are None where no attempt's duration is known."""
        return _clone(self._configs())

    def curves(self, config: Optional[str] = None, max_points: Optional[int] = None) -> list[dict]:
        """Loss curve rows {config, attempt, epoch, train_loss, val_loss} of one config or all, in order.
        ``max_points`` thins each config's curve to about that many rows, keeping its first, last and best
        validation epochs: enough to plot thousands of long runs without holding every epoch in memory."""
        if max_points is None:
            return [row._asdict() for row in self._session.store.epochs(config)]
        where, args = ("WHERE config = ?", (config,)) if config is not None else ("", ())
        # Read as a stream of plain tuples, one config's rows at a time: memory stays at one curve, however long
        # the sweep's history.
        cursor = self._session.store.conn.execute(f"SELECT {columns(CurveRow)} FROM epochs {where} "
                                                  "ORDER BY config, attempt, epoch", args)
        thinned: list[dict] = []
        for _, rows in itertools.groupby(cursor, key=operator.itemgetter(0)):
            thinned += [dict(zip(CurveRow._fields, row)) for row in thin(list(rows), max_points)]
        return thinned

    def ranking(self) -> list[dict]:
        """Scored configs, best first (the order of `status --sort best`): rank, config, state, best_val_loss,
        best_epoch, val_loss, train_loss, epoch, max_epoch, trend and params (the swept keys only)."""
        return _clone(self._ranking())

    def best(self) -> Optional[dict]:
        """The top of the ranking plus file and diff: every dotted key where its config file differs from the
        base ({key, base, value, in_base, in_config, origin: swept | fixed | hpc-sweep}). None before any score."""
        return _clone(self._cached("best", self._make_best))

    def effects(self) -> list[dict]:
        """Per swept parameter, most influential first: key, levels, influence, best_value, best_label, numeric,
        binned and together_with (keys of the same [[zip]] group, which move with it and share its effect).

        A level is one value (or, for more than MAX_LEVELS distinct numbers, a bin [low, high]): value, label,
        n (configs), scored, no_score (ended without a score), best, median, best_config, and scores with their
        configs, best first. influence is the spread of the levels' medians divided by the median of all
        scores; None when fewer than two levels have a score."""
        return _clone(self._effects())

    def progress(self) -> dict:
        """Counts per state, GPU-hours used, and the ETA of what is left (see :func:`progress_summary`)."""
        return _clone(progress_summary(self._configs(), self._snap()["counts"]))

    def convergence(self) -> list[dict]:
        """Configs whose curve went wrong: flag 'nan', 'diverged' (trend diverging) or 'plateaued' (flat at
        PLATEAU_FACTOR × the best score or worse)."""
        return _clone(self._flags())

    def failures(self, tail: int = TAIL_LINES) -> list[dict]:
        """Configs that ended without success (:data:`hpc_sweep.state.states.UNSUCCESSFUL`) grouped by reason, most
        common first: reason, states, count, configs, example, log (logs/<config>.<attempt>.log, else the trainer's
        log) and tail (its last ``tail`` lines)."""
        return [dict(_clone(group), tail=_tail(group["log"], tail)) for group in self._failures()]

    def advice(self) -> list[str]:
        """Plain advice the data supports (grid edges, parameters that do not matter, repeated failures...)."""
        return advise(self._effects(), self._ranking(), self._flags(), self._failures(), self._snap()["configs"])

    # -- cached, shared (not copied) ------------------------------------------------------------------------
    def _configs(self) -> list[dict]:
        return self._cached("configs", self._make_configs)

    def _make_configs(self) -> list[dict]:
        store = self._session.store
        rows = {row.name: row for row in store.configs()}
        attempts: dict = {}
        for att in store.attempts():
            attempts.setdefault(att.config, []).append(att)
        now = time.time()
        return [_config_record(rec, rows.get(rec["config"]), attempts.get(rec["config"], []), now)
                for rec in self._snap()["configs"]]

    def _ranking(self) -> list[dict]:
        return self._cached("ranking", lambda: rank(self._snap(), self.keys()))

    def _effects(self) -> list[dict]:
        zips = [list(group) for group in self.spec.zips]
        return self._cached("effects", lambda: parameter_effects(self._snap()["configs"], self.keys(), zips))

    def _flags(self) -> list[dict]:
        return self._cached("flags", lambda: convergence_flags(self._snap()["configs"], self.keys()))

    def _failures(self) -> list[dict]:
        return self._cached("failures", lambda: failure_groups(self._snap()["configs"], self.paths.logs))

    def _make_best(self) -> Optional[dict]:
        ranking = self._ranking()
        if not ranking:
            return None
        top = dict(ranking[0])
        row = self._session.store.config(top["config"])
        top["file"] = row.path if row else None
        top["diff"], top["diff_error"] = None, None
        try:
            top["diff"] = config_diff(self.spec.base, Path(row.path), row.params, self.spec.fixed)
        except Exception as exc:  # a deleted or hand-edited config file must not sink the whole report
            top["diff_error"] = f"cannot compare {top['file']} with the base: {exc}"
        return top


def _clone(value: Any) -> Any:
    """A copy of JSON-like records (dicts, lists, scalars) for the caller to change freely; several times
    faster than copy.deepcopy on 10,000 status records."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def thin(rows: list, max_points: int) -> list:
    """Every k-th row of one curve so about ``max_points`` remain, plus the last and the best validation row
    (column 4), in their original order."""
    if len(rows) <= max_points:
        return rows
    stride = -(-len(rows) // max(1, max_points))
    keep = set(range(0, len(rows), stride)) | {len(rows) - 1}
    scored = [i for i, row in enumerate(rows) if row[4] is not None]
    if scored:
        keep.add(min(scored, key=lambda i: rows[i][4]))
    return [rows[i] for i in sorted(keep)]


# -- configs and progress ---------------------------------------------------------------------------------------
def attempt_seconds(att: AttemptRow, now: float) -> Optional[float]:
    """How long an attempt ran: the scheduler's elapsed, else end (or now) minus start; None if never known."""
    if att.elapsed is not None:
        return float(att.elapsed)
    if att.started_at:
        return max(0.0, (att.ended_at or now) - att.started_at)
    return None


def _config_record(rec: dict, row: Optional[ConfigRow], attempts: list[AttemptRow], now: float) -> dict:
    gpus = (row.gpus if row else 0) or 0
    seconds = [attempt_seconds(a, now) for a in attempts]
    known = [s for s in seconds if s is not None]
    # An attempt that ran (or ended) with no duration anywhere: GPU-hours are a lower bound then.
    unknown = sum(1 for a, s in zip(attempts, seconds)
                  if s is None and a.state not in QUEUED | {ConfigState.CANCELLED, ConfigState.LOST})
    run_s = sum(known) if known else None
    return dict(rec, gpus=gpus, shape=row.shape if row else None, file=row.path if row else None,
                attempts=len(attempts), run_s=run_s,
                gpu_hours=None if run_s is None else run_s * gpus / 3600.0, unknown_durations=unknown)


def progress_summary(configs: list[dict], counts: dict) -> dict:
    """counts, total, gpu_hours/run_hours used (attempts with a known duration), unknown_durations, mean_run_s
    of completed configs, remaining (queued + running), remaining_run_s and remaining_gpu_hours (running configs'
    own ETA, mean_run_s for each queued one), and eta_s: wall time left if as many run at once as run now.
    remaining_run_s/eta_s are None when they cannot be estimated (nothing completed yet). stopped and
    epochs_saved: the runs [early_stop] ended, and the epochs they did not train."""
    done = [c["run_s"] for c in configs if c["state"] == ConfigState.COMPLETED and c["run_s"]]
    mean = statistics.fmean(done) if done else None
    running = [c for c in configs if c["state"] == ConfigState.RUNNING]
    queued = [c for c in configs if c["state"] in QUEUED]
    left = [_left_s(c, mean) for c in running] + [mean for _ in queued]
    gpus_left = [c["gpus"] for c in running + queued]
    known = None not in left
    remaining = sum(left) if known else None  # type: ignore[arg-type]
    return {
        "total": len(configs), "counts": dict(counts),
        "gpu_hours": sum(c["gpu_hours"] or 0.0 for c in configs),
        "run_hours": sum(c["run_s"] or 0.0 for c in configs) / 3600.0,
        "unknown_durations": sum(c["unknown_durations"] for c in configs),
        "mean_run_s": mean, "running": len(running), "queued": len(queued),
        "remaining": len(running) + len(queued),
        "remaining_run_s": remaining,
        "remaining_gpu_hours": (sum(s * g for s, g in zip(left, gpus_left)) / 3600.0) if known else None,
        "eta_s": _wall_eta(left, len(running)) if known else None,
        "stopped": sum(1 for c in configs if c["state"] == ConfigState.STOPPED),
        "epochs_saved": sum(c.get("epochs_saved") or 0 for c in configs),
    }


def _left_s(cfg: dict, mean: Optional[float]) -> Optional[float]:
    if cfg.get("eta_s") is not None:
        return float(cfg["eta_s"])
    if mean is not None:  # no epochs yet: a typical run minus what it has had
        return max(0.0, mean - (cfg.get("elapsed_s") or 0))
    return None


def _wall_eta(left: list, running: int) -> float:
    if not left:
        return 0.0
    if running == 0:
        return float(sum(left))  # nothing running now: no parallelism to assume
    longest_running = max(left[:running])
    return max(longest_running, sum(left) / running)


# -- ranking and the best config ------------------------------------------------------------------------------
def rank(snapshot: dict, keys: Iterable[str]) -> list[dict]:
    """Scored configs in `status --sort best` order, numbers exactly as in the snapshot."""
    from hpc_sweep.results.status import select

    keys = list(keys)
    rows = [r for r in select(snapshot, (), "best") if r["best_val_loss"] is not None]
    return [{"rank": n, "config": r["config"], "state": r["state"], "best_val_loss": r["best_val_loss"],
             "best_epoch": r["best_epoch"], "val_loss": r["val_loss"], "train_loss": r["train_loss"],
             "epoch": r["epoch"], "max_epoch": r["max_epoch"], "trend": r["trend"],
             "params": {k: r["params"].get(k) for k in keys}} for n, r in enumerate(rows, 1)]


def config_diff(base_file: Path, config_file: Path, params: dict, fixed: dict) -> list[dict]:
    """Every dotted key whose value differs between the base and a config file, in the config's order."""
    from hpc_sweep.common.dotted import iter_leaves
    from hpc_sweep.common.formats import load_structured

    base = dict(iter_leaves(load_structured(Path(base_file), "base config")))
    conf = dict(iter_leaves(load_structured(Path(config_file))))
    diff = []
    for key in list(conf) + [k for k in base if k not in conf]:
        if key in base and key in conf and base[key] == conf[key] and type(base[key]) is type(conf[key]):
            continue
        if key in base and key in conf and base[key] == conf[key] and _is_number(base[key]):
            continue  # 1 and 1.0 are the same setting
        origin = "swept" if key in params else "fixed" if key in fixed else "hpc-sweep"
        diff.append({"key": key, "base": base.get(key), "value": conf.get(key), "in_base": key in base,
                     "in_config": key in conf, "origin": origin})
    order = {"swept": 0, "fixed": 1, "hpc-sweep": 2}
    return sorted(diff, key=lambda d: order[d["origin"]])


# -- parameter effects ----------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _level_key(value: Any) -> tuple:
    """Values that are the same setting group together: 1 and 1.0 do, True and 1 do not."""
    if isinstance(value, bool):
        return ("b", value)
    if _is_number(value):
        return ("n", float(value))
    return ("j", json.dumps(value, sort_keys=True, default=str))


def value_label(value: Any) -> str:
    """How a parameter value reads in a table: 0.001, true, 64x0e+32x1e, [1, 2]; '(base)' when not set."""
    if value is None:
        return "(base)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, default=str)


def parameter_effects(records: list[dict], keys: list[str], zips: Optional[list] = None) -> list[dict]:
    """Marginal effect of each key over status records (see :meth:`Sweep.effects`), most influential first."""
    scores = [r["best_val_loss"] for r in records if r["best_val_loss"] is not None]
    overall = statistics.median(scores) if scores else None
    effects = [_effect(records, key, overall) for key in keys]
    for effect in effects:
        group = next((g for g in (zips or []) if effect["key"] in g), [])
        effect["together_with"] = [k for k in group if k != effect["key"]]
    ranked = sorted(enumerate(effects), key=lambda p: (p[1]["influence"] is None, -(p[1]["influence"] or 0), p[0]))
    return [effect for _, effect in ranked]


def _effect(records: list[dict], key: str, overall: Optional[float]) -> dict:
    values = [r["params"].get(key) for r in records]
    present = [v for v in values if v is not None]
    numeric = bool(present) and all(_is_number(v) for v in present)
    distinct = sorted({float(v) for v in present}) if numeric else []
    bins = _bins(distinct) if len(distinct) > MAX_LEVELS else None
    levels = _levels(records, values, bins, numeric)
    medians = [lv["median"] for lv in levels if lv["median"] is not None]
    influence = None
    if len(medians) >= 2 and overall:
        influence = (max(medians) - min(medians)) / abs(overall)
    best = min((lv for lv in levels if lv["median"] is not None), key=lambda lv: lv["median"], default=None)
    return {"key": key, "levels": levels, "influence": influence, "numeric": numeric, "binned": bins is not None,
            "best_value": best["value"] if best else None, "best_label": best["label"] if best else None}


def _bins(distinct: list[float]) -> list[tuple[float, float]]:
    """Up to BINS ranges holding about as many distinct values each (random samples are all distinct)."""
    size = -(-len(distinct) // BINS)
    return [(chunk[0], chunk[-1]) for chunk in (distinct[i:i + size] for i in range(0, len(distinct), size))]


def _levels(records: list[dict], values: list, bins: Optional[list], numeric: bool) -> list[dict]:
    groups: dict = {}
    for rec, value in zip(records, values):
        if bins is not None and value is not None:
            index = next(i for i, (lo, hi) in enumerate(bins) if lo <= float(value) <= hi)
            key, shown = ("bin", index), [bins[index][0], bins[index][1]]
        else:
            key, shown = _level_key(value), value
        groups.setdefault(key, (shown, []))[1].append(rec)
    levels = [_level(shown, recs, bins is not None) for shown, recs in groups.values()]
    if numeric:  # numbers read in order; other values in the order the sweep lists them
        levels.sort(key=lambda lv: (lv["value"] is not None, _sort_number(lv["value"])))
    return levels


def _sort_number(value: Any) -> float:
    if value is None:
        return float("-inf")
    return float(value[0] if isinstance(value, list) else value)


def _level(value: Any, recs: list[dict], binned: bool) -> dict:
    scored = sorted((r for r in recs if r["best_val_loss"] is not None), key=lambda r: r["best_val_loss"])
    scores = [r["best_val_loss"] for r in scored]
    ended = [r for r in recs if r["best_val_loss"] is None and r["state"] not in QUEUED | {ConfigState.RUNNING}]
    label = f"{value[0]:g} – {value[1]:g}" if binned and value is not None else value_label(value)
    return {"value": value, "label": label, "n": len(recs), "scored": len(scores), "no_score": len(ended),
            "best": scores[0] if scores else None, "median": statistics.median(scores) if scores else None,
            "best_config": scored[0]["config"] if scored else None, "scores": scores,
            "configs": [r["config"] for r in scored]}


# -- convergence and failures ----------------------------------------------------------------------------------
def convergence_flags(records: list[dict], keys: list[str]) -> list[dict]:
    scores = [r["best_val_loss"] for r in records if r["best_val_loss"] is not None]
    best = min(scores) if scores else None
    flagged = []
    for rec in records:
        flag = _flag(rec, best)
        if flag:
            flagged.append({"config": rec["config"], "flag": flag, "state": rec["state"], "trend": rec["trend"],
                            "best_val_loss": rec["best_val_loss"], "val_loss": rec["val_loss"],
                            "epoch": rec["epoch"], "max_epoch": rec["max_epoch"],
                            "params": {k: rec["params"].get(k) for k in keys}})
    return flagged


def _flag(rec: dict, best: Optional[float]) -> Optional[str]:
    trend = rec.get("trend")
    if trend == "nan":
        return "nan"
    if trend == "diverging":
        return "diverged"
    score = rec["best_val_loss"]
    if trend == "flat" and score is not None and best is not None and best > 0 and score >= PLATEAU_FACTOR * best:
        return "plateaued"
    return None


def failure_groups(records: list[dict], logs_dir: Path) -> list[dict]:
    groups: dict = {}
    for rec in records:
        if rec["state"] not in UNSUCCESSFUL:
            continue
        reason = " ".join((rec.get("reason") or rec["state"]).split())
        group = groups.setdefault(reason, {"reason": reason, "states": [], "configs": [], "example": rec})
        group["configs"].append(rec["config"])
        if rec["state"] not in group["states"]:
            group["states"].append(rec["state"])
    out = []
    for group in sorted(groups.values(), key=lambda g: (-len(g["configs"]), g["reason"])):
        example = group.pop("example")
        out.append(dict(group, count=len(group["configs"]), example=example["config"],
                        log=_failure_log(example, logs_dir)))
    return out


def _failure_log(rec: dict, logs_dir: Path) -> Optional[str]:
    """The job's own output (logs/<config>.<attempt>.log) says why it died; the trainer's log is second best."""
    run_log = Path(logs_dir) / f"{rec['config']}.{rec['attempt']}.log"
    if run_log.is_file():
        return str(run_log)
    return rec.get("log")


def _tail(path: Optional[str], n: int) -> list[str]:
    from hpc_sweep.common.logtail import tail_lines

    return tail_lines(path, n) if path else []


# -- advice -----------------------------------------------------------------------------------------------------
def advise(effects: list[dict], ranking: list[dict], flags: list[dict], failures: list[dict],
           records: list[dict]) -> list[str]:
    """Plain sentences, each backed by the numbers the report shows next to it."""
    lines: list[str] = []
    if ranking and ranking[0]["state"] == ConfigState.RUNNING:
        lines.append(f"The best config so far, {ranking[0]['config']}, is still running: the ranking may change.")
    for effect in effects:
        lines += [line for line in (_edge_advice(effect), _fix_advice(effect)) if line]
        lines += _dead_values(effect)
    lines += [_failure_advice(group) for group in failures if group["count"] >= SAME_REASON_MIN]
    lines += _divergence_advice(flags, records, effects)
    stuck = [f["config"] for f in flags
             if f["flag"] in ("plateaued", "diverged", "nan") and f["state"] == ConfigState.RUNNING]
    if stuck:
        lines.append(f"{len(stuck)} running config(s) diverged, hit nan or plateaued far from the best "
                     f"({_names(stuck)}): cancelling them frees their GPUs (hpc-sweep cancel DIR NAMES).")
    return lines


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _with_partners(effect: dict) -> str:
    partners = effect.get("together_with") or []
    return effect["key"] + (f" (with {', '.join(partners)})" if partners else "")


def _edge_advice(effect: dict) -> Optional[str]:
    levels = [lv for lv in effect["levels"] if lv["value"] is not None]
    if not effect["numeric"] or effect["influence"] is None or effect["influence"] < NO_INFLUENCE or len(levels) < 3:
        return None
    best = min((lv for lv in levels if lv["median"] is not None), key=lambda lv: lv["median"], default=None)
    if best is None or (best is not levels[0] and best is not levels[-1]):
        return None
    up = best is levels[-1]
    values = _level_numbers(levels)
    edge = values[-1] if up else values[0]
    beyond = _step_beyond(values, up)
    return (f"{_with_partners(effect)}: the best value, {edge:g}, is the {'largest' if up else 'smallest'} tried — "
            f"extend the range beyond {edge:g} (e.g. {beyond:g}).")


def _level_numbers(levels: list[dict]) -> list[float]:
    """Grid values in order; for bins, the outer bounds (the edges of what was sampled)."""
    values: list[float] = []
    for lv in levels:
        values += [float(v) for v in lv["value"]] if isinstance(lv["value"], list) else [float(lv["value"])]
    return sorted(set(values))


def _step_beyond(values: list[float], up: bool) -> float:
    """One more step past the edge: ×ratio for a log-spaced grid, +step for an evenly spaced one."""
    inner, edge = (values[-2], values[-1]) if up else (values[1], values[0])
    if inner > 0 and edge > 0 and max(inner, edge) / min(inner, edge) >= 2:
        beyond = edge * (edge / inner)
    else:
        beyond = edge + (edge - inner)
        if values[0] > 0 and beyond <= 0:
            beyond = edge / 2
    if all(float(v).is_integer() for v in values):
        return float(round(beyond))
    return float(f"{beyond:.3g}")


def _fix_advice(effect: dict) -> Optional[str]:
    scored = sum(lv["scored"] for lv in effect["levels"])
    with_median = [lv for lv in effect["levels"] if lv["median"] is not None]
    if effect["influence"] is None or effect["influence"] >= NO_INFLUENCE or len(with_median) < 2 or scored < 4:
        return None
    return (f"{_with_partners(effect)} makes no measurable difference (its values' median scores differ by "
            f"{effect['influence']:.1%} of the overall median): fix it (e.g. at {effect['best_label']}) and spend "
            "the runs on other parameters.")


def _dead_values(effect: dict) -> list[str]:
    return [f"{effect['key']} = {lv['label']}: none of its {lv['n']} runs produced a validation score "
            "(failed or nan) — drop this value." for lv in effect["levels"]
            if lv["n"] >= 2 and lv["scored"] == 0 and lv["no_score"] == lv["n"]]


_FAILURE_HINTS = {
    ConfigState.OOM: "lower the batch size or the model size, or request more memory or GPUs per run",
    ConfigState.TIMEOUT: "raise the walltime, or let poll resume them from their checkpoints (sweep.resume_states)",
    ConfigState.NODE_FAIL: "the cluster lost nodes: resubmit them (hpc-sweep resubmit DIR NAMES)",
    ConfigState.PREEMPTED: "they were preempted: resubmit them or use a partition without preemption",
    ConfigState.LOST: "check the scheduler's own output files in logs/",
}


def _failure_advice(group: dict) -> str:
    hint = _FAILURE_HINTS.get(group["states"][0] if len(group["states"]) == 1 else "",
                              "one cause: read the log tail in the report and fix it before resubmitting")
    who = _names(group["configs"], 4)
    return f"{group['count']} configs ended with the same reason, \"{group['reason']}\" ({who}): {hint}."


def _divergence_advice(flags: list[dict], records: list[dict], effects: list[dict]) -> list[str]:
    """When most runs that blew up share one value (and most runs do not), that value is the likely cause."""
    bad = [f for f in flags if f["flag"] in ("diverged", "nan")]
    if len(bad) < SAME_REASON_MIN:
        return []
    best_share, found = 0.0, None
    for effect in effects:
        if effect["binned"]:
            continue
        key = effect["key"]
        counts: dict = {}
        for flag in bad:
            value = flag["params"].get(key)
            counts.setdefault(_level_key(value), [value, 0])[1] += 1
        value, hits = max(counts.values(), key=lambda pair: pair[1])
        share = hits / len(bad)
        overall = sum(1 for r in records if _level_key(r["params"].get(key)) == _level_key(value)) / len(records)
        if share >= SHARED_VALUE_SHARE and overall < SHARED_VALUE_SHARE and share - overall > best_share:
            best_share, found = share - overall, (key, value, hits)
    if found is None:
        return [f"{len(bad)} runs diverged or produced nan ({_names([f['config'] for f in bad], 4)})."]
    key, value, hits = found
    return [f"{len(bad)} runs diverged or produced nan; {hits} of them have {key} = {value_label(value)}: "
            "that value is the likely cause."]
