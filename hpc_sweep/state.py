"""The one place for state: an SQLite database under .hpc_sweep/, plus the file lock writers hold.

Tables
- meta: schema version, sweep name, the job-name prefix (recorded once at init).
- configs: one row per generated config: its parameters, file, digest, resource shape, current state/attempt.
- submissions: one row per scheduler submission (an array chunk). Written as "intent" BEFORE the submit
  command runs, so a crash between submitting and recording is found again by the job name (statuses: see
  hpc_sweep/intents.py).
- attempts: one row per (config, attempt): where it ran and how it ended.
- progress: what the log parser knows of the current attempt (cursor, parser state, latest numbers).
- epochs: the loss curve, per config and attempt (WITHOUT ROWID: stored once, in key order; older sweeps keep
  their rowid table, which reads the same).
- events: what happened and why (forced regenerations, resumes, refusals).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from hpc_sweep import faults
from hpc_sweep.errors import RuntimeFailure, UserError
from hpc_sweep.layout import SweepPaths

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    name TEXT PRIMARY KEY,
    idx INTEGER NOT NULL UNIQUE,
    params TEXT NOT NULL,
    params_key TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    device TEXT,
    gpus INTEGER NOT NULL DEFAULT 0,
    shape TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'generated',
    attempt INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    in_definition INTEGER NOT NULL DEFAULT 1,
    next_mode TEXT,
    walltime_s INTEGER,
    log_context TEXT,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS submissions (
    name TEXT PRIMARY KEY,
    shape TEXT NOT NULL,
    script TEXT NOT NULL,
    map TEXT NOT NULL,
    scheduler_id TEXT,
    status TEXT NOT NULL,
    ntasks INTEGER NOT NULL,
    created_at REAL NOT NULL,
    submitted_at REAL,
    note TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    config TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    submission TEXT,
    task_index INTEGER,
    job_id TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    run_config TEXT,
    submitted_at REAL,
    started_at REAL,
    ended_at REAL,
    exit_code INTEGER,
    host TEXT,
    elapsed REAL,
    resumed_from TEXT,
    left_queue_at REAL,
    PRIMARY KEY (config, attempt)
);
CREATE INDEX IF NOT EXISTS attempts_by_submission ON attempts (submission);
CREATE TABLE IF NOT EXISTS progress (
    config TEXT PRIMARY KEY,
    attempt INTEGER,
    log TEXT,
    cursor TEXT,
    parser_state TEXT,
    phase TEXT,
    epoch INTEGER,
    max_epoch INTEGER,
    train_loss REAL,
    val_loss REAL,
    best_val_loss REAL,
    best_epoch INTEGER,
    trend TEXT,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS epochs (
    config TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    train_loss REAL,
    val_loss REAL,
    PRIMARY KEY (config, attempt, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    time REAL NOT NULL,
    config TEXT,
    kind TEXT NOT NULL,
    detail TEXT
);
"""


class Store:
    """A connection to a sweep's state database. Use :func:`open_store`."""

    def __init__(self, conn: sqlite3.Connection, paths: SweepPaths):
        self.conn = conn
        self.paths = paths

    # -- transactions -------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: all of it lands or none of it does."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            faults.point("before_commit")  # dying here leaves a hot journal: the next opener rolls it back
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict]:
        """Rows as plain dicts. Built from tuples: dict(sqlite3.Row) costs several times more, and a poll of a
        10,000-config sweep reads every table."""
        cur = self.conn.cursor()
        cur.row_factory = None
        cur.execute(sql, tuple(args))
        names = [column[0] for column in cur.description]
        return [dict(zip(names, row)) for row in cur]

    # -- meta ---------------------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Optional[str] = None) -> Optional[str]:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- configs ------------------------------------------------------------------------------------------
    def configs(self, names: Optional[Iterable[str]] = None, states: Optional[Iterable[str]] = None) -> list[dict]:
        if states is None:
            rows = self.rows("SELECT * FROM configs ORDER BY idx")
        else:
            marks, values = _in_clause(states)
            rows = self.rows(f"SELECT * FROM configs WHERE state IN ({marks}) ORDER BY idx", values)
        for row in rows:
            row["params"] = json.loads(row["params"])
        if names is not None:
            wanted = set(names)
            rows = [r for r in rows if r["name"] in wanted]
        return rows

    def require_names(self, names: Iterable[str]) -> None:
        """A UserError naming every config in ``names`` this sweep does not have."""
        known = {row[0] for row in self.conn.execute("SELECT name FROM configs")}
        unknown = sorted(set(names) - known)
        if unknown:
            raise UserError(f"unknown config(s): {', '.join(unknown)}", fix="see 'hpc-sweep status'")

    def config(self, name: str) -> Optional[dict]:
        row = self.conn.execute("SELECT * FROM configs WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        found = dict(row)
        found["params"] = json.loads(found["params"])
        return found

    def set_config_state(self, name: str, state: str, reason: Optional[str] = None,
                         attempt: Optional[int] = None) -> None:
        if attempt is None:
            self.conn.execute("UPDATE configs SET state = ?, reason = ?, updated_at = ? WHERE name = ?",
                              (state, reason, time.time(), name))
        else:
            self.conn.execute("UPDATE configs SET state = ?, reason = ?, attempt = ?, updated_at = ? WHERE name = ?",
                              (state, reason, attempt, time.time(), name))

    # -- submissions ----------------------------------------------------------------------------------------
    def submissions(self, status: Optional[str] = None) -> list[dict]:
        if status is None:
            return self.rows("SELECT * FROM submissions ORDER BY created_at")
        return self.rows("SELECT * FROM submissions WHERE status = ? ORDER BY created_at", (status,))

    # -- attempts -----------------------------------------------------------------------------------------
    def attempts(self, config: Optional[str] = None, states: Optional[Iterable[str]] = None) -> list[dict]:
        if states is not None:
            marks, values = _in_clause(states)
            return self.rows(f"SELECT * FROM attempts WHERE state IN ({marks}) ORDER BY config, attempt", values)
        if config is None:
            return self.rows("SELECT * FROM attempts ORDER BY config, attempt")
        return self.rows("SELECT * FROM attempts WHERE config = ? ORDER BY attempt", (config,))

    def update_attempt(self, config: str, attempt: int, **fields: Any) -> None:
        if not fields:
            return
        assignments = ", ".join(f"{key} = ?" for key in fields)
        self.conn.execute(f"UPDATE attempts SET {assignments} WHERE config = ? AND attempt = ?",
                          (*fields.values(), config, attempt))

    # -- progress -----------------------------------------------------------------------------------------
    def progress(self) -> dict[str, dict]:
        return {r["config"]: r for r in self.rows("SELECT * FROM progress")}

    def epochs(self, config: Optional[str] = None) -> list[dict]:
        if config is None:
            return self.rows("SELECT * FROM epochs ORDER BY config, attempt, epoch")
        return self.rows("SELECT * FROM epochs WHERE config = ? ORDER BY attempt, epoch", (config,))

    # -- events -------------------------------------------------------------------------------------------
    def add_event(self, kind: str, detail: str, config: Optional[str] = None) -> None:
        self.conn.execute("INSERT INTO events (time, config, kind, detail) VALUES (?, ?, ?, ?)",
                          (time.time(), config, kind, detail))

    def events(self, kind: Optional[str] = None) -> list[dict]:
        if kind is None:
            return self.rows("SELECT * FROM events ORDER BY time")
        return self.rows("SELECT * FROM events WHERE kind = ? ORDER BY time", (kind,))

    # -- backup -------------------------------------------------------------------------------------------
    def backup(self) -> None:
        """Copy the database to state.db.bak (atomically), the copy a corrupt database is recovered from."""
        tmp = self.paths.db_backup.with_suffix(".bak.tmp")
        target = sqlite3.connect(str(tmp))
        try:
            self.conn.backup(target)
        finally:
            target.close()
        os.replace(tmp, self.paths.db_backup)


def _in_clause(values: Iterable[str]) -> tuple[str, list]:
    """"?,?,?" and the values, for ``... IN (?,?,?)``."""
    values = list(values)
    return ",".join("?" for _ in values), values


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves. The default rollback journal (not WAL) because
    # sweep folders often live on NFS home directories, where WAL's shared memory does not work.
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: a 10,000-config sweep's state stays in memory
    return conn


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Columns added after a table was first created (CREATE TABLE IF NOT EXISTS leaves old tables as they are)."""
    for table, column, kind in (("configs", "next_mode", "TEXT"), ("configs", "walltime_s", "INTEGER"),
                                ("configs", "log_context", "TEXT"), ("attempts", "left_queue_at", "REAL")):
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _healthy(path: Path) -> bool:
    try:
        # Read-write, not mode=ro: a process killed inside a large transaction leaves a hot journal, which only a
        # writable connection rolls back; read-only, SQLite refuses the file and it would be taken for corrupt.
        conn = sqlite3.connect(str(path), timeout=30)
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            return ok
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def open_store(paths: SweepPaths, create: bool = False) -> Store:
    """Open (or with ``create`` make) the state database; a corrupt one is replaced by its last good copy."""
    db = paths.db
    if not db.exists() and not create:
        raise UserError("this sweep has no state yet", file=paths.sweep_file,
                        fix="run 'hpc-sweep generate' first")
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    if db.exists() and not _healthy(db):
        _recover(paths)
    conn = _connect(db)
    conn.executescript(_SCHEMA)
    _add_missing_columns(conn)
    store = Store(conn, paths)
    version = store.get_meta("schema_version")
    if version is None:
        store.set_meta("schema_version", str(SCHEMA_VERSION))
    elif int(version) > SCHEMA_VERSION:
        raise RuntimeFailure(f"{db}: state written by a newer hpc-sweep (schema {version}); upgrade hpc-sweep")
    return store


def _recover(paths: SweepPaths) -> None:
    broken = paths.db.with_name(f"state.db.corrupt-{int(time.time())}")
    os.replace(paths.db, broken)
    if paths.db_backup.exists() and _healthy(paths.db_backup):
        shutil.copy2(paths.db_backup, paths.db)
        print(f"hpc-sweep: {paths.db} was corrupt (kept as {broken.name}); restored the last good copy "
              f"({paths.db_backup.name}). The next poll re-reads the scheduler and markers.", file=sys.stderr)
        return
    raise RuntimeFailure(f"{paths.db}: the state database is corrupt and no good backup exists "
                         f"(moved to {broken.name}); run 'hpc-sweep generate' to rebuild the config list")


@contextmanager
def sweep_lock(paths: SweepPaths, blocking: bool = True, timeout: float = 60.0) -> Iterator[bool]:
    """The writers' lock. Yields True when held; with ``blocking=False`` yields False at once if another
    process holds it (a second cron poll then exits quietly)."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(paths.lock, "a+")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if not blocking:
                    yield False
                    return
                if time.monotonic() > deadline:
                    raise RuntimeFailure(f"{paths.lock}: another hpc-sweep has held the lock for {timeout:.0f} s; "
                                         "try again later")
                time.sleep(0.1)
        yield True
    finally:
        handle.close()  # closing releases the lock
