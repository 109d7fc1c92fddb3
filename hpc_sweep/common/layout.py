"""Where everything of a sweep lives (the DeepH tuning guide's layout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SweepPaths:
    root: Path

    @classmethod
    def at(cls, root) -> "SweepPaths":
        return cls(Path(root).resolve())

    sweep_file = property(lambda self: self.root / "sweep.toml")
    inputs = property(lambda self: self.root / "inputs")
    configs = property(lambda self: self.root / "configs")
    script = property(lambda self: self.root / "script")
    logs = property(lambda self: self.root / "logs")
    outputs = property(lambda self: self.root / "outputs")
    test = property(lambda self: self.root / ".test")
    state_dir = property(lambda self: self.root / ".hpc_sweep")
    db = property(lambda self: self.root / ".hpc_sweep" / "state.db")
    db_backup = property(lambda self: self.root / ".hpc_sweep" / "state.db.bak")
    lock = property(lambda self: self.root / ".hpc_sweep" / "lock")
    markers = property(lambda self: self.root / ".hpc_sweep" / "markers")
    status_md = property(lambda self: self.root / "status.md")
    status_json = property(lambda self: self.root / "status.json")

    def config_outputs(self, name: str) -> Path:
        return self.outputs / name

    def all_dirs(self) -> list[Path]:
        return [self.inputs, self.configs, self.script, self.logs, self.outputs, self.test, self.state_dir,
                self.markers]
