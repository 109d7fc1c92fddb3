"""The store: one connection to a sweep's state database, its explicit transactions, its queries and its backup.

Opened through :func:`open_store`: for writing with the writers' lock held (:mod:`hpc_sweep.state.lock`), else for
reading. A write store changes the database only inside :meth:`Store.transaction`; a read store never changes it
(not even to bring an older schema up to date, :mod:`hpc_sweep.state.schema`, or to recover a damaged file,
:mod:`hpc_sweep.state.health`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sized

from hpc_sweep.common import faults
from hpc_sweep.common.errors import UserError
from hpc_sweep.common.layout import SweepPaths
from hpc_sweep.state.health import (
    CORRUPT,
    EMPTY,
    OK,
    REPAIR_HINT,
    StateCorrupt,
    connect,
    last_good_copy,
    open_examined,
    recover,
)
from hpc_sweep.state.lock import SweepLock
from hpc_sweep.state.schema import bring_up_to_date, check_version, shadow_missing_schema


class Store:
    """A connection to a sweep's state database. Use :func:`open_store`.

    Opened with the writers' lock (a write session) it changes the database only inside :meth:`transaction`;
    opened without it (a read session) it never changes it. Both are enforced: SQLite's ``query_only`` is on
    outside a transaction, and a transaction without the lock is a programming error."""

    def __init__(self, conn: sqlite3.Connection, paths: SweepPaths, lock: Optional[SweepLock] = None):
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
            states = list(states)
            rows = self.rows(f"SELECT * FROM configs WHERE state IN ({placeholders(states)}) ORDER BY idx", states)
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
            states = list(states)
            return self.rows(f"SELECT * FROM attempts WHERE state IN ({placeholders(states)}) ORDER BY config, "
                             "attempt", states)
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


def placeholders(values: Sized) -> str:
    """``?, ?, ?`` for ``IN (...)`` or ``VALUES (...)`` of as many values: the one place such a list is built."""
    return ", ".join("?" * len(values))


# -- opening ----------------------------------------------------------------------------------------------------


def no_state_yet(paths: SweepPaths) -> UserError:
    return UserError("this sweep has no state yet", file=paths.sweep_file, fix="run 'hpc-sweep generate' first")


def open_store(paths: SweepPaths, create: bool = False, lock: Optional[SweepLock] = None) -> Store:
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
    conn, found = open_examined(db)
    # An empty file is a first generate that died before its first commit, unless a good copy says otherwise.
    if found == CORRUPT or (found == EMPTY and (not create or paths.db_backup.exists())):
        if conn is not None:
            conn.close()
        recover(paths)
        conn, found = open_examined(db)
        if conn is None:
            raise StateCorrupt(f"{db}: the restored copy cannot be read either; {REPAIR_HINT}")
    store = Store(conn, paths, lock)
    try:
        bring_up_to_date(store)
    except BaseException:
        store.close()
        raise
    return store


def _open_for_reading(paths: SweepPaths) -> Store:
    conn, found = open_examined(paths.db)
    if found != OK:
        if conn is not None:
            conn.close()
        conn = last_good_copy(paths)
    store = Store(conn, paths)
    try:
        check_version(store)
        shadow_missing_schema(conn)
    except BaseException:
        store.close()
        raise
    return store


# -- a new database (hpc-sweep repair) -----------------------------------------------------------------------------


def fresh_store(path: Path, paths: SweepPaths, lock: SweepLock) -> Store:
    """A new, empty state database at ``path`` (``hpc-sweep repair`` builds one beside state.db, then moves it into
    place: a repair that dies half-way leaves no half-built state.db)."""
    if not lock.held:
        raise RuntimeError("internal: write without the sweep lock")
    for leftover in (path, path.with_name(path.name + "-journal")):
        leftover.unlink(missing_ok=True)
    store = Store(connect(path), paths, lock)
    try:
        bring_up_to_date(store)
    except BaseException:
        store.close()
        raise
    return store
