"""A generic-program sweep on the stand-in Slurm, driven through ``hpc_sweep.cli.main`` in this process.

Each :meth:`ModelSweep.cli` call is one simulated hpc-sweep process: fault passes counted from zero, a kill at
``*@N`` (``HPC_SWEEP_FAULT``) raising :class:`Killed` instead of SIGKILL, scheduler commands answered by the
stand-in (``hpc_sweep.common.shell.stand_in``), ``time.time``/``time.sleep`` on the simulated clock, and every write to
the state database checked against the writers' lock as the kernel sees it (``/proc/locks``), whatever code
path took or skipped the lock. A second process holding the lock (cron overlap) is :meth:`ModelSweep.lock_holder`.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Union

import tomli_w

from hpc_sweep import cli
from hpc_sweep.common import faults, shell
from hpc_sweep.state import health, store
from hpc_sweep.state.lock import LOCK_TIMEOUT_ENV

from standin.slurm import Clock, StandInSlurm
from standin.tasks import Workspace

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")


class Killed(BaseException):
    """hpc-sweep killed at a fault point (SIGKILL in production; here the simulated process ends)."""


@dataclass
class Outcome:
    args: tuple
    rc: int
    out: str
    err: str
    killed_at: Optional[str] = None  # the fault point the process was killed at


class LockAudit:
    """Every statement that writes the state database is checked: does this process hold a POSIX write lock on
    ``.hpc_sweep/lock`` at that moment (``/proc/locks``)? Violations are kept as readable lines."""

    def __init__(self, lock: Path):
        self.lock = lock
        self.violations: List[str] = []
        self.command = ""
        self.writes = 0

    def statement(self, sql: str) -> None:
        words = sql.lstrip().split(None, 1)
        verb = words[0].upper() if words else ""
        if verb not in WRITES or (verb == "CREATE" and "IF NOT EXISTS" in sql.upper()):
            return  # the schema script every opening runs changes nothing once the tables exist
        self.writes += 1
        if not self.held():
            self.violations.append(f"hpc-sweep {self.command}: {' '.join(sql.split())[:160]}")

    def held(self) -> bool:
        try:
            st = os.stat(self.lock)
        except FileNotFoundError:
            return False
        wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        pid = str(os.getpid())
        with open("/proc/locks", encoding="ascii") as handle:
            for line in handle:
                fields = line.split()
                # "1: POSIX  ADVISORY  WRITE 17573 fe:00:2146717 0 EOF" (a blocked waiter has "->" after the id)
                if "->" in fields:
                    continue
                if len(fields) >= 6 and fields[1] == "POSIX" and fields[3] == "WRITE" and fields[4] == pid \
                        and fields[5] == wanted:
                    return True
        return False


CALL_GAP_S = 5  # simulated seconds between two hpc-sweep commands (the profile's poll_min_interval is 1 s)
BASE_CONFIG = {"lr": 0.1, "output_dir": ""}


class ModelSweep:
    """One sweep folder, its stand-in cluster and the in-process CLI."""

    def __init__(self, root: Path, configs: int = 3, cap: Optional[int] = None, accounting: bool = True,
                 throttle: Optional[int] = None, foreign_job: bool = False, max_retries: int = 1,
                 early_stop: bool = False):
        self.root = root / "sweep"
        self.ws = Workspace(root / "standin")
        self.clock = Clock(self.ws.clock_file)
        self.slurm = StandInSlurm(self.ws, self.clock, getpass.getuser(), cap=cap, accounting=accounting)
        self.site_cap = cap
        self.foreign = self.slurm.add_foreign_job() if foreign_job else None
        self.audit = LockAudit(self.root / ".hpc_sweep" / "lock")
        self.outcomes: List[Outcome] = []
        self.names = [f"config{i:03d}" for i in range(1, configs + 1)]
        self.early_stop = early_stop
        self._write_sweep(configs, throttle, max_retries, early_stop)
        done = self.cli("generate", str(self.root))
        assert done.rc == 0, done

    def _write_sweep(self, configs: int, throttle: Optional[int], max_retries: int, early_stop: bool) -> None:
        (self.root / "configs").mkdir(parents=True)
        (self.root / "configs" / ".base_config.toml").write_text(tomli_w.dumps(BASE_CONFIG))
        site = {"scheduler": "slurm", "poll_min_interval": "1s", "walltime": "1:00:00", "cpus_per_task": 1,
                "mem": "100M"}
        if throttle is not None:
            site["array_throttle"] = throttle
        (self.root / "site.toml").write_text(tomli_w.dumps(site))
        (self.root / "sweep.toml").write_text(tomli_w.dumps({
            "sweep": {"name": "model", "program": "generic", "base": "configs/.base_config.toml",
                      "command": f"sh {self.ws.trainer} {{name}} {{outputs_dir}} {{config}}", "site": "site.toml",
                      "max_retries": max_retries, "device": "cpu"},
            "grid": {"lr": [round(0.1 * (i + 1), 2) for i in range(configs)]},
            "log": {"path": "train.log", "epoch": "epoch (\\d+)", "train_loss": "train_loss ([0-9.]+)",
                    "val_loss": "val_loss ([0-9.]+)", "outputs_key": "output_dir"},
            # The trainer's first epoch ranks the configs (config001 best): asha judges each run at epoch 1.
            **({"early_stop": {"rule": "asha", "min_epochs": 1, "reduction": 2, "rungs": [1]}} if early_stop else {}),
        }))

    # -- one simulated hpc-sweep process ---------------------------------------------------------------------
    def cli(self, *args: str, kill_at: Union[int, str, None] = None) -> Outcome:
        """Run one hpc-sweep command. ``kill_at``: N kills at the N-th fault point of any name (``*@N``), a string
        is passed as it is (``after_submit``, ``after_call@2``)."""
        self.clock.advance(CALL_GAP_S)
        out, err = io.StringIO(), io.StringIO()
        outcome = Outcome(args=args, rc=0, out="", err="")
        self.audit.command = " ".join(args[:1] + args[2:])
        with self._in_process(kill_at), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(list(args))
            except SystemExit as exc:
                outcome.rc = exc.code if isinstance(exc.code, int) else 1
            except Killed as exc:
                outcome.rc, outcome.killed_at = -9, str(exc)
        outcome.out, outcome.err = out.getvalue(), err.getvalue()
        self.outcomes.append(outcome)
        return outcome

    @contextlib.contextmanager
    def _in_process(self, kill_at: Union[int, str, None]) -> Iterator[None]:
        saved = (shell.stand_in, faults.on_fault, time.time, time.sleep, store.connect, health.connect,
                 os.environ.get(faults.ENV))
        original_connect = health.connect

        def connect(*args, **kwargs):
            conn = original_connect(*args, **kwargs)
            conn.set_trace_callback(self.audit.statement)
            return conn

        def killed(point: str) -> None:
            raise Killed(point)

        faults.reset()
        # The lock's wait counts wall time (the simulated clock does not move it): a command that finds the lock
        # held gives up at once instead of after the real minute.
        saved_wait = os.environ.get(LOCK_TIMEOUT_ENV)
        os.environ[LOCK_TIMEOUT_ENV] = "0.05"
        if kill_at:
            os.environ[faults.ENV] = kill_at if isinstance(kill_at, str) else f"*@{kill_at}"
        else:
            os.environ.pop(faults.ENV, None)
        shell.stand_in, faults.on_fault, store.connect, health.connect = self.slurm, killed, connect, connect
        time.time, time.sleep = self.clock.now, self.clock.advance
        try:
            yield
        finally:
            shell.stand_in, faults.on_fault, time.time, time.sleep, store.connect, health.connect, env = saved
            if env is None:
                os.environ.pop(faults.ENV, None)
            else:
                os.environ[faults.ENV] = env
            faults.reset()
            if saved_wait is None:
                os.environ.pop(LOCK_TIMEOUT_ENV, None)
            else:
                os.environ[LOCK_TIMEOUT_ENV] = saved_wait

    # -- observing -------------------------------------------------------------------------------------------
    def status(self) -> dict:
        """``status --format json``, by config name."""
        done = self.cli("status", str(self.root), "--format", "json")
        assert done.rc == 0, done
        return {c["config"]: c for c in json.loads(done.out)["configs"]}

    def open_submissions(self) -> list:
        """Submissions the state database still holds open (intent, unknown), read-only between commands."""
        import sqlite3

        conn = sqlite3.connect(f"file:{self.root / '.hpc_sweep' / 'state.db'}?mode=ro", uri=True)
        try:
            return [tuple(r) for r in conn.execute(
                "SELECT name, status FROM submissions WHERE status IN ('intent', 'unknown')")]
        finally:
            conn.close()

    def ran_whole(self, config: str, attempt: int) -> bool:
        """The trainer's last-written file of this attempt exists."""
        return (self.root / "outputs" / config / f"finished.{attempt}").exists()

    # -- a second process holding the writers' lock (cron overlap) ------------------------------------------------
    @contextlib.contextmanager
    def lock_holder(self) -> Iterator[int]:
        code = ("import fcntl, sys\n"
                f"handle = open({str(self.audit.lock)!r}, 'a+')\n"
                "fcntl.lockf(handle, fcntl.LOCK_EX)\n"
                "print('held', flush=True)\n"
                "sys.stdin.read()\n")
        self.audit.lock.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout.readline().strip() == "held"
            yield proc.pid
        finally:
            proc.stdin.close()  # it reads to the end, exits, and the kernel drops its lock
            proc.wait(timeout=30)
            proc.stdout.close()

    def close(self) -> None:
        self.slurm.cleanup()
