"""The store's typed rows: each row type names exactly its table's columns, and rows are read by column name, so a
database whose later columns were added at the end of its tables (an older sweep brought up to date) reads the same
as a new one."""

from __future__ import annotations

import json
import sqlite3

import pytest

from hpc_sweep.common.layout import SweepPaths
from hpc_sweep.state import rows
from hpc_sweep.state.lock import acquire_lock
from hpc_sweep.state.schema import ADDED_COLUMNS
from hpc_sweep.state.store import open_store

TABLES = {"configs": rows.ConfigRow, "submissions": rows.SubmissionRow, "attempts": rows.AttemptRow,
          "progress": rows.ProgressRow, "epochs": rows.CurveRow, "events": rows.EventRow,
          "early_stops": rows.EarlyStopRow}


@pytest.fixture
def paths(tmp_path):
    return SweepPaths.at(tmp_path)


def writable(paths):
    lock = acquire_lock(paths)
    return open_store(paths, create=True, lock=lock), lock


@pytest.mark.parametrize("table", sorted(TABLES))
def test_a_row_type_names_every_column_of_its_table(paths, table):
    store, lock = writable(paths)
    try:
        columns = [row[1] for row in store.conn.execute(f"PRAGMA table_info({table})")]
    finally:
        store.close()
        lock.release()
    assert sorted(columns) == sorted(TABLES[table]._fields)


def test_an_older_database_brought_up_to_date_reads_by_column_name(paths):
    """configs without next_mode, walltime_s and log_context (an older hpc-sweep's): the write session adds them
    after updated_at, and every field still reads its own column."""
    paths.state_dir.mkdir(parents=True)
    added = {column for table, column, _ in ADDED_COLUMNS if table == "configs"}
    conn = sqlite3.connect(paths.db)
    kept = [name for name in rows.ConfigRow._fields if name not in added]
    conn.execute(f"CREATE TABLE configs ({', '.join(kept)})")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    values = {"name": "config001", "idx": 1, "params": json.dumps({"lr": 0.1}), "params_key": "k", "path": "/c.toml",
              "digest": "d", "device": "gpu*8:0", "gpus": 1, "shape": "gpu:1", "state": "waiting", "attempt": 2,
              "reason": "why", "in_definition": 1, "updated_at": 12.5}
    conn.execute(f"INSERT INTO configs ({', '.join(kept)}) VALUES ({', '.join('?' * len(kept))})",
                 [values[name] for name in kept])
    conn.commit()
    conn.close()
    store, lock = writable(paths)
    try:
        with store.transaction() as write:
            write.execute("UPDATE configs SET next_mode = 'resume', walltime_s = 60, log_context = '{}'")
        columns = [row[1] for row in store.conn.execute("PRAGMA table_info(configs)")]
        assert columns[-len(added):] == [c for t, c, _ in ADDED_COLUMNS if t == "configs"]  # added at the end
        (row,) = store.configs()
    finally:
        store.close()
        lock.release()
    expected = dict(values, params={"lr": 0.1}, next_mode="resume", walltime_s=60, log_context="{}")
    assert row._asdict() == {name: expected[name] for name in rows.ConfigRow._fields}
