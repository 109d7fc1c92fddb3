"""Opening the database file and telling what it holds: ok, empty (never written) or corrupt. A database another
process holds past the busy timeout is busy (:class:`StateBusy`), never corrupt; other failures (permissions, I/O)
are failures. Recovery -- setting a damaged database aside and restoring its last good copy (state.db.bak) -- is
for the holder of the writers' lock only; a read session reads that copy instead."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Optional

from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.common.layout import SweepPaths


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


def connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """A connection with our settings: explicit transactions, full sync, a large cache."""
    # isolation_level=None: we issue BEGIN/COMMIT ourselves. The default rollback journal (not WAL) because
    # sweep folders often live on NFS home directories, where WAL's shared memory does not work. A read
    # session's connection is read-write all the same: a process killed inside a transaction leaves a hot
    # journal, which only a writable connection rolls back (read-only, SQLite refuses the file); query_only
    # keeps it from writing anything else.
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_timeout_s(), isolation_level=None)
    else:
        conn = sqlite3.connect(str(path), timeout=busy_timeout_s(), isolation_level=None)
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
    :func:`open_examined`, which tells a busy database from a damaged one."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return EMPTY
    if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        return CORRUPT
    if "meta" not in tables or "configs" not in tables:
        return CORRUPT
    conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return OK


def open_examined(path: Path, read_only: bool = False) -> tuple[Optional[sqlite3.Connection], str]:
    """A connection to ``path`` and what it holds: (conn, OK or EMPTY), or (None, CORRUPT). Only what SQLite
    itself calls corrupt ("file is not a database", "database disk image is malformed", a failed quick_check)
    or a file without our tables counts as corrupt. A lock another process held past the busy timeout raises
    StateBusy; any other failure (permissions, I/O) a RuntimeFailure. Neither is ever taken for corruption."""
    conn = None
    try:
        conn = connect(path, read_only)
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


def examine_file(path: Path, read_only: bool = False) -> str:
    conn, found = open_examined(path, read_only)
    if conn is not None:
        conn.close()
    return found


def examine(path: Path) -> str:
    """OK, EMPTY or CORRUPT (see :func:`open_examined`); StateBusy when another process holds it."""
    return examine_file(path)


def last_good_copy(paths: SweepPaths) -> sqlite3.Connection:
    """A damaged database read through its last good copy, read-only: renaming or replacing a file another
    process may be writing is left to a session that holds the writers' lock."""
    if paths.db_backup.exists():
        conn, found = open_examined(paths.db_backup, read_only=True)
        if found == OK:
            print(f"hpc-sweep: {paths.db} is damaged; showing its last good copy ({paths.db_backup.name}); the "
                  "next poll (or any command that changes the sweep) restores it", file=sys.stderr)
            return conn
        if conn is not None:
            conn.close()
    raise StateCorrupt(f"{paths.db}: the state database is damaged and has no good copy; {REPAIR_HINT}")


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


def recover(paths: SweepPaths) -> None:
    """Under the lock: a damaged state.db is replaced by its last good copy, or left for ``hpc-sweep repair``."""
    if not (paths.db_backup.exists() and examine_file(paths.db_backup, read_only=True) == OK):
        raise StateCorrupt(f"{paths.db}: the state database is damaged and has no good copy; {REPAIR_HINT}")
    broken = set_aside(paths.db)
    tmp = paths.db.with_name("state.db.restoring")
    shutil.copy2(paths.db_backup, tmp)
    os.replace(tmp, paths.db)
    print(f"hpc-sweep: {paths.db} was damaged (kept as {broken.name}); restored the last good copy "
          f"({paths.db_backup.name}). The next poll re-reads the scheduler and markers.", file=sys.stderr)
