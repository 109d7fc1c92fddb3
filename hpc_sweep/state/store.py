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

Who writes: only a store opened with the writers' lock held (a write session, :mod:`hpc_sweep.session`), and only
inside :meth:`Store.transaction`; both are enforced here. A database another process holds past the busy timeout
is busy, never damaged. Only the lock holder sets a damaged database aside and restores its last good copy
(state.db.bak); when that is damaged too, ``hpc-sweep repair`` (:mod:`hpc_sweep.repair`) rebuilds the state.
"""

from __future__ import annotations

import errno
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

from hpc_sweep.common import faults
from hpc_sweep.common.errors import RuntimeFailure, UserError
from hpc_sweep.common.layout import SweepPaths

SCHEMA_VERSION = 1

_SCHEMA_TEXT = """
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


_SCHEMA = [statement.strip() for statement in _SCHEMA_TEXT.split(";") if statement.strip()]
# Columns added after a table was first created (CREATE TABLE IF NOT EXISTS leaves old tables as they are).
_ADDED_COLUMNS = (("configs", "next_mode", "TEXT"), ("configs", "walltime_s", "INTEGER"),
                  ("configs", "log_context", "TEXT"), ("attempts", "left_queue_at", "REAL"))


class Store:
    """A connection to a sweep's state database. Use :func:`open_store`.

    Opened with the writers' lock (a write session) it changes the database only inside :meth:`transaction`;
    opened without it (a read session) it never changes it. Both are enforced: SQLite's ``query_only`` is on
    outside a transaction, and a transaction without the lock is a programming error."""

    def __init__(self, conn: sqlite3.Connection, paths: SweepPaths, lock: Optional["SweepLock"] = None):
        self.conn = conn
        self.paths = paths
        self.lock = lock
        self._pending_meta: dict = {}
        conn.execute("PRAGMA query_only = ON")

    @property
    def writable(self) -> bool:
        """Whether this store was opened by a session that holds the writers' lock (and still does)."""
        return self.lock is not None and self.lock.held

    def _require_lock(self) -> None:
        if not self.writable:
            raise RuntimeError("internal: write without the sweep lock")

    # -- transactions -------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: all of it lands or none of it does. Only under the writers' lock."""
        self._require_lock()
        self.conn.execute("PRAGMA query_only = OFF")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for key, value in self._pending_meta.items():
                    self.set_meta(key, value)
                yield self.conn
                faults.point("before_commit")  # dying here leaves a hot journal: the next opener rolls it back
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # also a COMMIT that failed (busy, disk full): nothing half-kept
                    self.conn.execute("ROLLBACK")
                raise
            self._pending_meta.clear()
        finally:
            self.conn.execute("PRAGMA query_only = ON")

    def remember(self, key: str, value: str) -> None:
        """A meta value learnt while reading (e.g. the detected site): a write session records it in its next
        transaction; a read session keeps it in memory only. Never a commit of its own."""
        if self.get_meta(key) != value:
            self._pending_meta[key] = value

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
        if key in self._pending_meta:
            return self._pending_meta[key]
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
        self._require_lock()
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




# -- opening ----------------------------------------------------------------------------------------------------
TIMEOUT_ENV = "HPC_SWEEP_DB_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
REPAIR_HINT = "run 'hpc-sweep repair' to rebuild it from the configs, job maps and markers on disk"


class StateBusy(RuntimeFailure):
    """Another process held the database for longer than the busy timeout. Never a sign of corruption."""


class StateCorrupt(RuntimeFailure):
    """The database (and its last good copy) cannot be read as a state database."""


def busy_timeout_s() -> float:
    """How long to wait for another process's write to end (``HPC_SWEEP_DB_TIMEOUT`` seconds; 30 by default)."""
    try:
        return max(0.0, float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves. The default rollback journal (not WAL) because
    # sweep folders often live on NFS home directories, where WAL's shared memory does not work. A read
    # session's connection is read-write all the same: a process killed inside a transaction leaves a hot
    # journal, which only a writable connection rolls back (read-only, SQLite refuses the file); query_only
    # keeps it from writing anything else.
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_timeout_s(), isolation_level=None)
    else:
        conn = sqlite3.connect(str(path), timeout=busy_timeout_s(), isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: a 10,000-config sweep's state stays in memory
    return conn


OK, EMPTY, CORRUPT = "ok", "empty", "corrupt"


def is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")  # Python 3.11+
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_corruption(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def _busy(path: Path) -> StateBusy:
    return StateBusy(f"{path}: the state is being written by another hpc-sweep; try again (it was still busy "
                     f"after {busy_timeout_s():g} s)")


def _examine(conn: sqlite3.Connection) -> str:
    """OK, EMPTY (no table at all: a database never written) or CORRUPT; sqlite3 errors are left to
    :func:`_open_examined`, which tells a busy database from a damaged one."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return EMPTY
    if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        return CORRUPT
    if "meta" not in tables or "configs" not in tables:
        return CORRUPT
    conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return OK


def _open_examined(path: Path, read_only: bool = False) -> tuple[Optional[sqlite3.Connection], str]:
    """A connection to ``path`` and what it holds: (conn, OK or EMPTY), or (None, CORRUPT). Only what SQLite
    itself calls corrupt ("file is not a database", "database disk image is malformed", a failed quick_check)
    or a file without our tables counts as corrupt. A lock another process held past the busy timeout raises
    StateBusy; any other failure (permissions, I/O) a RuntimeFailure. Neither is ever taken for corruption."""
    conn = None
    try:
        conn = _connect(path, read_only)
        found = _examine(conn)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        if is_busy(exc):
            raise _busy(path) from None
        if _is_corruption(exc):
            return None, CORRUPT
        raise RuntimeFailure(f"{path}: the state database cannot be read ({exc})") from None
    if found == CORRUPT:
        conn.close()
        return None, CORRUPT
    return conn, found


def _examine_file(path: Path, read_only: bool = False) -> str:
    conn, found = _open_examined(path, read_only)
    if conn is not None:
        conn.close()
    return found


def no_state_yet(paths: SweepPaths) -> UserError:
    return UserError("this sweep has no state yet", file=paths.sweep_file, fix="run 'hpc-sweep generate' first")


def open_store(paths: SweepPaths, create: bool = False, lock: Optional["SweepLock"] = None) -> Store:
    """Open the state database: for writing when ``lock`` (held) is given, else for reading.

    Reading changes nothing: no schema update, no recovery. A damaged database is read from its last good copy
    (said on stderr); the recovery -- moving it aside and restoring that copy -- is left to the next session
    that holds the writers' lock. Writing (``create``: make it where there is none) recovers a damaged database
    first and brings an older schema up to date in one transaction."""
    db = paths.db
    if not db.exists() and not create:
        raise no_state_yet(paths)
    if lock is None:
        return _open_for_reading(paths)
    if not lock.held:
        raise RuntimeError("internal: write without the sweep lock")
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    conn, found = _open_examined(db)
    # An empty file is a first generate that died before its first commit, unless a good copy says otherwise.
    if found == CORRUPT or (found == EMPTY and (not create or paths.db_backup.exists())):
        if conn is not None:
            conn.close()
        _recover(paths)
        conn, found = _open_examined(db)
        if conn is None:
            raise StateCorrupt(f"{db}: the restored copy cannot be read either; {REPAIR_HINT}")
    store = Store(conn, paths, lock)
    try:
        _bring_up_to_date(store)
    except BaseException:
        store.close()
        raise
    return store


def _open_for_reading(paths: SweepPaths) -> Store:
    conn, found = _open_examined(paths.db)
    if found != OK:
        if conn is not None:
            conn.close()
        conn = _last_good_copy(paths)
    store = Store(conn, paths)
    try:
        _check_version(store)
        _shadow_missing_schema(conn)
    except BaseException:
        store.close()
        raise
    return store


def _last_good_copy(paths: SweepPaths) -> sqlite3.Connection:
    """A damaged database read through its last good copy, read-only: renaming or replacing a file another
    process may be writing is left to a session that holds the writers' lock."""
    if paths.db_backup.exists():
        conn, found = _open_examined(paths.db_backup, read_only=True)
        if found == OK:
            print(f"hpc-sweep: {paths.db} is damaged; showing its last good copy ({paths.db_backup.name}); the "
                  "next poll (or any command that changes the sweep) restores it", file=sys.stderr)
            return conn
        if conn is not None:
            conn.close()
    raise StateCorrupt(f"{paths.db}: the state database is damaged and has no good copy; {REPAIR_HINT}")


def _check_version(store: Store) -> None:
    version = store.get_meta("schema_version")
    if version is not None and int(version) > SCHEMA_VERSION:
        raise RuntimeFailure(f"{store.paths.db}: state written by a newer hpc-sweep (schema {version}); "
                             "upgrade hpc-sweep")


def _missing_schema(conn: sqlite3.Connection) -> tuple[list, list]:
    """The CREATE statements of tables the database lacks, and the (table, column, type) it lacks."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    creates = [s for s in _SCHEMA if s.startswith("CREATE TABLE") and _table_of(s) not in tables]
    columns = []
    for table, column, kind in _ADDED_COLUMNS:
        if table in tables and column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            columns.append((table, column, kind))
    return creates, columns


def _table_of(statement: str) -> str:
    return statement.split("EXISTS", 1)[1].split("(", 1)[0].strip()


def _bring_up_to_date(store: Store) -> None:
    """Tables, columns and schema version of this hpc-sweep, in one transaction, only where anything lacks."""
    creates, columns = _missing_schema(store.conn)
    has_meta = not any(_table_of(s) == "meta" for s in creates)
    if has_meta:
        _check_version(store)
    indexes = {row[0] for row in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    index_statements = [s for s in _SCHEMA if s.startswith("CREATE INDEX") and
                        s.split("EXISTS", 1)[1].split(" ON ", 1)[0].strip() not in indexes]
    if not creates and not columns and not index_statements and store.get_meta("schema_version") is not None:
        return
    with store.transaction() as conn:
        for statement in creates + index_statements:
            conn.execute(statement)
        for table, column, kind in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if store.get_meta("schema_version") is None:
            store.set_meta("schema_version", str(SCHEMA_VERSION))


def _shadow_missing_schema(conn: sqlite3.Connection) -> None:
    """A read session of an older database: what it lacks is provided by TEMP objects (SQLite looks names up in
    TEMP first), so it reads like a current one without a byte of it changing."""
    creates, columns = _missing_schema(conn)
    for statement in creates:
        conn.execute("PRAGMA query_only = OFF")  # TEMP objects only: the database file is not touched
        try:
            conn.execute(statement.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE", 1))
        finally:
            conn.execute("PRAGMA query_only = ON")
    by_table: dict = {}
    for table, column, _ in columns:
        by_table.setdefault(table, []).append(column)
    for table, added in by_table.items():
        extra = ", ".join(f"NULL AS {column}" for column in added)
        conn.execute("PRAGMA query_only = OFF")
        try:
            conn.execute(f"CREATE TEMP VIEW {table} AS SELECT *, {extra} FROM main.{table}")
        finally:
            conn.execute("PRAGMA query_only = ON")


# -- recovery (under the writers' lock only) -----------------------------------------------------------------------
def examine(path: Path) -> str:
    """OK, EMPTY or CORRUPT (see :func:`_open_examined`); StateBusy when another process holds it."""
    return _examine_file(path)


def fresh_store(path: Path, paths: SweepPaths, lock: SweepLock) -> Store:
    """A new, empty state database at ``path`` (``hpc-sweep repair`` builds one beside state.db, then moves it into
    place: a repair that dies half-way leaves no half-built state.db)."""
    if not lock.held:
        raise RuntimeError("internal: write without the sweep lock")
    for leftover in (path, path.with_name(path.name + "-journal")):
        leftover.unlink(missing_ok=True)
    store = Store(_connect(path), paths, lock)
    try:
        _bring_up_to_date(store)
    except BaseException:
        store.close()
        raise
    return store


def set_aside(path: Path, label: str = "corrupt") -> Path:
    """Rename a database (and a journal beside it) to <name>.<label>-<time>; never overwrites one."""
    stamp = int(time.time())
    target = path.with_name(f"{path.name}.{label}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
    os.replace(path, target)
    journal = path.with_name(path.name + "-journal")
    if journal.exists():
        os.replace(journal, target.with_name(target.name + "-journal"))
    return target


def _recover(paths: SweepPaths) -> None:
    """Under the lock: a damaged state.db is replaced by its last good copy, or left for ``hpc-sweep repair``."""
    if not (paths.db_backup.exists() and _examine_file(paths.db_backup, read_only=True) == OK):
        raise StateCorrupt(f"{paths.db}: the state database is damaged and has no good copy; {REPAIR_HINT}")
    broken = set_aside(paths.db)
    tmp = paths.db.with_name("state.db.restoring")
    shutil.copy2(paths.db_backup, tmp)
    os.replace(tmp, paths.db)
    print(f"hpc-sweep: {paths.db} was damaged (kept as {broken.name}); restored the last good copy "
          f"({paths.db_backup.name}). The next poll re-reads the scheduler and markers.", file=sys.stderr)


# -- the writers' lock ----------------------------------------------------------------------------------------------
class LockHeld(RuntimeFailure):
    """Another hpc-sweep holds the writers' lock (at once with ``blocking=False``, else after the time-out)."""


class SweepLock:
    """The writers' lock on .hpc_sweep/lock, held from :func:`acquire_lock` until :meth:`release`."""

    def __init__(self, path: Path, handle):
        self.path = path
        self._handle = handle

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the lock
            self._handle = None
            _HELD_HERE.discard(str(self.path))


# POSIX locks belong to the process: a second lockf of the same file from this process would succeed, and closing
# either handle would drop both. Locks this process holds are therefore also counted here.
_HELD_HERE: set = set()


HELD_ERRNOS = (errno.EAGAIN, errno.EACCES)  # what lockf says when another process holds the lock


LOCK_TIMEOUT_ENV = "HPC_SWEEP_LOCK_TIMEOUT"


def lock_timeout_s() -> float:
    """How long a blocking write session waits for the lock (``HPC_SWEEP_LOCK_TIMEOUT`` seconds; 60 by default)."""
    try:
        return max(0.0, float(os.environ.get(LOCK_TIMEOUT_ENV, 60.0)))
    except ValueError:
        return 60.0


def acquire_lock(paths: SweepPaths, blocking: bool = True, timeout: Optional[float] = None) -> SweepLock:
    """Take the writers' lock. Raises LockHeld when another process holds it (at once unless ``blocking``, else
    after ``timeout`` seconds), and RuntimeFailure when the file system cannot lock at all (NFS without a lock
    daemon: ENOLCK): cron must mail that, not skip every poll in silence."""
    timeout = lock_timeout_s() if timeout is None else timeout
    if str(paths.lock) in _HELD_HERE:
        if blocking:
            raise RuntimeError(f"internal: {paths.lock} is already held by this process")
        raise LockHeld(f"{paths.lock}: another hpc-sweep holds the lock")
    try:
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(paths.lock, "a+")
    except OSError as exc:
        raise RuntimeFailure(f"{paths.lock}: cannot open the lock file ({exc.strerror or exc})") from None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _HELD_HERE.add(str(paths.lock))
                return SweepLock(paths.lock, handle)
            except OSError as exc:
                if exc.errno not in HELD_ERRNOS:
                    raise RuntimeFailure(
                        f"{paths.lock}: cannot take the lock ({errno.errorcode.get(exc.errno, exc.errno)}: "
                        f"{exc.strerror or exc}); this file system does not support locks here (fix: mount it with "
                        "locking -- on NFS, run the lock daemon (lockd/rpc.statd) -- or put the sweep on a file "
                        "system that has locks)") from None
            if not blocking:
                raise LockHeld(f"{paths.lock}: another hpc-sweep holds the lock")
            if time.monotonic() > deadline:
                raise LockHeld(f"{paths.lock}: another hpc-sweep has held the lock for {timeout:.0f} s; "
                               "try again later")
            time.sleep(0.1)
    except BaseException:
        handle.close()
        raise


@contextmanager
def sweep_lock(paths: SweepPaths, blocking: bool = True,
               timeout: Optional[float] = None) -> Iterator[Optional[SweepLock]]:
    """The writers' lock for a ``with`` block. Yields the held lock; with ``blocking=False`` yields None at once
    if another process holds it (a second cron poll then exits quietly)."""
    try:
        lock = acquire_lock(paths, blocking, timeout)
    except LockHeld:
        if blocking:
            raise
        yield None
        return
    try:
        yield lock
    finally:
        lock.release()
