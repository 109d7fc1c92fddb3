"""Reading the trainers' logs during a poll: only new bytes, parser state kept between polls.

For each config whose current attempt is running, or ended since its log was last read, find the attempt's
log, read what it gained (hpc_sweep.logtail), feed the program's incremental parser, and store the numbers
(progress) and the curve (epochs). A resumed DeepH run writes a new folder: a new log, the same curve.
"""

from __future__ import annotations

import gc
import json
import math
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple, Optional

from hpc_sweep.formats import load_structured
from hpc_sweep.logtail import read_new

TREND_WINDOW = 5


# Which configs a poll reads: a running attempt; an attempt the log was never read for (that has started or
# ended); an ended attempt whose log was last read before it ended (its last lines). Filtered in SQL, so a poll
# of a sweep whose 10,000 runs are over loads nothing.
_TO_READ = """
SELECT c.name, c.attempt, c.state, c.path, c.log_context, a.run_config, p.attempt AS p_attempt, p.log AS p_log,
       p.cursor AS p_cursor, p.parser_state AS p_parser_state
FROM configs c
JOIN attempts a ON a.config = c.name AND a.attempt = c.attempt
LEFT JOIN progress p ON p.config = c.name
WHERE c.attempt >= 1 AND (
    c.state = 'running'
    OR ((p.config IS NULL OR p.attempt != c.attempt)
        AND (a.started_at IS NOT NULL OR c.state NOT IN ('pending', 'waiting')))
    OR (p.attempt = c.attempt AND c.state NOT IN ('pending', 'waiting')
        AND COALESCE(p.updated_at, 0) <= COALESCE(a.ended_at, 0) + 5))
ORDER BY c.idx
"""

_PROGRESS_COLUMNS = ("config", "attempt", "log", "cursor", "parser_state", "phase", "epoch", "max_epoch",
                     "train_loss", "val_loss", "best_val_loss", "best_epoch", "trend", "updated_at")


class LogNews(NamedTuple):
    """What one config's log gained, as a worker process hands it back: plain values only."""

    config: str
    log: str
    cursor: str                 # JSON, for the next poll
    parser_state: str           # JSON, for the next poll
    summary: tuple              # phase, epoch, max_epoch, train_loss, val_loss, best_val_loss, best_epoch
    curve: list                 # [(epoch, train_loss, val_loss)] of the new lines
    size: int                   # bytes read


def update_progress(session, report) -> None:
    store = session.store
    configs = store.rows(_TO_READ)
    news = scan_logs(session.program, configs, str(session.paths.outputs))
    updates, curves = [], []
    for cfg, found in zip(configs, news):
        if found is not None:
            updates.append(_progress_row(session, cfg, found))
            curves += [(found.config, cfg["attempt"], *point) for point in found.curve]
            report.bytes_read += found.size
    if not updates:
        return
    with store.transaction() as conn:
        conn.executemany("INSERT OR REPLACE INTO epochs (config, attempt, epoch, train_loss, val_loss) "
                         "VALUES (?, ?, ?, ?, ?)", curves)
        conn.executemany(f"INSERT OR REPLACE INTO progress ({', '.join(_PROGRESS_COLUMNS)}) VALUES "
                         f"({', '.join('?' for _ in _PROGRESS_COLUMNS)})", updates)
    report.new_epochs += len(curves)


def _progress_row(session, cfg: dict, news: LogNews) -> tuple:
    """The progress row of one config: the log's news plus what needs the stored curve (best across attempts,
    trend)."""
    phase, epoch, max_epoch, train_loss, val_loss, best_val_loss, best_epoch = news.summary
    attempt = cfg["attempt"]
    best, best_at = _best_across_attempts(session, cfg, best_val_loss, best_epoch)
    has_history = cfg["p_attempt"] == attempt or attempt > 1
    return (cfg["name"], attempt, news.log, news.cursor, news.parser_state, phase, epoch, max_epoch, train_loss,
            val_loss, best, best_at, trend(session, cfg, [point[2] for point in news.curve], val_loss, best_val_loss,
                                           has_history), time.time())


# -- reading the logs, in worker processes for large polls ----------------------------------------------------------
# A first poll of a 10,000-config sweep opens and parses 10,000 logs; on a cluster's shared file system each open
# and stat is a network round trip. Past PARALLEL_FROM configs, the reading is shared with forked workers (one per
# allowed CPU, at most MAX_WORKERS); each returns plain values through a pipe. The workers touch no database and
# write nothing: a worker that fails has its share read again here.
PARALLEL_FROM = 2000
MAX_WORKERS = 4


def scan_logs(program, configs: list, outputs: str, workers: Optional[int] = None) -> list:
    """One LogNews (or None: nothing new) per row of ``configs``, in order."""
    if workers is None:
        workers = _worker_count(len(configs))
    if workers <= 1:
        return _scan_share(program, configs, outputs)
    size = -(-len(configs) // workers)
    shares = [configs[i:i + size] for i in range(0, len(configs), size)]
    children = []
    try:
        for share in shares[1:]:
            children.append((_fork_worker(program, share, outputs), share))
        results = _scan_share(program, shares[0], outputs)
        for (pid, pipe), share in children:
            results += _collect_worker(pid, pipe, len(share)) or _scan_share(program, share, outputs)
        children = []
        return results
    finally:
        for (pid, pipe), _ in children:  # only after an error here: stop and reap the workers
            _stop_worker(pid, pipe)


def _worker_count(n: int) -> int:
    if n < PARALLEL_FROM or not hasattr(os, "fork") or not sys.platform.startswith("linux") or \
            threading.active_count() > 1:  # forking a threaded process may copy a held lock
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _fork_worker(program, share: list, outputs: str) -> tuple:
    read_end, write_end = os.pipe()
    gc.freeze()  # the collector then leaves the parent's objects alone in the worker: fewer pages copied on write
    pid = os.fork()
    if pid == 0:  # the worker: read, send, and leave without running any of the parent's exit handlers
        code = 1
        try:
            gc.disable()
            os.close(read_end)
            from hpc_sweep.submit import fault_point

            fault_point("log_worker")
            data = pickle.dumps(_scan_share(program, share, outputs), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(data)
            code = 0
        finally:
            os._exit(code)
    gc.unfreeze()
    os.close(write_end)
    return pid, os.fdopen(read_end, "rb")


def _collect_worker(pid: int, pipe, expected: int) -> Optional[list]:
    """The worker's results, or None when it failed (its share is then read by the caller)."""
    with pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return None
    try:
        results = pickle.loads(data)
    except Exception:  # a worker killed mid-write
        return None
    return results if isinstance(results, list) and len(results) == expected else None


def _stop_worker(pid: int, pipe) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    pipe.close()
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _scan_share(program, configs: list, outputs: str) -> list:
    contexts: dict = {}  # log_context text -> parsed: most configs of a sweep share one
    return [scan_log(program, cfg, outputs, contexts) for cfg in configs]


def scan_log(program, cfg: dict, outputs: str, contexts: dict) -> Optional[LogNews]:
    """What one config's log gained since the last poll, or None when it has nothing new. Reads files only:
    safe in a worker process."""
    name, attempt = cfg["name"], cfg["attempt"]
    outputs_text = f"{outputs}/{name}"
    same_attempt = cfg["p_attempt"] == attempt
    old_log = cfg["p_log"] if same_attempt else None
    cursor = json.loads(cfg["p_cursor"]) if same_attempt and cfg["p_cursor"] else None
    outputs_mtime = _mtime(outputs_text)
    context = None
    if cursor and old_log and cursor.get("outputs_mtime") == outputs_mtime:
        log = old_log  # no new run folder since the last poll: the same log
    else:
        context = _log_context(program, cfg, contexts)
        log = program.find_log_text(outputs_text, context.get("find")) or old_log
    if log is None:
        return None
    if cursor and old_log != log:
        # A new run folder within the same attempt (the trainer restarted itself): continue the same parser.
        cursor = None
    text, cursor = read_new(log, cursor)
    if cursor is not None:
        cursor["outputs_mtime"] = outputs_mtime
    saved_text = cfg["p_parser_state"] if same_attempt else None
    if not text and saved_text and old_log == log:
        return None  # nothing new: the stored numbers stand (most polls of a long sweep)
    reset = bool(cursor and cursor.get("reset"))
    saved = json.loads(saved_text) if saved_text and not reset else None  # reset: the file was replaced
    if saved is None:
        context = context or _log_context(program, cfg, contexts)
        parser = program.log_parser({}, context.get("options"), None)
    else:
        parser = program.log_parser({}, saved["options"], saved["state"])
    rows = parser.feed(text) if text else []
    summary = parser.summary()
    return LogNews(name, log, json.dumps(cursor), json.dumps({"options": parser.options, "state": parser.state}),
                   (summary.phase, summary.epoch, summary.max_epoch, summary.train_loss, summary.val_loss,
                    summary.best_val_loss, summary.best_epoch),
                   [(r.epoch, _real(r.train_loss), _real(r.val_loss)) for r in rows], len(text))


def _mtime(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _log_context(program, cfg: dict, contexts: dict) -> dict:
    """The parser options and log location recorded at generate time; a sweep generated before they were
    recorded (or a config rewritten by hand) falls back to reading the config file once."""
    text = cfg.get("log_context")
    if not text:
        return program.log_context(_load_config(cfg) or {})
    if text not in contexts:
        contexts[text] = json.loads(text)
    return contexts[text]


def _best_across_attempts(session, cfg: dict, best: Optional[float], epoch: Optional[int]):
    """Best validation of the whole config, not just this attempt (a resumed run starts a new log)."""
    if cfg["attempt"] > 1:
        row = session.store.conn.execute(
            "SELECT val_loss, epoch FROM epochs WHERE config = ? AND attempt < ? AND val_loss IS NOT NULL "
            "ORDER BY val_loss LIMIT 1", (cfg["name"], cfg["attempt"])).fetchone()
        if row is not None and (best is None or _nan(best) or row[0] < best):
            best, epoch = row[0], row[1]
    return (None if best is None or _nan(best) else best), epoch


def _load_config(cfg: dict) -> Optional[dict]:
    for candidate in (cfg.get("run_config"), cfg["path"]):
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


def trend(session, cfg: dict, new_vals: list, last_val: Optional[float], best: Optional[float],
          has_history: bool = True) -> Optional[str]:
    """improving / flat / diverging / nan, from the last epochs of the curve (``new_vals``: the validation losses
    just read, oldest first; ``best``: this attempt's best). The stored curve is consulted only when the new
    values are too few and there is a stored curve (not on a config's first read)."""
    if last_val is not None and _nan(last_val):
        return "nan"
    values = []
    for value in reversed(new_vals):
        if value is not None:
            values.append(value)
            if len(values) == 2 * TREND_WINDOW:
                break
    if len(values) < 2 * TREND_WINDOW and has_history:
        rows = session.store.conn.execute(
            "SELECT val_loss FROM epochs WHERE config = ? AND val_loss IS NOT NULL ORDER BY attempt DESC, epoch DESC"
            " LIMIT ?", (cfg["name"], 2 * TREND_WINDOW)).fetchall()
        values += [r[0] for r in rows][: 2 * TREND_WINDOW - len(values)]
    values = [v for v in values if v == v]  # nan != nan
    if len(values) < 4:
        return None
    recent, older = values[: len(values) // 2], values[len(values) // 2:]
    mean_recent, mean_older = sum(recent) / len(recent), sum(older) / len(older)
    last = values[0]
    if best is not None and not _nan(best) and best > 0 and last > 3 * best:
        return "diverging"  # far above its own best: the run has blown up
    at_best = best is not None and last <= best
    if mean_recent > 1.5 * mean_older and not at_best:
        return "diverging"
    if mean_recent < mean_older * 0.99:
        return "improving"
    return "flat"
