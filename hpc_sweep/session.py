"""A sweep opened for one command: its definition, folders, state, site profile and scheduler adapter."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from hpc_sweep.layout import SweepPaths
from hpc_sweep.state import Store, open_store
from hpc_sweep.sweepfile import SweepSpec, load_sweep


class Session:
    def __init__(self, spec: SweepSpec, paths: SweepPaths, store: Store):
        self.spec = spec
        self.paths = paths
        self.store = store

    @classmethod
    def open(cls, sweep_dir: Path, create: bool = False) -> "Session":
        spec = load_sweep(Path(sweep_dir))
        paths = SweepPaths.at(spec.root)
        return cls(spec, paths, open_store(paths, create=create))

    def close(self) -> None:
        self.store.close()

    @property
    def prefix(self) -> str:
        return self.ensure_prefix()

    def ensure_prefix(self) -> str:
        """The job-name prefix recorded at init; a sweep folder made without init records one now, once."""
        prefix = self.store.get_meta("prefix")
        if not prefix:
            from hpc_sweep.init import new_prefix

            prefix = new_prefix(self.spec.name)
            with self.store.transaction():
                self.store.set_meta("prefix", prefix)
        return prefix

    @cached_property
    def profile(self):
        from hpc_sweep.sites import load_profile, load_profile_file, profile_files

        site = self.spec.site
        if site in (None, "", "auto"):
            # Detection runs scheduler commands: do it once per sweep and remember the answer.
            remembered = self.store.get_meta("detected_site")
            if remembered and remembered in profile_files():
                return load_profile_file(profile_files()[remembered], remembered)
            profile = load_profile(None)
            with self.store.transaction():
                self.store.set_meta("detected_site", profile.name)
            return profile
        return load_profile(site, self.spec.root)

    @cached_property
    def scheduler(self):
        from hpc_sweep.schedulers import get_scheduler

        return get_scheduler(self.profile.scheduler, sweep_dir=self.paths.root)

    @cached_property
    def program(self):
        from hpc_sweep.programs import get_program

        return get_program(self.spec.program, self.spec.log)

    def snapshot(self) -> dict:
        from hpc_sweep.status import collect

        return collect(self.store, self.spec.name, self.profile.scheduler)

    def render_status(self, fmt: str, states: tuple = (), sort: str = "config") -> str:
        from hpc_sweep.status import render

        return render(self.snapshot(), fmt, self.spec.swept_keys, states, sort)
