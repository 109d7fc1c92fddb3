"""Reading the trainers' logs during a poll: only new bytes, parser state kept between polls.

For each config whose current attempt is running, or ended since its log was last read, find the attempt's
log, read what it gained (hpc_sweep.logtail), feed the program's incremental parser, and store the numbers
(progress) and the curve (epochs). A resumed DeepH run writes a new folder: a new log, the same curve.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional

from hpc_sweep.formats import load_structured
from hpc_sweep.logtail import read_new

TREND_WINDOW = 5


def _needs_read(cfg: dict, prog: Optional[dict], att: Optional[dict]) -> bool:
    if cfg["attempt"] < 1 or att is None:
        return False
    if cfg["state"] == "running":
        return True
    if prog is None or prog.get("attempt") != cfg["attempt"]:
        return att.get("started_at") is not None or cfg["state"] not in ("pending", "waiting")
    ended = att.get("ended_at") or 0
    return cfg["state"] not in ("pending", "waiting") and (prog.get("updated_at") or 0) <= ended + 5


def update_progress(session, report) -> None:
    store, program = session.store, session.program
    progress = store.progress()
    attempts = {(a["config"], a["attempt"]): a for a in store.attempts()}
    updates = []
    for cfg in store.configs():
        prog = progress.get(cfg["name"])
        att = attempts.get((cfg["name"], cfg["attempt"]))
        if not _needs_read(cfg, prog, att):
            continue
        result = _read_one(session, program, cfg, att, prog)
        if result is not None:
            row, curve, size = result
            updates.append((row, curve))
            report.bytes_read += size
    if not updates:
        return
    with store.transaction() as conn:
        conn.executemany("INSERT OR REPLACE INTO epochs (config, attempt, epoch, train_loss, val_loss) "
                         "VALUES (?, ?, ?, ?, ?)", [row for _, epochs in updates for row in epochs])
        for row, epochs in updates:
            conn.execute(
                "INSERT OR REPLACE INTO progress (config, attempt, log, cursor, parser_state, phase, epoch, max_epoch,"
                " train_loss, val_loss, best_val_loss, best_epoch, trend, updated_at) VALUES "
                "(:config, :attempt, :log, :cursor, :parser_state, :phase, :epoch, :max_epoch, :train_loss, "
                ":val_loss, :best_val_loss, :best_epoch, :trend, :updated_at)", row)
            report.new_epochs += len(epochs)


def _read_one(session, program, cfg: dict, att: dict, prog: Optional[dict]):
    outputs_text = f"{session.paths.outputs}/{cfg['name']}"
    same_attempt = prog is not None and prog.get("attempt") == cfg["attempt"]
    cursor = json.loads(prog["cursor"]) if same_attempt and prog.get("cursor") else None
    outputs_mtime = _mtime(outputs_text)
    if cursor and prog.get("log") and cursor.get("outputs_mtime") == outputs_mtime:
        log = prog["log"]  # no new run folder since the last poll: the same log
        context = None
    else:
        context = _log_context(program, cfg, att)
        log = program.find_log(Path(outputs_text), context.get("find"))
        if log is None and same_attempt and prog.get("log"):
            log = prog["log"]
    if log is None:
        return None
    if cursor and prog.get("log") != str(log):
        # A new run folder within the same attempt (the trainer restarted itself): continue the same parser.
        cursor = None
    text, cursor = read_new(log, cursor)
    if cursor is not None:
        cursor["outputs_mtime"] = outputs_mtime
    if not text and same_attempt and prog.get("parser_state") and prog.get("log") == str(log):
        return None  # nothing new: the stored numbers stand (most polls of a long sweep)
    saved = json.loads(prog["parser_state"]) if same_attempt and prog.get("parser_state") else None
    if saved is not None and context is None and cursor and cursor.get("reset"):
        context = _log_context(program, cfg, att)
    if cursor and cursor.get("reset"):
        saved = None  # the file was replaced: parse it again from the start
    if saved is None:
        context = context or _log_context(program, cfg, att)
        parser = program.log_parser({}, context.get("options"), None)
    else:
        parser = program.log_parser({}, saved["options"], saved["state"])
    rows = parser.feed(text) if text else []
    summary = parser.summary()
    curve = [(cfg["name"], cfg["attempt"], r.epoch, _real(r.train_loss), _real(r.val_loss)) for r in rows]
    best, best_epoch = _best_across_attempts(session, cfg, summary, prog if not same_attempt else None)
    row = {
        "config": cfg["name"], "attempt": cfg["attempt"], "log": str(log), "cursor": json.dumps(cursor),
        "parser_state": json.dumps({"options": parser.options, "state": parser.state}),
        "phase": summary.phase, "epoch": summary.epoch, "max_epoch": summary.max_epoch,
        "train_loss": summary.train_loss, "val_loss": summary.val_loss, "best_val_loss": best,
        "best_epoch": best_epoch, "trend": trend(session, cfg, rows, summary, has_history=same_attempt or cfg["attempt"] > 1),
        "updated_at": time.time(),
    }
    return row, curve, len(text)


def _mtime(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _log_context(program, cfg: dict, att: dict) -> dict:
    """The parser options and log location recorded at generate time; a sweep generated before they were
    recorded (or a config rewritten by hand) falls back to reading the config file once."""
    if cfg.get("log_context"):
        return json.loads(cfg["log_context"])
    config = _load_config(att, cfg) or {}
    return program.log_context(config)


def _best_across_attempts(session, cfg: dict, summary, previous: Optional[dict]):
    """Best validation of the whole config, not just this attempt (a resumed run starts a new log)."""
    best, epoch = summary.best_val_loss, summary.best_epoch
    if cfg["attempt"] > 1:
        row = session.store.conn.execute(
            "SELECT val_loss, epoch FROM epochs WHERE config = ? AND attempt < ? AND val_loss IS NOT NULL "
            "ORDER BY val_loss LIMIT 1", (cfg["name"], cfg["attempt"])).fetchone()
        if row is not None and (best is None or _nan(best) or row[0] < best):
            best, epoch = row[0], row[1]
    return (None if best is None or _nan(best) else best), epoch


def _load_config(att: dict, cfg: dict) -> Optional[dict]:
    for candidate in (att.get("run_config"), cfg["path"]):
        if candidate and Path(candidate).is_file():
            try:
                return load_structured(Path(candidate))
            except Exception:  # a config edited into nonsense still lets the log be read
                continue
    return None


def _real(value):
    return None if value is None else float(value)


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def trend(session, cfg: dict, new_rows, summary, has_history: bool = True) -> Optional[str]:
    """improving / flat / diverging / nan, from the last epochs of the curve. The stored curve is consulted only
    when the new rows are too few and there is a stored curve (not on a config's first read)."""
    if summary.val_loss is not None and _nan(summary.val_loss):
        return "nan"
    values = [r.val_loss for r in reversed(new_rows) if r.val_loss is not None][: 2 * TREND_WINDOW]
    if len(values) < 2 * TREND_WINDOW and has_history:
        rows = session.store.conn.execute(
            "SELECT val_loss FROM epochs WHERE config = ? AND val_loss IS NOT NULL ORDER BY attempt DESC, epoch DESC"
            " LIMIT ?", (cfg["name"], 2 * TREND_WINDOW)).fetchall()
        values += [r[0] for r in rows][: 2 * TREND_WINDOW - len(values)]
    values = [v for v in values if not _nan(v)]
    if len(values) < 4:
        return None
    recent, older = values[: len(values) // 2], values[len(values) // 2:]
    mean_recent, mean_older = sum(recent) / len(recent), sum(older) / len(older)
    best, last = summary.best_val_loss, values[0]
    if best is not None and not _nan(best) and best > 0 and last > 3 * best:
        return "diverging"  # far above its own best: the run has blown up
    at_best = best is not None and last <= best
    if mean_recent > 1.5 * mean_older and not at_best:
        return "diverging"
    if mean_recent < mean_older * 0.99:
        return "improving"
    return "flat"
