"""Reading the trainers' logs during a poll: only new bytes, parser state kept between polls.

For each config whose current attempt is running, or ended since its log was last read, find the attempt's
log, read what it gained (hpc_sweep.common.logtail), feed the program's incremental parser, and store the numbers
(progress) and the curve (epochs).

One curve per config, across attempts. A resumed attempt continues where the last reading stopped: XequiNet
appends to the same loss.log (its earlier epochs are not read again), a resumed DeepH run writes a new folder (a
new log, read from its start by the same parser). A trainer that goes back in epochs (a resume repeats the epoch
a kill cut short; a restart from an older checkpoint, or from scratch, repeats more) makes its newer rows replace
the stored ones from that epoch on: the curve holds each epoch once, with its last complete values, and the best
value and the ETA are worked out from that curve. Rows are stored under the attempt that logged them.
"""

from __future__ import annotations

import gc
import json
import math
import os
import pickle
import signal
import struct
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional

from hpc_sweep.common.formats import load_structured
from hpc_sweep.common.logtail import read_new
from hpc_sweep.state.rows import ProgressRow, columns
from hpc_sweep.state.states import ConfigState, sql_list
from hpc_sweep.state.store import placeholders

if TYPE_CHECKING:
    from hpc_sweep.programs.base import Program
    from hpc_sweep.session import Session
    from hpc_sweep.track.poll import PollReport

TREND_WINDOW = 5


class LogTarget(NamedTuple):
    """A config whose log a poll reads, with what the last reading stored (the ``p_`` fields; None before any)."""

    name: str
    attempt: int
    state: str
    path: str                      # the generated config
    log_context: Optional[str] = None     # JSON recorded at generate time: the parser's options, where the log is
    run_config: Optional[str] = None      # the config file this attempt ran
    p_attempt: Optional[int] = None
    p_log: Optional[str] = None
    p_cursor: Optional[str] = None
    p_parser_state: Optional[str] = None


# Which configs a poll reads: a running attempt; an attempt the log was never read for (that has started or
# ended); an ended attempt whose log was last read before it ended (its last lines). Filtered in SQL, so a poll
# of a sweep whose 10,000 runs are over loads nothing.
_NOT_STARTED = sql_list({ConfigState.PENDING, ConfigState.WAITING})
_TO_READ_TEMPLATE = f"""
SELECT c.name, c.attempt, c.state, c.path, c.log_context, a.run_config, p.attempt AS p_attempt, p.log AS p_log,
       p.cursor AS p_cursor, p.parser_state AS p_parser_state
FROM configs c
JOIN attempts a ON a.config = c.name AND a.attempt = c.attempt
LEFT JOIN progress p ON p.config = c.name
WHERE c.attempt >= 1 AND (
    c.state = '{ConfigState.RUNNING}'{{also}}
    OR ((p.config IS NULL OR p.attempt != c.attempt)
        AND (a.started_at IS NOT NULL OR c.state NOT IN ({_NOT_STARTED})))
    OR (p.attempt = c.attempt AND c.state NOT IN ({_NOT_STARTED})
        AND COALESCE(p.updated_at, 0) <= COALESCE(a.ended_at, 0) + 5))
ORDER BY c.idx
"""
_TO_READ = _TO_READ_TEMPLATE.format(also="")
# Before the scheduler's answer is applied: also the pending ones, whose tasks may have started since.
_TO_READ_SOON = _TO_READ_TEMPLATE.format(also=f" OR c.state = '{ConfigState.PENDING}'")
# Named configs, whatever their state (read again on purpose).
_BY_NAME = _TO_READ_TEMPLATE.split("WHERE")[0] + "WHERE c.attempt >= 1 AND c.name IN ({names}) ORDER BY c.idx"

_WRITE_PROGRESS = (f"INSERT OR REPLACE INTO progress ({columns(ProgressRow)}) "
                   f"VALUES ({placeholders(ProgressRow._fields)})")


class LogNews(NamedTuple):
    """What one config's log gained, as a worker process hands it back: plain values only."""

    config: str
    log: str
    cursor: str                 # JSON, for the next poll
    parser_state: str           # JSON, for the next poll
    summary: tuple              # phase, epoch, max_epoch, train_loss, val_loss, best_val_loss, best_epoch
    curve: list                 # [(epoch, train_loss, val_loss)] of the new lines, each epoch once, ascending
    size: int                   # bytes read
    rewind: Optional[int] = None  # stored rows from this epoch on are replaced by ``curve``
    rebase: bool = False        # the parser started afresh over a stored curve: best values come from the curve


def update_progress(session: Session, report: PollReport, reading: Optional[LogReading] = None,
                    names: Optional[list] = None) -> None:
    """Read what the logs gained and store it. ``reading``: a LogReading the poll started early (its workers
    have been reading while the poll applied the scheduler's answer). ``names``: read just these configs' logs,
    now and in this process (a worker may have read a log before its run wrote its last lines)."""
    store = session.store
    if names is not None:
        configs = store.query(_BY_NAME.format(names=placeholders(names)), names, LogTarget)
        reading = None
    else:
        configs = store.query(_TO_READ, row=LogTarget)
    if reading is None:
        with LogReading(session, configs) as reading:
            news = reading.news(configs)
    else:
        news = reading.news(configs)
    found = [(cfg, item) for cfg, item in zip(configs, news) if item is not None]
    if not found:
        return
    curves = [(item.config, cfg.attempt, *point) for cfg, item in found for point in item.curve]
    with store.transaction() as conn:
        rewinds = [(item.config, item.rewind) for _, item in found if item.rewind is not None]
        if rewinds:  # superseded epochs: the trainer went back and logged them again
            conn.executemany("DELETE FROM epochs WHERE config = ? AND epoch >= ?", rewinds)
        conn.executemany("INSERT OR REPLACE INTO epochs (config, attempt, epoch, train_loss, val_loss) "
                         "VALUES (?, ?, ?, ?, ?)", curves)
        updates = [_progress_row(session, cfg, item) for cfg, item in found]
        conn.executemany(_WRITE_PROGRESS, updates)
    for _, item in found:
        report.bytes_read += item.size
    report.new_epochs += len(curves)


def _progress_row(session: Session, cfg: LogTarget, news: LogNews) -> ProgressRow:
    """The progress row of one config: the log's news plus what needs the stored curve (best after a rewind,
    trend). Called after this poll's curve rows are stored."""
    phase, epoch, max_epoch, train_loss, val_loss, best_val_loss, best_epoch = news.summary
    attempt = cfg.attempt
    parser_state = news.parser_state
    if news.rewind is not None or news.rebase:
        best_val_loss, best_epoch = _curve_best(session, cfg.name)
        parser_state = _with_best(parser_state, best_val_loss, best_epoch)
    best = None if best_val_loss is None or _nan(best_val_loss) else best_val_loss
    has_history = cfg.p_attempt is not None
    new_vals = [point[2] for point in news.curve]
    return ProgressRow(cfg.name, attempt, news.log, news.cursor, parser_state, phase, epoch, max_epoch, train_loss,
            val_loss, best, best_epoch, trend(session, cfg, new_vals, val_loss, best_val_loss, has_history,
                                              len(new_vals)), time.time())


def _curve_best(session: Session, config: str) -> tuple:
    """The lowest validation value of the stored curve and its epoch (the earliest on ties)."""
    row = session.store.conn.execute(
        "SELECT val_loss, epoch FROM epochs WHERE config = ? AND val_loss IS NOT NULL ORDER BY val_loss, epoch "
        "LIMIT 1", (config,)).fetchone()
    return (row[0], row[1]) if row is not None else (None, None)


def _with_best(parser_state: str, best: Optional[float], epoch: Optional[int]) -> str:
    """The parser's state with its best taken from the curve, so later polls go on from the right value."""
    saved = json.loads(parser_state)
    state = saved["state"]
    state.pop("best", None)
    state.pop("best_epoch", None)
    if best is not None:
        state["best"], state["best_epoch"] = best, epoch
    return json.dumps(saved)


# -- reading the logs, in worker processes for large polls ----------------------------------------------------------
# A first poll of a 10,000-config sweep opens and parses 10,000 logs; on a cluster's shared file system each open
# and stat is a network round trip. Past PARALLEL_FROM configs, the reading is shared with forked workers (up to
# one process per allowed CPU, at most MAX_WORKERS); each returns plain values through a pipe. The workers touch
# no database and write nothing: a worker that fails has its share read again by the poll.
PARALLEL_FROM = 2000
MAX_WORKERS = 4


class LogReading:
    """Reading logs, shared with worker processes when there are many. Entered early in a poll, it queues the
    configs the poll will probably read in chunks, and workers start taking chunks while the poll applies the
    scheduler's answer; :meth:`news` then takes the chunks left (the poll reads too), gathers what the workers
    found, and reads here whatever was not foreseen or was lost with a failed worker. Leaving it stops and reaps
    any worker still running."""

    def __init__(self, session: Session, configs: Optional[list] = None):
        self.session, self.program = session, session.program
        self.outputs = str(session.paths.outputs)
        self.configs = configs            # None: the configs a poll will probably read, found on entering
        self.chunks: list = []
        self.queue: Optional[int] = None  # read end of the pipe holding the numbers of the chunks not yet taken
        self.workers: list = []           # (pid, result pipe)
        self.found: dict = {}             # _scan_key(cfg) -> LogNews or None
        self.contexts: dict = {}          # log_context text -> parsed: most configs of a sweep share one

    def __enter__(self) -> "LogReading":
        store = self.session.store
        if self.configs is None:
            if _worker_count(PARALLEL_FROM) <= 1:
                return self  # no workers in this process, however many logs there are
            self.configs = store.query(_TO_READ_SOON, row=LogTarget)
        processes = _worker_count(len(self.configs))
        if processes > 1:
            size = max(CHUNK, math.ceil(len(self.configs) / MAX_CHUNKS))
            self.chunks = [self.configs[i:i + size] for i in range(0, len(self.configs), size)]
            self.queue = _chunk_queue(len(self.chunks))
            for _ in range(processes - 1):
                self.workers.append(_fork_worker(self.program, self.chunks, self.queue, self.outputs))
        return self

    def __exit__(self, *exc) -> None:
        for pid, pipe in self.workers:  # only after an error: stop and reap the workers
            _stop_worker(pid, pipe)
        self.workers = []
        self._close_queue()

    def news(self, configs: list) -> list:
        """One LogNews (or None: nothing new) per row of ``configs``, in order."""
        if self.queue is not None:  # the chunks no worker has taken yet: read here what this poll needs of them
            wanted = {_scan_key(cfg) for cfg in configs}
            self._keep(_take_chunks(self.program, self.chunks, self.queue, self.outputs, self.contexts, wanted))
            self._close_queue()
        for pid, pipe in self.workers:
            self._keep(_collect_worker(pid, pipe))
        self.workers = []
        found, miss = self.found, object()
        news = []
        for cfg in configs:
            result = found.get(_scan_key(cfg), miss)
            news.append(scan_log(self.program, cfg, self.outputs, self.contexts) if result is miss else result)
        return news

    def _keep(self, done: dict) -> None:
        for number, results in done.items():
            if 0 <= number < len(self.chunks) and len(results) == len(self.chunks[number]):
                self.found.update((_scan_key(cfg), result) for cfg, result in zip(self.chunks[number], results)
                                  if result is not _NOT_READ)

    def _close_queue(self) -> None:
        if self.queue is not None:
            os.close(self.queue)
            self.queue = None


def _scan_key(cfg: LogTarget) -> tuple:
    """What a config's reading depends on in the state: a result read for another key is not used."""
    return cfg.name, cfg.attempt, cfg.p_attempt, cfg.p_cursor


# The chunk queue: a pipe filled with chunk numbers (2 bytes each) and closed for writing before any worker starts,
# so every process takes chunks by reading it until it is empty: the load balances itself whatever each process
# has to do meanwhile. Reads of 2 bytes from a pipe holding whole records are never split on Linux.
CHUNK = 100
MAX_CHUNKS = 10_000  # 20 kB of numbers: well within a pipe's buffer, written before anyone reads
_NUMBER = struct.Struct("<H")


def _chunk_queue(count: int) -> int:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"".join(_NUMBER.pack(n) for n in range(count)))
    finally:
        os.close(write_end)
    return read_end


_NOT_READ = object()  # a config of a chunk the poll took but does not need (only the poll passes ``wanted``)


def _take_chunks(program: Program, chunks: list, queue: int, outputs: str, contexts: dict, wanted: Optional[set] = None,
                 after_chunk=None) -> dict:
    """Chunk number -> results, for every chunk this process takes from the queue until it is empty; with
    ``wanted``, only those configs are read (the others: _NOT_READ)."""
    done = {}
    while True:
        taken = os.read(queue, _NUMBER.size)
        if len(taken) < _NUMBER.size:
            return done
        number = _NUMBER.unpack(taken)[0]
        done[number] = [scan_log(program, cfg, outputs, contexts) if wanted is None or _scan_key(cfg) in wanted
                        else _NOT_READ for cfg in chunks[number]]
        if after_chunk is not None:
            after_chunk()


def _worker_count(n: int) -> int:
    """Processes to read ``n`` logs with, this one included."""
    if n < PARALLEL_FROM or not hasattr(os, "fork") or not sys.platform.startswith("linux") or \
            threading.active_count() > 1:  # forking a threaded process may copy a held lock
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _fork_worker(program: Program, chunks: list, queue: int, outputs: str) -> tuple:
    read_end, write_end = os.pipe()
    gc.freeze()  # the collector then leaves the parent's objects alone in the worker: fewer pages copied on write
    pid = os.fork()
    if pid == 0:  # the worker: read, send, and leave without running any of the parent's exit handlers
        code = 1
        try:
            gc.disable()
            os.close(read_end)
            from hpc_sweep.common.faults import point as fault_point

            # The fault suite's worker dies holding a chunk it took: the poll must read that chunk itself.
            done = _take_chunks(program, chunks, queue, outputs, {}, after_chunk=lambda: fault_point("log_worker"))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL))
            code = 0
        finally:
            os._exit(code)
    gc.unfreeze()
    os.close(write_end)
    return pid, os.fdopen(read_end, "rb")


def _collect_worker(pid: int, pipe) -> dict:
    """The chunks a worker read (chunk number -> results); {} when it failed: the poll then reads them."""
    with pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return {}
    try:
        done = pickle.loads(data)
    except Exception:  # a worker killed mid-write
        return {}
    return done if isinstance(done, dict) else {}


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


def scan_log(program: Program, cfg: LogTarget, outputs: str, contexts: dict) -> Optional[LogNews]:
    """What one config's log gained since the last poll, or None when it has nothing new. Reads files only:
    safe in a worker process.

    The reading goes on from the last one whatever the attempt: the same log continues from its cursor (a
    resumed XequiNet run appends to it), a new log is read from its start, and the parser keeps its state, so
    the curve, the best value and what the log says of the run carry across attempts."""
    name, attempt = cfg.name, cfg.attempt
    outputs_text = f"{outputs}/{name}"
    known = cfg.p_attempt is not None          # a reading of this config was stored (any attempt)
    same_attempt = cfg.p_attempt == attempt
    old_log = cfg.p_log if known else None
    cursor = json.loads(cfg.p_cursor) if known and cfg.p_cursor else None
    outputs_mtime = _mtime(outputs_text)
    context = None
    if same_attempt and cursor and old_log and cursor.get("outputs_mtime") == outputs_mtime:
        log = old_log  # no new run folder since the last poll: the same log
    else:
        context = _log_context(program, cfg, contexts)
        log = program.find_log_text(outputs_text, context.get("find")) or old_log
    if log is None:
        return None
    if cursor and old_log != log:
        cursor = None  # a new log (a new DeepH run folder): from its start, with the same parser
    text, cursor = read_new(log, cursor)
    if cursor is not None:
        cursor["outputs_mtime"] = outputs_mtime
    saved_text = cfg.p_parser_state if known else None
    if not text and saved_text and old_log == log and same_attempt:
        return None  # nothing new: the stored numbers stand (most polls of a long sweep)
    reset = bool(cursor and cursor.get("reset"))
    saved = json.loads(saved_text) if saved_text and not reset else None  # reset: the file was replaced
    if saved is None:
        context = context or _log_context(program, cfg, contexts)
        parser = program.log_parser({}, context.get("options"), None)
    else:
        parser = program.log_parser({}, saved["options"], saved["state"])
    if not same_attempt:
        parser.start_attempt()  # what the log says of the run's end must come from this attempt
    # The stored curve's last epoch: a new row at or below it replaces stored rows from its epoch on.
    stored_top = (_last_epoch(parser.state) if saved is not None else _ANY) if known else None
    rows = parser.feed(text) if text else []
    curve, rewind = _one_curve(rows, stored_top)
    summary = parser.summary()
    return LogNews(name, log, json.dumps(cursor), json.dumps({"options": parser.options, "state": parser.state}),
                   (summary.phase, summary.epoch, summary.max_epoch, summary.train_loss, summary.val_loss,
                    summary.best_val_loss, summary.best_epoch),
                   [(r.epoch, _real(r.train_loss), _real(r.val_loss)) for r in curve], len(text), rewind,
                   known and saved is None)


_ANY = float("inf")  # a fresh parser over a stored curve: any stored epoch may be logged again


def _last_epoch(state: dict) -> Optional[float]:
    last = state.get("last")
    return last[0] if last else None


def _one_curve(rows: list, stored_top: Optional[float]) -> tuple:
    """(rows with each epoch once, the last logging winning; the epoch from which stored rows are replaced or
    None). An epoch at or below one logged before it means the trainer went back: what followed that epoch
    before is dropped, as it belongs to a history that was abandoned."""
    curve: list = []
    rewind = None
    for row in rows:
        if stored_top is not None and row.epoch <= stored_top:
            rewind = row.epoch if rewind is None else min(rewind, row.epoch)
        while curve and curve[-1].epoch >= row.epoch:
            curve.pop()
        curve.append(row)
    return curve, rewind


def _mtime(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _log_context(program: Program, cfg: LogTarget, contexts: dict) -> dict:
    """The parser options and log location recorded at generate time; a sweep generated before they were
    recorded (or a config rewritten by hand) falls back to reading the config file once."""
    text = cfg.log_context
    if not text:
        return program.log_context(_load_config(cfg) or {})
    if text not in contexts:
        contexts[text] = json.loads(text)
    return contexts[text]


def _load_config(cfg: LogTarget) -> Optional[dict]:
    for candidate in (cfg.run_config, cfg.path):
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


def trend(session: Session, cfg: LogTarget, new_vals: list, last_val: Optional[float], best: Optional[float],
          has_history: bool = True, fresh_rows: int = 0) -> Optional[str]:
    """improving / flat / diverging / nan, from the last epochs of the curve (``new_vals``: the validation losses
    just read, oldest first; ``best``: this attempt's best). The stored curve is consulted only when the new
    values are too few and there is a stored curve (not on a config's first read); the rows just stored
    (``fresh_rows``) are in it already and are skipped."""
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
            "SELECT val_loss FROM (SELECT val_loss FROM epochs WHERE config = ? ORDER BY epoch DESC LIMIT -1 "
            "OFFSET ?) WHERE val_loss IS NOT NULL LIMIT ?", (cfg.name, fresh_rows, 2 * TREND_WINDOW)).fetchall()
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
