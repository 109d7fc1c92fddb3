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
from typing import Any, Iterable, Iterator, Optional, Sequence, Sized

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
from hpc_sweep.state.rows import (AttemptRow, ConfigRow, CurveRow, EarlyStopRow, EventRow, ProgressRow, SubmissionRow,
                                  columns)
from hpc_sweep.state.schema import bring_up_to_date, check_version, shadow_missing_schema
from hpc_sweep.state.states import ConfigState

_CONFIG_COLUMNS = columns(ConfigRow)


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

    def query(self, sql: str, args: Iterable[Any] = (), row: Optional[type] = None) -> list:
        """The rows of a read, as ``row`` NamedTuples (made from SQLite's tuples with ``_make``) or, without
        ``row``, plain tuples. For queries of a module's own (joins, aggregates); a table's rows have the typed
        methods below."""
        cursor = self.conn.execute(sql, tuple(args))
        return cursor.fetchall() if row is None else list(map(row._make, cursor))

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
    def configs(self, names: Optional[Iterable[str]] = None,
                states: Optional[Iterable[str]] = None) -> list[ConfigRow]:
        """Configs in number order; only those named in ``names`` or in one of ``states`` when given."""
        if states is None:
            rows = self._configs("ORDER BY idx")
        else:
            states = list(states)
            rows = self._configs(f"WHERE state IN ({placeholders(states)}) ORDER BY idx", states)
        if names is not None:
            wanted = set(names)
            rows = [row for row in rows if row.name in wanted]
        return rows

    def config(self, name: str) -> Optional[ConfigRow]:
        found = self._configs("WHERE name = ?", (name,))
        return found[0] if found else None

    def _configs(self, where: str, args: Iterable[Any] = ()) -> list[ConfigRow]:
        # params is the third column: decoded here, once per row
        loads, make = json.loads, ConfigRow._make
        return [make((name, idx, loads(params), *rest)) for name, idx, params, *rest in
                self.conn.execute(f"SELECT {_CONFIG_COLUMNS} FROM configs {where}", tuple(args))]

    def config_names(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT name FROM configs")}

    def require_names(self, names: Iterable[str]) -> None:
        """A UserError naming every config in ``names`` this sweep does not have."""
        unknown = sorted(set(names) - self.config_names())
        if unknown:
            raise UserError(f"unknown config(s): {', '.join(unknown)}", fix="see 'hpc-sweep status'")

    def add_configs(self, rows: Iterable[tuple]) -> None:
        """New configs, each (name, idx, params as JSON, params_key, path, digest, device, gpus, shape,
        in_definition, log_context): state generated, attempt 0. Inside a transaction."""
        now = time.time()
        self.conn.executemany(
            "INSERT INTO configs (name, idx, params, params_key, path, digest, device, gpus, shape, in_definition, "
            f"log_context, state, attempt, updated_at) VALUES ({placeholders(range(11))}, "
            f"'{ConfigState.GENERATED}', 0, ?)", [(*row, now) for row in rows])

    def set_config_state(self, name: str, state: str, reason: Optional[str] = None,
                         attempt: Optional[int] = None) -> None:
        if attempt is None:
            self.conn.execute("UPDATE configs SET state = ?, reason = ?, updated_at = ? WHERE name = ?",
                              (state, reason, time.time(), name))
        else:
            self.conn.execute("UPDATE configs SET state = ?, reason = ?, attempt = ?, updated_at = ? WHERE name = ?",
                              (state, reason, attempt, time.time(), name))

    # -- submissions ----------------------------------------------------------------------------------------
    def submissions(self, status: Optional[str] = None) -> list[SubmissionRow]:
        """Submissions in the order they were made; only those of ``status`` when given."""
        if status is None:
            return self.query(f"SELECT {columns(SubmissionRow)} FROM submissions ORDER BY created_at",
                              row=SubmissionRow)
        return self.query(f"SELECT {columns(SubmissionRow)} FROM submissions WHERE status = ? ORDER BY created_at",
                          (status,), SubmissionRow)

    def submission(self, name: str) -> Optional[SubmissionRow]:
        found = self.query(f"SELECT {columns(SubmissionRow)} FROM submissions WHERE name = ?", (name,),
                           SubmissionRow)
        return found[0] if found else None

    # -- attempts -----------------------------------------------------------------------------------------
    def attempts(self, config: Optional[str] = None, states: Optional[Iterable[str]] = None,
                 submission: Optional[str] = None) -> list[AttemptRow]:
        """Attempts by config and number; of one config, in one of ``states``, or of one submission, when given."""
        select = f"SELECT {columns(AttemptRow)} FROM attempts"
        if submission is not None:
            return self.query(f"{select} WHERE submission = ? ORDER BY config, attempt", (submission,), AttemptRow)
        if states is not None:
            states = list(states)
            return self.query(f"{select} WHERE state IN ({placeholders(states)}) ORDER BY config, attempt", states,
                              AttemptRow)
        if config is None:
            return self.query(f"{select} ORDER BY config, attempt", row=AttemptRow)
        return self.query(f"{select} WHERE config = ? ORDER BY attempt", (config,), AttemptRow)

    def update_attempt(self, config: str, attempt: int, **fields: Any) -> None:
        if fields:
            self.update_attempts(tuple(fields), [(*fields.values(), config, attempt)])

    def update_attempts(self, names: Sequence[str], rows: Iterable[tuple]) -> None:
        """Set the columns ``names`` of many attempts: each row is their values, then config and attempt."""
        assignments = ", ".join(f"{name} = ?" for name in names)
        self.conn.executemany(f"UPDATE attempts SET {assignments} WHERE config = ? AND attempt = ?", rows)

    # -- progress -----------------------------------------------------------------------------------------
    def progress(self) -> dict[str, ProgressRow]:
        """Config name -> what its log told the last poll."""
        return {row.config: row for row in self.query(f"SELECT {columns(ProgressRow)} FROM progress",
                                                      row=ProgressRow)}

    def epochs(self, config: Optional[str] = None) -> list[CurveRow]:
        """The loss curves (of one config when given), by config, attempt and epoch."""
        select = f"SELECT {columns(CurveRow)} FROM epochs"
        if config is None:
            return self.query(f"{select} ORDER BY config, attempt, epoch", row=CurveRow)
        return self.query(f"{select} WHERE config = ? ORDER BY attempt, epoch", (config,), CurveRow)

    # -- early stopping -------------------------------------------------------------------------------------
    def early_stops(self) -> dict[str, EarlyStopRow]:
        """Config name -> what the early-stopping rule keeps of it (only configs it has judged or exempted)."""
        return {row.config: row for row in self.query(f"SELECT {columns(EarlyStopRow)} FROM early_stops",
                                                      row=EarlyStopRow)}

    def set_early_stops(self, names: Sequence[str], rows: Iterable[tuple]) -> None:
        """Set the columns ``names`` of configs' early-stop rows (made when missing): each row is the values, then
        the config. (No UPSERT: the SQLite of older clusters' Pythons predates it.)"""
        rows = list(rows)
        self.conn.executemany("INSERT OR IGNORE INTO early_stops (config) VALUES (?)", [(row[-1],) for row in rows])
        assignments = ", ".join(f"{name} = ?" for name in names)
        self.conn.executemany(f"UPDATE early_stops SET {assignments} WHERE config = ?", rows)

    # -- events -------------------------------------------------------------------------------------------
    def add_event(self, kind: str, detail: str, config: Optional[str] = None) -> None:
        self.conn.execute("INSERT INTO events (time, config, kind, detail) VALUES (?, ?, ?, ?)",
                          (time.time(), config, kind, detail))

    def events(self, kind: Optional[str] = None) -> list[EventRow]:
        select = f"SELECT {columns(EventRow)} FROM events"
        if kind is None:
            return self.query(f"{select} ORDER BY time", row=EventRow)
        return self.query(f"{select} WHERE kind = ? ORDER BY time", (kind,), EventRow)

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
    return _up_to_date(Store(conn, paths, lock))


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
    return _up_to_date(Store(connect(path), paths, lock))


def _up_to_date(store: Store) -> Store:
    """A write store with this hpc-sweep's schema (closed again when bringing it up to date fails)."""
    try:
        bring_up_to_date(store)
    except BaseException:
        store.close()
        raise
    return store
