"""The state database's schema: its tables (DDL), the columns added since tables were first created, and bringing
an older database up to date -- in one transaction for a write session, through TEMP objects (nothing written)
for a read session."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from hpc_sweep.common.errors import RuntimeFailure

if TYPE_CHECKING:
    from hpc_sweep.state.store import Store


SCHEMA_VERSION = 1


SCHEMA_TEXT = """
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
    stuck TEXT,
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
CREATE TABLE IF NOT EXISTS early_stops (
    config TEXT PRIMARY KEY,      -- [early_stop] (hpc_sweep.track.stopping): what the rule keeps between polls
    rung INTEGER,                 -- asha: the highest rung the run was judged at and kept
    stopped_epoch INTEGER,        -- the last epoch it had logged when stopped
    max_epoch INTEGER,            -- its planned last epoch then
    exempt INTEGER NOT NULL DEFAULT 0,  -- resubmitted by hand after a stop: never stopped again
    stopping_attempt INTEGER,     -- a stop sent (or about to be) for this attempt, not recorded yet
    stopping_reason TEXT          -- its reason
);
CREATE TABLE IF NOT EXISTS search_trials (
    number INTEGER PRIMARY KEY,   -- [search] (hpc_sweep.sweep.search): Optuna's trial number, 0, 1, 2 ... as asked
    config TEXT NOT NULL,         -- the config that runs it (a repeated suggestion: the earlier trial's config)
    params TEXT NOT NULL,         -- JSON object, dotted key -> value exactly as written into the config
    state TEXT NOT NULL,          -- running | complete | pruned | fail
    value REAL,                   -- complete: the best value, pruned: the best value by `step`
    step INTEGER,                 -- the last epoch told
    asked_at REAL NOT NULL,
    told_at REAL
);
"""


SCHEMA = [statement.strip() for statement in SCHEMA_TEXT.split(";") if statement.strip()]


# Columns added after a table was first created (CREATE TABLE IF NOT EXISTS leaves old tables as they are).
ADDED_COLUMNS = (("configs", "next_mode", "TEXT"), ("configs", "walltime_s", "INTEGER"),
                  ("configs", "log_context", "TEXT"), ("attempts", "left_queue_at", "REAL"),
                  ("attempts", "stuck", "TEXT"))


def check_version(store: Store) -> None:
    version = store.get_meta("schema_version")
    if version is not None and int(version) > SCHEMA_VERSION:
        raise RuntimeFailure(f"{store.paths.db}: state written by a newer hpc-sweep (schema {version}); "
                             "upgrade hpc-sweep")


def missing_schema(conn: sqlite3.Connection) -> tuple[list, list]:
    """The CREATE statements of tables the database lacks, and the (table, column, type) it lacks."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    creates = [s for s in SCHEMA if s.startswith("CREATE TABLE") and table_of(s) not in tables]
    columns = []
    for table, column, kind in ADDED_COLUMNS:
        if table in tables and column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            columns.append((table, column, kind))
    return creates, columns


def table_of(statement: str) -> str:
    return statement.split("EXISTS", 1)[1].split("(", 1)[0].strip()


def bring_up_to_date(store: Store) -> None:
    """Tables, columns and schema version of this hpc-sweep, in one transaction, only where anything lacks."""
    creates, columns = missing_schema(store.conn)
    has_meta = not any(table_of(s) == "meta" for s in creates)
    if has_meta:
        check_version(store)
    indexes = {row[0] for row in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    index_statements = [s for s in SCHEMA if s.startswith("CREATE INDEX") and
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


def shadow_missing_schema(conn: sqlite3.Connection) -> None:
    """A read session of an older database: what it lacks is provided by TEMP objects (SQLite looks names up in
    TEMP first), so it reads like a current one without a byte of it changing."""
    creates, columns = missing_schema(conn)
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
