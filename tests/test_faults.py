"""Faults around the state and the files a poll reads and writes, on the local backend with real processes: the
hpc-sweep CLI, the detached runner, bash job scripts and a small trainer whose epochs the test releases one by one
(gate files), so every step is awaited on a condition, never on a fixed sleep.

What each test proves is in its docstring. The scheduler-side faults (kill -9 around sbatch, slurmctld/slurmdbd
stopped) are in tests/test_faults_slurm.py.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import tomli_w

from hpc_sweep.local.processes import signal_run
from hpc_sweep.local.spool import Spool
from slurm_cluster import wait_for  # tests/cluster, on sys.path through conftest.py

TRAINER = textwrap.dedent('''\
    """A trainer the test drives: epoch N is written once <gate>/<config>.<N> (or <gate>/all) exists."""
    import os, sys, time
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    with open(sys.argv[1], "rb") as handle:
        cfg = tomllib.load(handle)
    name, gate = os.environ["HPCS_NAME"], cfg["gate"]
    with open(os.path.join(gate, "starts.log"), "a") as handle:  # one line per run that started: duplicates show
        handle.write(name + " " + os.environ.get("HPCS_TASK_ID", "?") + "\\n")
    deadline = time.time() + 300
    for epoch in range(1, cfg["epochs"] + 1):
        while not (os.path.exists(os.path.join(gate, f"{name}.{epoch}")) or os.path.exists(os.path.join(gate, "all"))):
            if time.time() > deadline:
                sys.exit(3)
            time.sleep(0.05)
        with open(os.path.join(cfg["output_dir"], "train.log"), "a") as log:  # opened per line, as loggers that rotate
            log.write(f"epoch {epoch} train_loss {1.0 / epoch:.4f} val_loss {2.0 / epoch:.4f}\\n")
    ''')


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_SWEEP_", "CUDA_VISIBLE"))}
    env.update({"HPC_SWEEP_RUNNER_TICK": "0.1", "HPC_SWEEP_RUNNER_IDLE": "1", "HPC_SWEEP_RUNNER_GRACE": "1",
                "HPC_SWEEP_GPU_QUERY_S": "0.2", "HPC_SWEEP_NVIDIA_SMI": "false"})  # "false": no GPUs here
    env.update(extra)
    return env


class LocalSweep:
    """A generic-program sweep on the local backend, driven through the CLI."""

    def __init__(self, tmp_path: Path, lrs: list, epochs: int = 3):
        self.root = tmp_path / "sweep"
        self.gate = tmp_path / "gate"
        self.gate.mkdir()
        (self.root / "configs").mkdir(parents=True)
        (tmp_path / "train.py").write_text(TRAINER)
        (self.root / "configs" / ".base_config.toml").write_text(tomli_w.dumps(
            {"lr": 0.1, "epochs": epochs, "gate": str(self.gate), "output_dir": ""}))
        (self.root / "site.toml").write_text('scheduler = "local"\ncpu_slots = 4\npoll_min_interval = "1s"\n')
        (self.root / "sweep.toml").write_text(tomli_w.dumps({
            "sweep": {"name": "faults", "program": "generic", "base": "configs/.base_config.toml",
                      "command": f"{sys.executable} {tmp_path / 'train.py'} {{config}}", "site": "site.toml",
                      "walltime": "10m", "max_retries": 0},
            "grid": {"lr": lrs},
            "log": {"path": "train.log", "epoch": "epoch (\\d+)", "train_loss": "train_loss ([0-9.]+)",
                    "val_loss": "val_loss ([0-9.]+)", "outputs_key": "output_dir"},
        }))
        self.env = base_env()
        self.cli("generate", str(self.root))

    def cli(self, *args: str, check: bool = True, env=None, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True,
                              env=env or self.env, timeout=120, **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"hpc-sweep {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def status(self) -> dict:
        return {c["config"]: c for c in json.loads(self.cli("status", str(self.root), "--format", "json").stdout)[
            "configs"]}

    def poll_status(self) -> dict:
        self.cli("poll", str(self.root), "--force", "--no-submit")
        return self.status()

    def release(self, config: str = "all", *epochs: int) -> None:
        for epoch in epochs or (None,):
            (self.gate / (config if epoch is None else f"{config}.{epoch}")).touch()

    def starts(self) -> Counter:
        log = self.gate / "starts.log"
        return Counter(line.split()[0] for line in log.read_text().splitlines()) if log.exists() else Counter()

    def wait_states(self, wanted: set, timeout: float = 60) -> dict:
        return wait_for(lambda: (lambda s: s if {c["state"] for c in s.values()} <= wanted else None)(
            self.poll_status()), timeout, interval=0.2, what=f"every config in {wanted}")

    def stop(self) -> None:
        """Teardown: release every run, then make sure no runner or run of this sweep is left behind."""
        self.release()
        spool = Spool(self.root)
        try:
            wait_for(lambda: not spool.runner_alive(), 20, what="the runner to exit")
        except TimeoutError:
            pid = spool.runner_pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            with spool.locked():
                tasks = spool.load()["tasks"].values()
            for task in tasks:
                if task.get("state") == "running":
                    signal_run(task, signal.SIGKILL, whole_group=True)


@pytest.fixture
def sweeps():
    made: list = []
    yield made
    for sweep in made:
        sweep.stop()


def one_line(stderr: str) -> str:
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr, repr(stderr)
    return stderr


# -- the trainer's log ------------------------------------------------------------------------------------------
def test_log_rotated_deleted_and_truncated_mid_run_progress_continues(tmp_path, sweeps):
    """A log renamed away, deleted, or truncated in place while the run goes on: every poll exits 0 and keeps
    the last known numbers; the next file at the same path is read from its start, so progress and the loss
    curve continue to the last epoch."""
    sweep = LocalSweep(tmp_path, [0.1], epochs=6)
    sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    log = sweep.root / "outputs" / "config001" / "train.log"

    def at_epoch(n):
        return lambda: sweep.poll_status()["config001"]["epoch"] == n

    sweep.release("config001", 1, 2)
    wait_for(at_epoch(2), 30, interval=0.2, what="epoch 2")
    os.rename(log, log.with_name("train.log.1"))                 # rotated by rename
    after = sweep.poll_status()["config001"]
    assert after["state"] == "running" and after["epoch"] == 2
    sweep.release("config001", 3, 4)
    wait_for(at_epoch(4), 30, interval=0.2, what="epoch 4 from the new file")
    log.unlink()                                                 # deleted
    assert sweep.poll_status()["config001"]["epoch"] == 4
    sweep.release("config001", 5)
    wait_for(at_epoch(5), 30, interval=0.2, what="epoch 5 from the next new file")
    with open(log, "r+") as handle:                              # copytruncate: same file, emptied
        handle.truncate(0)
    sweep.cli("poll", str(sweep.root), "--force", "--no-submit")
    sweep.release("config001", 6)
    final = wait_for(lambda: (lambda c: c if c["state"] == "completed" and c["epoch"] == 6 else None)(
        sweep.poll_status()["config001"]), 30, interval=0.2, what="completion at epoch 6")
    assert final["val_loss"] == pytest.approx(2 / 6, abs=1e-3)
    from hpc_sweep.api import load

    with load(sweep.root) as loaded:
        assert [row["epoch"] for row in loaded.curves("config001")] == [1, 2, 3, 4, 5, 6]


# -- a config edited by hand -------------------------------------------------------------------------------------
def test_config_edited_after_submission_is_reported_once(tmp_path, sweeps):
    """A queued/running config whose file is changed by hand is named by the next poll ("edited after
    submission"), once, recorded as an event, and status keeps saying it; a file only touched (same bytes) is
    not reported."""
    sweep = LocalSweep(tmp_path, [0.1, 0.2])
    sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    sweep.wait_states({"running"})
    edited = sweep.root / "configs" / "config001.toml"
    edited.write_text(edited.read_text().replace("lr = 0.1", "lr = 0.5"))
    touched = sweep.root / "configs" / "config002.toml"
    os.utime(touched)
    first = sweep.cli("poll", str(sweep.root), "--force")
    lines = [line for line in first.stdout.splitlines() if "edited after submission" in line]
    assert len(lines) == 1 and "config001" in lines[0] and str(edited) in lines[0], first.stdout
    second = sweep.cli("poll", str(sweep.root), "--force")
    assert "edited" not in second.stdout
    status = sweep.status()
    assert "edited after submission" in (status["config001"]["reason"] or "")
    assert not status["config002"]["reason"]
    assert "edited after submission" in sweep.cli("status", str(sweep.root)).stdout
    saved = json.loads((sweep.root / "status.json").read_text())
    assert any("edited after submission" in (c["reason"] or "") for c in saved["configs"])
    sweep.release()
    sweep.wait_states({"completed"})


# -- status.json cannot be written -------------------------------------------------------------------------------
def test_status_json_write_failing_keeps_the_previous_file(tmp_path):
    """A poll whose status.json write fails (the file-size limit of the process is below the snapshot's size):
    exit 1 with one line naming status.json, the previous file byte for byte, no temporary file left; the next
    poll writes it again."""
    sweep = LocalSweep(tmp_path, [round(0.001 * i, 3) for i in range(1, 1001)])
    sweep.cli("poll", str(sweep.root), "--no-submit")
    snapshot = sweep.root / "status.json"
    previous = snapshot.read_bytes()
    json.loads(previous)
    # A second poll that changes nothing grows no database file and rewrites no backup: a limit of half the
    # snapshot's size lets everything but the snapshot be written.
    limit = len(previous) // 2
    assert len((sweep.root / "status.md").read_bytes()) < limit

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    failed = sweep.cli("poll", str(sweep.root), "--no-submit", "--force", check=False, preexec_fn=small_files)
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert str(snapshot) in one_line(failed.stderr) and "could not write" in failed.stderr
    assert snapshot.read_bytes() == previous
    assert not [p.name for p in sweep.root.iterdir() if p.name.endswith(".tmp")]
    before = snapshot.stat().st_mtime_ns
    sweep.cli("poll", str(sweep.root), "--no-submit", "--force")
    again = json.loads(snapshot.read_text())
    assert snapshot.stat().st_mtime_ns != before and len(again["configs"]) == 1000


# -- the state database ------------------------------------------------------------------------------------------
def _damage(db: Path, how: str) -> None:
    if how == "truncated":
        with open(db, "r+b") as handle:
            handle.truncate(db.stat().st_size // 3)
    elif how == "header-overwritten":
        with open(db, "r+b") as handle:
            handle.write(b"this is no longer an SQLite file" * 4)
    else:  # emptied
        db.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "header-overwritten", "emptied"])
def test_corrupt_state_db_is_restored_from_the_last_good_copy(tmp_path, sweeps, how):
    """A damaged state.db: status (a read session, no lock) says so in one line naming the file and shows the last
    good copy, renaming nothing; the next command that writes keeps the damaged copy aside and goes on from
    state.db.bak; the one after is silent."""
    sweep = LocalSweep(tmp_path, [0.1, 0.2, 0.3])
    sweeps.append(sweep)
    sweep.release()
    sweep.cli("submit", str(sweep.root))
    before = sweep.wait_states({"completed"})
    db = sweep.root / ".hpc_sweep" / "state.db"
    _damage(db, how)
    result = sweep.cli("status", str(sweep.root), "--format", "json")
    assert str(db) in one_line(result.stderr) and "showing its last good copy" in result.stderr
    shown = {c["config"]: c for c in json.loads(result.stdout)["configs"]}
    # The copy knows every submission (it is refreshed right after each); states and curves it missed are found
    # again by the next poll from the runner, the markers and the logs.
    assert {k: c["job_id"] for k, c in shown.items()} == {k: c["job_id"] for k, c in before.items()}
    assert not list(db.parent.glob("state.db.corrupt-*"))
    restored = sweep.cli("poll", str(sweep.root), "--force")
    assert str(db) in one_line(restored.stderr) and "restored the last good copy" in restored.stderr
    assert len(list(db.parent.glob("state.db.corrupt-*"))) == 1
    quiet = sweep.cli("poll", str(sweep.root), "--force")
    assert quiet.stderr == ""
    after = sweep.status()
    assert {k: (c["state"], c["epoch"], c["job_id"]) for k, c in after.items()} == \
        {k: (c["state"], c["epoch"], c["job_id"]) for k, c in before.items()}
    assert sweep.starts() == Counter({"config001": 1, "config002": 1, "config003": 1})


def test_corrupt_state_db_without_backup_is_a_clear_error(tmp_path):
    """No good copy to go back to (generated, never polled nor submitted): exit 1, one line naming state.db and
    the way out (hpc-sweep repair, not generate); repair keeps the damaged file aside and rebuilds the state."""
    sweep = LocalSweep(tmp_path, [0.1, 0.2])
    db = sweep.root / ".hpc_sweep" / "state.db"
    assert not (db.parent / "state.db.bak").exists()
    _damage(db, "header-overwritten")
    result = sweep.cli("poll", str(sweep.root), "--force", check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert str(db) in one_line(result.stderr) and "damaged" in result.stderr
    assert "hpc-sweep repair" in result.stderr and "generate" not in result.stderr
    again = sweep.cli("status", str(sweep.root), check=False)
    assert again.returncode != 0 and "hpc-sweep repair" in one_line(again.stderr)
    sweep.cli("repair", str(sweep.root))
    assert len(list(db.parent.glob("state.db.corrupt-*"))) == 1
    assert {c["state"] for c in sweep.status().values()} == {"generated"}


def test_restored_copy_knows_every_submission_nothing_runs_twice(tmp_path, sweeps):
    """The copy a damaged database is restored from is refreshed by submit too: restored after a submit (and no
    poll since), the state still knows the submission, and the next poll runs nothing a second time."""
    sweep = LocalSweep(tmp_path, [0.1, 0.2])
    sweeps.append(sweep)
    sweep.cli("poll", str(sweep.root), "--no-submit")          # a backup that knows nothing submitted
    sweep.cli("submit", str(sweep.root))
    wait_for(lambda: sum(sweep.starts().values()) == 2, 30, what="both runs to start")
    _damage(sweep.root / ".hpc_sweep" / "state.db", "header-overwritten")
    polled = sweep.cli("poll", str(sweep.root), "--force")
    assert "restored the last good copy" in one_line(polled.stderr)
    assert "submitted" not in polled.stdout
    sweep.release()
    sweep.wait_states({"completed"})
    sweep.cli("poll", str(sweep.root), "--force")
    assert sweep.starts() == Counter({"config001": 1, "config002": 1})


KILLED_WRITER = textwrap.dedent('''\
    import os, signal, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA cache_size = 1")  # pages spill into the file before the commit: the journal is hot
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE configs SET state = 'failed', reason = 'half written'")
    conn.execute("CREATE TABLE filler (x)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 1000,) for _ in range(500)])
    os.kill(os.getpid(), signal.SIGKILL)
    ''')


def test_writer_killed_inside_a_large_transaction_is_rolled_back_not_taken_for_corrupt(tmp_path):
    """A process killed in the middle of a large write leaves a hot journal beside state.db. The next command
    rolls it back -- same states, no 'corrupt' message, no file moved aside, no fallback to the backup."""
    sweep = LocalSweep(tmp_path, [0.1, 0.2, 0.3])
    sweep.cli("poll", str(sweep.root), "--no-submit")
    before = sweep.status()
    db = sweep.root / ".hpc_sweep" / "state.db"
    writer = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db)])
    assert writer.returncode == -signal.SIGKILL
    assert (db.parent / "state.db-journal").exists()
    with pytest.raises(sqlite3.OperationalError):  # what a read-only look at the file gets
        sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT * FROM configs").fetchall()
    result = sweep.cli("status", str(sweep.root), "--format", "json")
    assert result.stderr == ""
    assert {c["config"]: c["state"] for c in json.loads(result.stdout)["configs"]} == \
        {k: c["state"] for k, c in before.items()}
    assert not list(db.parent.glob("state.db.corrupt-*")) and not (db.parent / "state.db-journal").exists()


def test_poll_killed_while_writing_states_loses_nothing(tmp_path, sweeps):
    """kill -9 of a poll inside the transaction that records finished runs: the next command sees the states of
    before that poll (all or nothing), the next poll records them, and no run starts twice."""
    sweep = LocalSweep(tmp_path, [0.1, 0.2])
    sweeps.append(sweep)
    sweep.cli("submit", str(sweep.root))
    sweep.wait_states({"running"})
    sweep.release()
    markers = sweep.root / ".hpc_sweep" / "markers"
    wait_for(lambda: len(list(markers.glob("*.exit"))) == 2, 30, what="both runs to end")
    killed = sweep.cli("poll", str(sweep.root), "--force", check=False,
                       env=dict(sweep.env, HPC_SWEEP_FAULT="poll_mid_write"))
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    states = sweep.cli("status", str(sweep.root), "--format", "json")
    assert states.stderr == ""
    assert {c["state"] for c in json.loads(states.stdout)["configs"]} == {"running"}
    assert sweep.wait_states({"completed"}, timeout=30)
    assert sweep.starts() == Counter({"config001": 1, "config002": 1})
