"""The status snapshot: one record per config (the JSON contract of PRODUCT.md) and its renderings."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
import time
from typing import TYPE_CHECKING, Any, Optional

from hpc_sweep.common.durations import format_short, iso_time
from hpc_sweep.state.states import ConfigState
from hpc_sweep.state.store import Store

if TYPE_CHECKING:
    from hpc_sweep.session import Session

STATE_ORDER = tuple(ConfigState)
_NON_DIGITS = re.compile(r"\D+")
FORMATS = ("table", "json", "csv", "markdown")
SORT_KEYS = ("config", "state", "best", "val", "epoch")
_RUNNING = ConfigState.RUNNING  # bound once: read for each of 10,000 records
_PENDING = ConfigState.PENDING
_STOPPED = ConfigState.STOPPED
_S = ConfigState
_COLOURS = {_S.RUNNING: "36", _S.COMPLETED: "32", _S.FAILED: "31", _S.OOM: "31", _S.TIMEOUT: "33", _S.LOST: "35",
            _S.NODE_FAIL: "31", _S.PREEMPTED: "33", _S.CANCELLED: "90", _S.WAITING: "90", "stuck": "31",
            _S.STOPPED: "90"}


def _num(value: Any) -> Optional[float]:
    """JSON cannot hold NaN: unknown or nan numbers are null (the trend says 'nan')."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


_SNAPSHOT_SQL = f"""
SELECT c.name, c.state, c.attempt, c.params, c.reason, c.device, c.in_definition,
       a.job_id, a.started_at, a.ended_at, a.elapsed, a.stuck,
       p.epoch, p.max_epoch, p.train_loss, p.val_loss, p.best_val_loss, p.best_epoch, p.log, p.trend, p.phase,
       CASE WHEN c.attempt > 1 AND c.state = '{ConfigState.RUNNING}' THEN
           (SELECT MIN(e.epoch) FROM epochs e WHERE e.config = c.name AND e.attempt = c.attempt) END
FROM configs c
LEFT JOIN attempts a ON a.config = c.name AND a.attempt = c.attempt
LEFT JOIN progress p ON p.config = c.name
ORDER BY c.idx
"""


def collect(store: Store, sweep_name: str, scheduler: str) -> dict:
    """The status object: sweep, scheduler, polled_at, counts, configs (+ scheduler_note when stale).
    One joined query: every poll of a 10,000-config sweep builds it."""
    edited = {(e.config, e.detail.split(":", 1)[0]) for e in store.events("edited")}
    outputs = str(store.paths.outputs)
    now = time.time()
    cursor = store.conn.cursor()
    cursor.row_factory = None  # plain tuples, unpacked by _record: no dict per row
    records = [_record(row, outputs, now) for row in cursor.execute(_SNAPSHOT_SQL)]
    for rec in records:
        if edited and (rec["config"], f"attempt {rec['attempt']}") in edited:  # recorded by track.edited.check_edited
            reason = rec["reason"]
            rec["reason"] = (f"{reason}; " if reason else "") + "config file edited after submission"
    counts = {state.value: 0 for state in STATE_ORDER}
    for rec in records:
        counts[rec["state"]] = counts.get(rec["state"], 0) + 1
    stuck = sum(1 for rec in records if rec["stuck"])
    saved = [rec["epochs_saved"] for rec in records if rec["epochs_saved"] is not None]
    polled = store.get_meta("polled_at")
    snapshot = {
        "sweep": sweep_name,
        "scheduler": scheduler,
        "polled_at": iso_time(float(polled)) if polled else None,
        "counts": {k: v for k, v in counts.items() if v},
        "stuck": stuck,               # of the pending ones: waiting cannot start them (each record says why)
        "configs": records,
    }
    if saved:  # [early_stop] stopped runs: the epochs they did not train, and the epochs the sweep plans in all
        snapshot["epochs_saved"] = sum(saved)
        snapshot["epochs_planned"] = sum(rec["max_epoch"] or 0 for rec in records)
    note = store.get_meta("scheduler_note")
    if note:
        snapshot["scheduler_note"] = note
    return snapshot


def snapshot(session: Session) -> dict:
    """The status object of an opened sweep (see :func:`collect`)."""
    return collect(session.store, session.spec.name, session.profile.scheduler)


def render_status(session: Session, fmt: str, states: tuple = (), sort: str = "config") -> str:
    """``hpc-sweep status``: the snapshot rendered as table, json, csv or markdown."""
    return render(snapshot(session), fmt, session.spec.swept_keys, states, sort)


def _record(row: tuple, outputs: str, now: float) -> dict:
    """One config's record of the JSON contract, from a row of _SNAPSHOT_SQL."""
    (name, state, attempt, params, reason, device, in_definition, job_id, started, ended, elapsed, fix,
     epoch, max_epoch, train_loss, val_loss, best_val_loss, best_epoch, log, trend, phase, first_epoch) = row
    if elapsed is None and started:
        elapsed = (ended or now) - started
    stuck = fix is not None and state == _PENDING  # recorded by the poll (hpc_sweep.track.stuck)
    if stuck:
        reason = f"{reason} (stuck: {fix})"
    return {
        "config": name,
        "state": state,
        "attempt": attempt,
        "job_id": job_id,
        "params": json.loads(params),
        "epoch": epoch,
        "max_epoch": max_epoch,
        "train_loss": _num(train_loss),
        "val_loss": _num(val_loss),
        "best_val_loss": _num(best_val_loss),
        "best_epoch": best_epoch,
        "output_dir": f"{outputs}/{name}",
        "log": log,
        "reason": reason,
        "elapsed_s": round(elapsed) if elapsed is not None else None,
        "eta_s": _eta(state, elapsed, epoch, max_epoch, first_epoch),
        "trend": trend,
        "phase": phase,
        "device": device,
        "in_definition": bool(in_definition if in_definition is not None else 1),
        "stuck": stuck,
        "epochs_saved": _epochs_saved(state, epoch, max_epoch),
    }


def _epochs_saved(state: str, epoch: Optional[int], max_epoch: Optional[int]) -> Optional[int]:
    """A run stopped early ([early_stop]): the epochs it did not train."""
    if state != _STOPPED or epoch is None or max_epoch is None:
        return None
    return max(0, max_epoch - epoch)


def _eta(state: str, elapsed: Optional[float], epoch: Optional[int], max_epoch: Optional[int],
         first_epoch: Optional[int] = None) -> Optional[int]:
    """The time left at this attempt's pace. ``elapsed`` is this attempt's; a resumed attempt started at
    ``first_epoch`` (its first logged epoch), so only the epochs from there on took that time."""
    if state != _RUNNING or not elapsed or not epoch or not max_epoch or epoch >= max_epoch:
        return None
    done = epoch - first_epoch + 1 if first_epoch is not None and first_epoch <= epoch else epoch
    return round(elapsed / done * (max_epoch - epoch))


def best_config(snapshot: dict) -> Optional[dict]:
    scored = [r for r in snapshot["configs"] if r["best_val_loss"] is not None]
    return min(scored, key=lambda r: r["best_val_loss"]) if scored else None


def select(snapshot: dict, states: tuple = (), sort: str = "config") -> list[dict]:
    rows = [r for r in snapshot["configs"] if not states or r["state"] in states]
    inf = float("inf")
    keys = {
        "config": lambda r: r["config"],
        "state": lambda r: (STATE_ORDER.index(r["state"]) if r["state"] in STATE_ORDER else 99, r["config"]),
        "best": lambda r: (r["best_val_loss"] if r["best_val_loss"] is not None else inf, r["config"]),
        "val": lambda r: (r["val_loss"] if r["val_loss"] is not None else inf, r["config"]),
        "epoch": lambda r: (-(r["epoch"] or 0), r["config"]),
    }
    if sort == "config":
        return sorted(rows, key=lambda r: int(_NON_DIGITS.sub("", r["config"]) or 0))
    return sorted(rows, key=keys[sort])


def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix that tells swept keys apart: init_learning_rate, advanced.num_blocks..."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for length in range(1, len(parts) + 1):
            candidate = ".".join(parts[-length:])
            if sum(1 for other in keys if other == candidate or other.endswith("." + candidate)) == 1:
                names[key] = candidate
                break
        else:
            names[key] = key
    return names


def _fmt(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4g}"


def table_rows(rows: list[dict], param_keys: list[str]) -> tuple[list[str], list[list[str]]]:
    short = short_names(param_keys)
    header = ["config", *[short[k] for k in param_keys], "state", "job", "elapsed", "epoch", "train", "val",
              "best (epoch)", "trend", "eta", "reason"]
    body = []
    for r in rows:
        state = ("stuck" if r.get("stuck") else r["state"]) + (f" #{r['attempt']}" if r["attempt"] > 1 else "")
        epoch = _epoch_text(r)
        best = "" if r["best_val_loss"] is None else f"{r['best_val_loss']:.4g} ({r['best_epoch']})"
        body.append([r["config"], *[_param(r["params"].get(k)) for k in param_keys], state, r["job_id"] or "",
                     format_short(r["elapsed_s"]) if r["elapsed_s"] is not None else "", epoch,
                     _fmt(r["train_loss"]), _fmt(r["val_loss"]), best, r["trend"] or "",
                     format_short(r["eta_s"]) if r["eta_s"] is not None else "", _clip(r["reason"])])
    return header, body


# Phases of a run before its (next) epoch: DeepH may build graphs or compile for many minutes, and says so.
BEFORE_EPOCHS = ("starting", "graph building", "loading data", "model building", "compiling")


def _epoch_text(r: dict) -> str:
    epoch = "" if r["epoch"] is None else f"{r['epoch']}/{r['max_epoch'] or '?'}"
    if r["state"] == _RUNNING and r.get("phase") in BEFORE_EPOCHS:
        return f"{epoch} {r['phase']}".strip()
    return epoch


def _param(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _clip(text: Optional[str], width: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def footer(snapshot: dict) -> str:
    stuck = snapshot.get("stuck") or 0
    counts = ", ".join(f"{state} {n}" + (f" ({stuck} stuck)" if state == _PENDING and stuck else "")
                       for state, n in snapshot["counts"].items())
    lines = [f"{len(snapshot['configs'])} configs: {counts}"]
    lines += stuck_lines(snapshot)
    lines += saved_lines(snapshot)
    best = best_config(snapshot)
    if best:
        lines.append(f"best so far: {best['config']} val {best['best_val_loss']:.4g} at epoch {best['best_epoch']}")
    if snapshot.get("polled_at"):
        lines.append(f"polled at {snapshot['polled_at']}")
    if snapshot.get("scheduler_note"):
        lines.append(f"warning: {snapshot['scheduler_note']}")
    return "\n".join(lines)


def saved_lines(snapshot: dict) -> list[str]:
    """What early stopping saved: one line, when it stopped anything."""
    saved = snapshot.get("epochs_saved")
    if saved is None:
        return []
    stopped = snapshot["counts"].get(ConfigState.STOPPED.value, 0)
    planned = snapshot.get("epochs_planned") or 0
    share = f" ({100 * saved / planned:.0f} % of the {planned} planned)" if planned else ""
    return [f"early stop: {stopped} run{'s' if stopped != 1 else ''} stopped, {saved} epochs not trained{share}"]


def stuck_lines(snapshot: dict) -> list[str]:
    """One line per distinct stuck reason, with its configs and the fix: the table's reason column is clipped."""
    grouped: dict = {}
    for rec in snapshot["configs"]:
        if rec.get("stuck"):
            grouped.setdefault(rec["reason"], []).append(rec["config"])
    lines = []
    for reason, names in grouped.items():
        shown = ", ".join(names[:3]) + (f" ... {names[-1]}" if len(names) > 3 else "")
        lines.append(f"stuck, waiting will not start them: {shown}: {reason}")
    return lines


def render(snapshot: dict, fmt: str, param_keys: list[str], states: tuple = (), sort: str = "config",
           colour: Optional[bool] = None) -> str:
    rows = select(snapshot, states, sort)
    if fmt == "json":
        shown = dict(snapshot, configs=rows)
        return json.dumps(shown, indent=2)
    if fmt == "csv":
        return _csv(rows, param_keys)
    header, body = table_rows(rows, param_keys)
    if fmt == "markdown":
        return f"# Sweep {snapshot['sweep']}\n\n" + markdown_table(header, body) + "\n\n" + \
            footer(snapshot).replace("\n", "  \n") + "\n"
    from tabulate import tabulate  # here: a poll writes markdown, and tabulate's import costs 20 ms

    if colour is None:
        colour = sys.stdout.isatty()
    if colour:
        state_col = header.index("state")
        for line in body:
            code = _COLOURS.get(line[state_col].split(" ")[0])
            if code:
                line[state_col] = f"\033[{code}m{line[state_col]}\033[0m"
    # Cells are already formatted strings: numparse off keeps tabulate from re-typing 10,000 rows.
    return tabulate(body, header, tablefmt="simple", disable_numparse=True, colalign=_alignments(body, len(header))) \
        + "\n\n" + footer(snapshot)


def _alignments(body: list, width: int, sample: int = 50) -> tuple:
    """Numbers right-aligned, text left: decided from the first rows, as tabulate's own detection would."""
    def numeric(cell: str) -> bool:
        try:
            float(cell.split(" ")[0].split("/")[0])
            return True
        except ValueError:
            return False

    rows = body[:sample]
    return tuple("right" if rows and all(numeric(r[i]) for r in rows if r[i]) and any(r[i] for r in rows)
                 else "left" for i in range(width))


def markdown_table(header: list, body: list) -> str:
    """A GitHub table without column padding: status.md is rewritten by every poll of sweeps of 10,000 configs."""
    def cells(row):
        row = [c if isinstance(c, str) else str(c) for c in row]
        line = " | ".join(row)
        if line.count("|") != len(row) - 1:  # a cell holds a '|': escape cell by cell
            line = " | ".join(c.replace("|", "\\|") for c in row)
        return f"| {line} |"

    lines = [cells(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [cells(row) for row in body]
    return "\n".join(lines)


def _csv(rows: list[dict], param_keys: list[str]) -> str:
    out = io.StringIO()
    fields = ["config", "state", "attempt", "job_id", *param_keys, "epoch", "max_epoch", "train_loss", "val_loss",
              "best_val_loss", "best_epoch", "elapsed_s", "eta_s", "trend", "output_dir", "log", "reason"]
    writer = csv.writer(out)
    writer.writerow(fields)
    for r in rows:
        writer.writerow([r["config"], r["state"], r["attempt"], r["job_id"] or "",
                         *[r["params"].get(k, "") for k in param_keys],
                         *["" if r[f] is None else r[f] for f in fields[4 + len(param_keys):]]])
    return out.getvalue()
