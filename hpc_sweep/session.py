"""A sweep opened for one command: its definition, folders, state, site profile, scheduler adapter and program.

Not a room of its own: it sits above the sweep definition (:mod:`hpc_sweep.sweep`) and below every verb that works
on an opened sweep (local, submit, results, track); it never imports those.

Two kinds, chosen when it is opened:

- a *read* session (the default: status, report, :mod:`hpc_sweep.api`) takes no lock and never changes the
  state database -- not even to bring an older one up to date or to recover a damaged one;
- a *write* session (``write=True``: generate, submit, poll, cancel, resubmit, repair ...) takes the writers' lock
  BEFORE the database is opened, keeps it until :meth:`Session.close`, and changes the database only inside
  explicit ``session.store.transaction()`` blocks. Nothing here commits on its own.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from hpc_sweep.common.layout import SweepPaths
from hpc_sweep.state.lock import SweepLock, acquire_lock
from hpc_sweep.state.store import Store, no_state_yet, open_store
from hpc_sweep.sweep.sweepfile import SweepSpec, load_sweep

if TYPE_CHECKING:
    from hpc_sweep.programs.base import Program
    from hpc_sweep.schedulers.base import Scheduler
    from hpc_sweep.sweep.sites import SiteProfile


class Session:
    """One sweep, opened for reading (no lock) or writing (the writers' lock held until :meth:`close`)."""

    def __init__(self, spec: SweepSpec, paths: SweepPaths, store: Store, lock: Optional[SweepLock] = None):
        self.spec = spec
        self.paths = paths
        self.store = store
        self.lock = lock

    @classmethod
    def open(cls, sweep_dir: Path, create: bool = False, write: bool = False, blocking: bool = True) -> "Session":
        """Open the sweep in ``sweep_dir``. ``write`` (implied by ``create``, which makes the state database where
        there is none) takes the writers' lock first: raises :class:`hpc_sweep.state.lock.LockHeld` when another
        process holds it (at once with ``blocking=False``; after a minute otherwise)."""
        return cls.for_spec(load_sweep(Path(sweep_dir)), create=create, write=write, blocking=blocking)

    @classmethod
    def for_spec(cls, spec: SweepSpec, create: bool = False, write: bool = False,
                 blocking: bool = True) -> "Session":
        paths = SweepPaths.at(spec.root)
        if not (write or create):
            return cls(spec, paths, open_store(paths))
        if not create and not paths.db.exists():
            raise no_state_yet(paths)  # before a lock file is made
        lock = acquire_lock(paths, blocking=blocking)
        try:
            session = cls(spec, paths, open_store(paths, create=create, lock=lock), lock)
            session._record_prefix()
        except BaseException:
            lock.release()
            raise
        return session

    @property
    def writing(self) -> bool:
        return self.store.writable

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            if self.lock is not None:
                self.lock.release()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the job-name prefix ---------------------------------------------------------------------------------------
    def _record_prefix(self) -> None:
        """A sweep folder made without init gets its job-name prefix in its first write session (one
        transaction, once): job names are made only in write sessions, after this."""
        if self.store.get_meta("prefix"):
            return
        from hpc_sweep.sweep.init import new_prefix

        with self.store.transaction():
            self.store.set_meta("prefix", new_prefix(self.spec.name))

    @property
    def prefix(self) -> str:
        """The job-name prefix recorded at init (or by the sweep's first write session)."""
        prefix = self.store.get_meta("prefix")
        if not prefix:
            raise RuntimeError("internal: this sweep has no job-name prefix yet (it is recorded by a write session)")
        return prefix

    # -- what the sweep runs on -------------------------------------------------------------------------------------
    @cached_property
    def profile(self) -> SiteProfile:
        from hpc_sweep.sweep.sites import load_profile, load_profile_file, profile_files

        site = self.spec.site
        if site in (None, "", "auto"):
            # Detection runs scheduler commands: remember the answer (a write session records it with its next
            # transaction; a read session only uses it).
            remembered = self.store.get_meta("detected_site")
            if remembered and remembered in profile_files():
                return load_profile_file(profile_files()[remembered], remembered)
            profile = load_profile(None)
            self.store.remember("detected_site", profile.name)
            return profile
        return load_profile(site, self.spec.root)

    @cached_property
    def scheduler(self) -> Scheduler:
        from hpc_sweep.schedulers import get_scheduler

        # What the limit queries found out (cached with them): the version decides Slurm's squeue --me.
        version = self.store.get_meta("scheduler_version")
        numbers = tuple(int(part) for part in version.split(".") if part.isdigit()) if version else None
        return get_scheduler(self.profile.scheduler, sweep_dir=self.paths.root, version=numbers or None,
                             me_refused=self.store.get_meta("squeue_me") == "refused")

    @cached_property
    def program(self) -> Program:
        from hpc_sweep.programs import get_program

        return get_program(self.spec.program, self.spec.log)
