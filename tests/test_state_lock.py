"""The state database and its lock: a session that writes holds the writers' lock (and only such a session writes);
a database another process holds is busy, not corrupt; a file system that cannot lock is an error, not "held".

Stand-in Slurm commands on PATH (they log every call) stand for the scheduler; a second process holding the lock
or an SQLite write transaction stands for a concurrent hpc-sweep.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.common.layout import SweepPaths
from hpc_sweep.session import Session

SBATCH = """#!/bin/sh
echo "sbatch $*" >> "$FAKE_CALLS"
n=$(grep -c '^sbatch ' "$FAKE_CALLS")
echo "$((700 + n))"
"""
QUIET = "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> \"$FAKE_CALLS\"\nexit 0\n"
SQUEUE = QUIET.replace("exit 0", "[ -f \"$FAKE_QUEUE\" ] && cat \"$FAKE_QUEUE\"\nexit 0")  # the queue a test writes

SWEEP_TOML = """\
[sweep]
name = "locks"
program = "generic"
base = "configs/.base_config.toml"
command = "true {config}"
site = "slurm"
[grid]
lr = [0.1, 0.2, 0.3]
[log]
path = "train.log"
epoch = "epoch (\\\\d+)"
"""


class StandInSweep:
    """A generic sweep on the slurm profile whose sbatch/squeue/... are stand-ins that log each call."""

    def __init__(self, tmp_path: Path):
        self.root = tmp_path / "sweep"
        (self.root / "configs").mkdir(parents=True)
        (self.root / "configs" / ".base_config.toml").write_text("lr = 0.5\n")
        (self.root / "sweep.toml").write_text(SWEEP_TOML)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name in ("sbatch", "squeue", "sacct", "scontrol", "sacctmgr", "scancel", "sinfo"):
            (bin_dir / name).write_text({"sbatch": SBATCH, "squeue": SQUEUE}.get(name, QUIET))
            (bin_dir / name).chmod(0o755)
        self.calls = tmp_path / "calls"
        self.calls.touch()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HPC_SWEEP_")}
        self.queue = tmp_path / "queue"  # lines in squeue's format (hpc_sweep's LIVE_FORMAT), if a test wants any
        self.env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_CALLS=str(self.calls),
                        FAKE_QUEUE=str(self.queue))
        self.paths = SweepPaths.at(self.root)
        self.cli("generate", str(self.root))

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True,
                              env={**self.env, **env}, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"hpc-sweep {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def sbatch_calls(self) -> int:
        return sum(1 for line in self.calls.read_text().splitlines() if line.startswith("sbatch "))

    def states(self) -> dict:
        snapshot = json.loads(self.cli("status", str(self.root), "--format", "json").stdout)
        return {c["config"]: c["state"] for c in snapshot["configs"]}


class OtherProcessLock:
    """The writers' lock as another hpc-sweep holds it: lockf on .hpc_sweep/lock, taken by a child process (a POSIX
    lock belongs to a process: the test's own would not stop an in-process session)."""

    def __init__(self, paths: SweepPaths):
        code = ("import fcntl, sys\nh = open(sys.argv[1], 'a+')\nfcntl.lockf(h, fcntl.LOCK_EX)\n"
                "print('held', flush=True)\nsys.stdin.readline()\n")
        self.child = subprocess.Popen([sys.executable, "-c", code, str(paths.lock)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        assert self.child.stdout.readline().strip() == "held"

    def release(self) -> None:
        self.child.stdin.close()
        self.child.wait(timeout=30)


def one_line(stderr: str) -> str:
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr, repr(stderr)
    return stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sweep(tmp_path) -> StandInSweep:
    return StandInSweep(tmp_path)


# -- item 3: a session that writes takes the lock -------------------------------------------------------------------
def test_status_refresh_waits_for_the_writers_lock(sweep):
    """While another hpc-sweep holds the lock, `status --refresh` neither polls nor submits: it waits, and at the
    end of the wait says the lock is held (exit 1). Once the lock is free it polls and submits."""
    lock = OtherProcessLock(sweep.paths)
    try:
        held = sweep.cli("status", str(sweep.root), "--refresh", check=False, HPC_SWEEP_LOCK_TIMEOUT="0.5")
        assert held.returncode == 1, (held.stdout, held.stderr)
        assert str(sweep.paths.lock) in one_line(held.stderr) and "another hpc-sweep" in held.stderr
        assert sweep.sbatch_calls() == 0 and not sweep.calls.read_text()
    finally:
        lock.release()
    sweep.cli("status", str(sweep.root), "--refresh")
    assert sweep.sbatch_calls() == 1
    assert set(sweep.states().values()) == {"pending"}


def test_a_second_poll_while_one_runs_exits_0_at_once(sweep):
    lock = OtherProcessLock(sweep.paths)
    try:
        second = sweep.cli("poll", str(sweep.root), "-v", HPC_SWEEP_LOCK_TIMEOUT="600")
    finally:
        lock.release()
    assert "another poll is running; nothing done" in second.stdout and second.stderr == ""
    assert not sweep.calls.read_text()


@pytest.mark.parametrize("command", [("submit",), ("cancel", "--yes"), ("resubmit", "config001"), ("generate",)])
def test_every_writing_command_waits_for_the_lock(sweep, command):
    lock = OtherProcessLock(sweep.paths)
    try:
        held = sweep.cli(command[0], str(sweep.root), *command[1:], check=False, HPC_SWEEP_LOCK_TIMEOUT="0.3")
    finally:
        lock.release()
    assert held.returncode == 1 and "another hpc-sweep" in one_line(held.stderr)
    assert not sweep.calls.read_text()


def test_reading_needs_no_lock_and_changes_no_byte(sweep):
    """status, report and the notebook API read while another hpc-sweep holds the lock, without waiting, and leave
    the database byte for byte as it was."""
    sweep.cli("submit", str(sweep.root))
    before = digest(sweep.paths.db)
    lock = OtherProcessLock(sweep.paths)
    try:
        assert set(sweep.states().values()) == {"pending"}
        sweep.cli("report", str(sweep.root), "--format", "markdown", "--out", str(sweep.root / "r.md"),
                  HPC_SWEEP_LOCK_TIMEOUT="0")
        from hpc_sweep.api import load

        with load(sweep.root) as loaded:
            assert [r["config"] for r in loaded.status()["configs"]] == ["config001", "config002", "config003"]
    finally:
        lock.release()
    assert digest(sweep.paths.db) == before


def test_a_read_session_of_an_older_database_reads_it_without_writing(sweep):
    """An older hpc-sweep's database (no schema_version, configs without the later columns, no events table) is
    read as it is: no ALTER, no CREATE, no schema version written. The next write session brings it up to date."""
    conn = sqlite3.connect(sweep.paths.db)
    old_columns = [row[1] for row in conn.execute("PRAGMA table_info(configs)")
                   if row[1] not in ("next_mode", "walltime_s", "log_context")]
    conn.execute(f"CREATE TABLE old_configs AS SELECT {', '.join(old_columns)} FROM configs")
    conn.execute("DROP TABLE configs")
    conn.execute("ALTER TABLE old_configs RENAME TO configs")
    conn.execute("DROP TABLE events")
    conn.execute("DELETE FROM meta WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = digest(sweep.paths.db)
    assert set(sweep.states().values()) == {"generated"}
    with Session.open(sweep.root) as session:
        assert session.store.events() == [] and session.store.config("config001").next_mode is None
    assert digest(sweep.paths.db) == before
    sweep.cli("submit", str(sweep.root))
    conn = sqlite3.connect(sweep.paths.db)
    assert {row[1] for row in conn.execute("PRAGMA table_info(configs)")} >= {"next_mode", "walltime_s",
                                                                              "log_context"}
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    conn.close()
    assert set(sweep.states().values()) == {"pending"}


def test_the_store_refuses_writes_without_the_lock(sweep):
    from hpc_sweep.state.lock import LockHeld

    with Session.open(sweep.root) as reader:
        with pytest.raises(RuntimeError, match="internal: write without the sweep lock"):
            with reader.store.transaction():
                pass
        with pytest.raises(RuntimeError, match="internal: write without the sweep lock"):
            reader.store.backup()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.store.conn.execute("UPDATE configs SET state = 'failed'")
    writer = Session.open(sweep.root, write=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):  # outside an explicit transaction
            writer.store.set_config_state("config001", "failed")
        with writer.store.transaction():
            writer.store.set_config_state("config001", "waiting", "by the test")
        with pytest.raises(LockHeld):
            Session.open(sweep.root, write=True, blocking=False)
    finally:
        writer.close()
    with pytest.raises(RuntimeError, match="internal: write without the sweep lock"):
        with writer.store.transaction():
            pass
    assert sweep.states()["config001"] == "waiting"


def test_a_read_session_records_no_detected_site(tmp_path, monkeypatch):
    """Site detection is remembered by a write session's next transaction, never by a read session."""
    sweep = StandInSweep(tmp_path)
    (sweep.root / "sweep.toml").write_text(SWEEP_TOML.replace('site = "slurm"\n', ""))
    monkeypatch.setenv("PATH", sweep.env["PATH"])
    monkeypatch.setenv("FAKE_CALLS", str(sweep.calls))
    before = digest(sweep.paths.db)
    with Session.open(sweep.root) as reader:
        assert reader.profile.scheduler in ("slurm", "local")
    assert digest(sweep.paths.db) == before
    with Session.open(sweep.root, write=True) as writer:
        detected = writer.profile.name
        with writer.store.transaction():
            pass
    with Session.open(sweep.root) as reader:
        assert reader.store.get_meta("detected_site") == detected


# -- item 4: locked is not corrupt ------------------------------------------------------------------------------------
HOLDER = textwrap.dedent('''\
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("UPDATE configs SET reason = 'written while held' WHERE name = 'config001'")
    print("held", flush=True)
    sys.stdin.readline()                      # the test says when to let go
    conn.execute("UPDATE configs SET reason = 'committed by the holder' WHERE name = 'config001'")
    conn.execute("COMMIT")
    print("committed", flush=True)
    ''')


def test_a_database_held_by_another_process_is_busy_not_corrupt(sweep):
    """A process holding an exclusive SQLite lock for longer than the busy timeout: status and poll each fail in
    one line saying the state is being written (exit 1); nothing is renamed or restored; the holder's commit lands
    in the one state.db, which everything reads afterwards."""
    sweep.cli("poll", str(sweep.root), "--no-submit")  # a good backup exists: the old code restored it
    assert sweep.paths.db_backup.exists()
    inode = sweep.paths.db.stat().st_ino
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(sweep.paths.db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (("status", str(sweep.root)), ("poll", str(sweep.root), "--force")):
            busy = sweep.cli(*args, check=False, HPC_SWEEP_DB_TIMEOUT="0.5")
            assert busy.returncode == 1, (args, busy.stdout, busy.stderr)
            assert "being written by another hpc-sweep; try again" in one_line(busy.stderr)
            assert str(sweep.paths.db) in busy.stderr and "corrupt" not in busy.stderr
        assert not list(sweep.paths.state_dir.glob("state.db.corrupt-*"))
        assert sweep.paths.db.stat().st_ino == inode
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "committed"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    snapshot = json.loads(sweep.cli("status", str(sweep.root), "--format", "json").stdout)
    assert snapshot["configs"][0]["reason"] == "committed by the holder"
    assert sweep.paths.db.stat().st_ino == inode
    assert not list(sweep.paths.state_dir.glob("state.db.corrupt-*"))


def test_only_a_session_holding_the_lock_sets_a_damaged_database_aside(sweep):
    """A damaged state.db read while a writer holds the lock: status shows the last good copy (said on stderr)
    and renames nothing; the next write session restores it."""
    sweep.cli("submit", str(sweep.root))
    assert sweep.paths.db_backup.exists()
    with open(sweep.paths.db, "r+b") as handle:
        handle.write(b"no longer an SQLite database" * 8)
    lock = OtherProcessLock(sweep.paths)
    try:
        shown = sweep.cli("status", str(sweep.root), "--format", "json")
        assert "showing its last good copy" in one_line(shown.stderr) and "hpc-sweep repair" not in shown.stderr
        assert {c["state"] for c in json.loads(shown.stdout)["configs"]} == {"pending"}
        assert not list(sweep.paths.state_dir.glob("state.db.corrupt-*"))
    finally:
        lock.release()
    polled = sweep.cli("poll", str(sweep.root), "--no-submit")
    assert "restored the last good copy" in one_line(polled.stderr)
    assert len(list(sweep.paths.state_dir.glob("state.db.corrupt-*"))) == 1
    assert sweep.cli("status", str(sweep.root)).stderr == ""


# -- item 10: a file system that cannot lock ----------------------------------------------------------------------
def _failing_lockf(code: int):
    def lockf(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return lockf


def test_lockf_failing_for_another_reason_than_a_holder_is_an_error(sweep, monkeypatch):
    import fcntl

    from hpc_sweep.state.lock import LockHeld, acquire_lock

    monkeypatch.setattr(fcntl, "lockf", _failing_lockf(errno.ENOLCK))
    with pytest.raises(RuntimeFailure) as failure:
        acquire_lock(sweep.paths, blocking=False)
    assert not isinstance(failure.value, LockHeld)
    message = str(failure.value)
    assert str(sweep.paths.lock) in message and "ENOLCK" in message and "lockd" in message
    for code in (errno.EAGAIN, errno.EACCES):
        monkeypatch.setattr(fcntl, "lockf", _failing_lockf(code))
        with pytest.raises(LockHeld):
            acquire_lock(sweep.paths, blocking=False)


NO_LOCKS = textwrap.dedent('''\
    import errno, fcntl, os, sys
    def lockf(*args):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    fcntl.lockf = lockf          # an NFS mount without a lock daemon
    from hpc_sweep.cli import main
    main(sys.argv[1:])
    ''')


def test_a_cron_poll_on_a_file_system_without_locks_fails_loudly(sweep):
    """cron mails what a failing poll prints: exit 1 and one line naming the lock file, the error and the fix,
    instead of a silent "another poll is running" on every run."""
    done = subprocess.run([sys.executable, "-c", NO_LOCKS, "poll", str(sweep.root)], capture_output=True,
                          text=True, env=sweep.env, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert str(sweep.paths.lock) in one_line(done.stderr) and "ENOLCK" in done.stderr
    assert "file system" in done.stderr and not sweep.calls.read_text()
