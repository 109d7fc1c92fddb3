"""Log reading shared with forked worker processes (large polls) ends exactly as reading alone does, also when a
worker dies, and over several polls (cursors and parser state handed back through the workers)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from hpc_sweep.track import progress
from hpc_sweep.cli import main
from hpc_sweep.track.poll import PollReport
from hpc_sweep.session import Session

REPO = Path(__file__).resolve().parents[1]
N_CONFIGS = 24

SWEEP_TOML = """\
[sweep]
name = "workers"
program = "deeph"
base = "configs/.base_config.toml"
command = "deeph-train {config}"
site = "local"

[grid]
"process.train.optimizer.init_learning_rate" = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
"model.advanced.num_blocks" = [2, 3, 4, 5]
"""


def _epoch(n: int, val: str) -> str:
    return (f"[ 01.01-00:{n % 60:02d}:00 ] [train] Epoch {n} | Time 60.00 s | Train-Loss {1.0 / n:.6e} | "
            f"Val-Loss {val} | Scale 1.0\n")


def _log_text(i: int, epochs: int) -> str:
    lines = ["[ 01.01-00:00:00 ]                  Version 1.0.6\n",
             f"[ 01.01-00:00:01 ] [model] The parameters size is `{1000 + i}`.\n"]
    lines += [_epoch(n, "nan" if (i == 5 and n == 3) else f"{2.0 / n + i / 100:.6e}") for n in range(1, epochs + 1)]
    return "".join(lines)


def _running_sweep(where: Path) -> Path:
    root = where / "sweep"
    main(["init", str(root), "--base", str(REPO / "examples" / "demo" / "base.toml"), "--site", "local"])
    (root / "sweep.toml").write_text(SWEEP_TOML)
    main(["generate", str(root)])
    session = Session.open(root, write=True)
    now = time.time()
    try:
        with session.store.transaction() as conn:
            for cfg in session.store.configs():
                i = cfg.idx
                conn.execute("INSERT INTO attempts (config, attempt, job_id, state, submitted_at, started_at) "
                             "VALUES (?, 1, ?, 'running', ?, ?)", (cfg.name, f"77_{i}", now - 60, now - 50))
                session.store.set_config_state(cfg.name, "running", attempt=1)
                if i % 7 == 3:
                    continue  # no log yet
                run = session.paths.config_outputs(cfg.name) / "2026-01-01_00-00-00"
                run.mkdir(parents=True, exist_ok=True)
                text = _log_text(i, 3 + i % 5)
                if i % 6 == 1:
                    text += "[ 01.01-00:09:00 ] [train] Epoch 99 | Time 6"  # cut mid-line: waits for its end
                (run / "deepx.log").write_text(text)
    finally:
        session.close()
    return root


def _grow_logs(root: Path, poll_number: int) -> None:
    for i, run in enumerate(sorted((root / "outputs").glob("*/2026-*"))):
        log = run / "deepx.log"
        if i % 3 == 0:
            with open(log, "a") as handle:
                handle.write(_epoch(50 + poll_number, f"{0.01 * poll_number:.6e}"))
        elif i % 5 == 0 and poll_number == 2:  # a resumed start in a newer folder
            newer = run.parent / "2026-01-02_00-00-00"
            newer.mkdir(exist_ok=True)
            (newer / "deepx.log").write_text(_log_text(i, 2))
        elif i % 11 == 0:
            log.write_text(_log_text(i, 1))  # rewritten shorter: read again from the start


def _tables(root: Path) -> tuple:
    session = Session.open(root)
    try:
        conn = session.store.conn
        progress_rows = [(*r[:3], _portable(r[3]), *r[4:-1]) for r in conn.execute(  # all but updated_at
            "SELECT config, attempt, log, cursor, parser_state, phase, epoch, max_epoch, train_loss, val_loss, "
            "best_val_loss, best_epoch, trend, updated_at FROM progress ORDER BY config")]
        epochs = [tuple(r) for r in conn.execute("SELECT * FROM epochs ORDER BY config, attempt, epoch")]
    finally:
        session.close()
    return progress_rows, epochs


def _portable(cursor_text):
    """The cursor without what differs between two copies of the same files (inode, device, times)."""
    cursor = json.loads(cursor_text)
    return cursor and {k: v for k, v in cursor.items() if k not in ("dev", "ino", "mtime", "outputs_mtime")}


def _poll_logs(root: Path, workers: int, monkeypatch) -> PollReport:
    monkeypatch.setattr(progress, "_worker_count", lambda n: workers)
    monkeypatch.setattr(progress, "CHUNK", 2)  # many chunks, taken by whichever process is free
    session = Session.open(root, write=True)
    try:
        report = PollReport()
        progress.update_progress(session, report)
        return report
    finally:
        session.close()


@pytest.fixture
def twin_sweeps(tmp_path) -> tuple:
    alone = _running_sweep(tmp_path / "alone")
    shared = tmp_path / "shared" / "sweep"
    shutil.copytree(alone, shared, symlinks=True)
    # Paths are stored absolute: the copy must live at the same place to compare; swap folders around instead.
    return alone, shared


def _same_place(root: Path, other: Path):
    """Run with ``other``'s files at ``root``'s path (the state stores absolute paths)."""
    keep = root.with_name(root.name + ".keep")
    root.rename(keep)
    other.rename(root)
    return keep


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_read_exactly_what_one_process_reads(twin_sweeps, monkeypatch, workers):
    alone, shared = twin_sweeps
    results = {}
    for mode, count in (("alone", 1), ("shared", workers)):
        if mode == "shared":
            keep = _same_place(alone, shared)
        snapshots = []
        for poll_number in (1, 2, 3):
            report = _poll_logs(alone, count, monkeypatch)
            snapshots.append((_tables(alone), report.bytes_read, report.new_epochs))
            _grow_logs(alone, poll_number)
        results[mode] = snapshots
        if mode == "shared":
            alone.rename(shared)
            keep.rename(alone)
    assert results["shared"] == results["alone"]
    first_tables = results["alone"][0][0]
    assert len(first_tables[0]) == N_CONFIGS - sum(1 for i in range(1, N_CONFIGS + 1) if i % 7 == 3)
    assert first_tables[1], "epochs were stored"


def test_a_dead_worker_has_its_chunks_read_by_the_poll(twin_sweeps, monkeypatch):
    alone, shared = twin_sweeps
    _poll_logs(alone, 1, monkeypatch)
    expected = _tables(alone)
    keep = _same_place(alone, shared)
    try:
        monkeypatch.setenv("HPC_SWEEP_FAULT", "log_worker")  # each worker dies once it has read one chunk
        poll_pid, take = os.getpid(), progress._take_chunks
        monkeypatch.setattr(progress, "_take_chunks",  # the chunks are left to the workers, so some are lost
                            lambda *a, **k: take(*a, **k) if os.getpid() != poll_pid else {})
        _poll_logs(alone, 3, monkeypatch)
        got = _tables(alone)
    finally:
        alone.rename(shared)
        keep.rename(alone)
    assert got == expected


def test_small_polls_stay_in_one_process(monkeypatch):
    assert progress._worker_count(progress.PARALLEL_FROM - 1) == 1
    monkeypatch.setattr(progress.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(progress.threading, "active_count", lambda: 1)
    assert progress._worker_count(10_000) == progress.MAX_WORKERS
    monkeypatch.setattr(progress.threading, "active_count", lambda: 2)
    assert progress._worker_count(10_000) == 1  # a threaded process is never forked


def _early_poll(root: Path, workers: int, monkeypatch, between) -> None:
    """As a poll does it: the reading starts before the scheduler's answer is applied (``between``)."""
    monkeypatch.setattr(progress, "_worker_count", lambda n: workers)
    monkeypatch.setattr(progress, "CHUNK", 2)
    session = Session.open(root, write=True)
    try:
        with progress.LogReading(session) as reading:
            between(session)
            progress.update_progress(session, PollReport(), reading)
    finally:
        session.close()


def test_reading_started_before_the_answer_is_applied(twin_sweeps, monkeypatch):
    """Workers start on running and pending configs; the scheduler's answer then starts some pending ones and
    one config's stored reading changes in between: the result equals reading everything afterwards."""
    alone, shared = twin_sweeps

    def pending_first(root: Path) -> None:
        session = Session.open(root, write=True)
        with session.store.transaction() as conn:
            conn.execute("UPDATE configs SET state = 'pending' WHERE idx % 2 = 0")
            conn.execute("UPDATE attempts SET state = 'pending', started_at = NULL "
                         "WHERE config IN (SELECT name FROM configs WHERE idx % 2 = 0)")
        session.close()

    def answer(session) -> None:  # half of the pending tasks started; config005's old reading was dropped
        with session.store.transaction() as conn:
            conn.execute("UPDATE configs SET state = 'running' WHERE idx % 4 = 0")
            conn.execute("UPDATE attempts SET state = 'running', started_at = 1 "
                         "WHERE config IN (SELECT name FROM configs WHERE idx % 4 = 0)")
            conn.execute("DELETE FROM progress WHERE config = 'config005'")
            conn.execute("DELETE FROM epochs WHERE config = 'config005'")

    results = {}
    for mode, count in (("alone", 1), ("shared", 3)):
        if mode == "shared":
            keep = _same_place(alone, shared)
        try:
            pending_first(alone)
            _poll_logs(alone, 1, monkeypatch)  # a first reading, so that progress rows exist
            _grow_logs(alone, 1)
            _early_poll(alone, count, monkeypatch, answer)
            results[mode] = _tables(alone)
        finally:
            if mode == "shared":
                alone.rename(shared)
                keep.rename(alone)
    got, expected = results["shared"], results["alone"]
    assert got == expected
    assert any(row[0] == "config004" for row in got[0]), "a config started by the answer was read"
    assert any(row[0] == "config005" for row in got[0])


def test_the_poll_reads_only_what_it_needs_of_the_chunks_it_takes(monkeypatch):
    """Chunks hold every config a poll might read (pending ones too); the poll reads only those it needs."""
    calls = []
    monkeypatch.setattr(progress, "scan_log", lambda program, cfg, outputs, contexts: calls.append(cfg.name) or
                        cfg.name)
    configs = [progress.LogTarget(name=f"c{i}", attempt=1, state="running", path="") for i in range(5)]
    chunks = [configs[0:2], configs[2:4], configs[4:5]]
    queue = progress._chunk_queue(len(chunks))
    try:
        wanted = {progress._scan_key(configs[1]), progress._scan_key(configs[4])}
        done = progress._take_chunks(None, chunks, queue, "/nowhere", {}, wanted)
    finally:
        os.close(queue)
    assert calls == ["c1", "c4"]
    assert sorted(done) == [0, 1, 2] and done[0][1] == "c1" and done[0][0] is progress._NOT_READ
