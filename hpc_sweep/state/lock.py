"""The writers' lock, ``.hpc_sweep/lock``: a write session takes it before the database is opened and holds it to
its end, so one command at a time changes a sweep. POSIX ``lockf`` locks: they work on NFS with a lock daemon, and
a file system that cannot lock at all is an error, never a poll skipped in silence."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.common.layout import SweepPaths


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
