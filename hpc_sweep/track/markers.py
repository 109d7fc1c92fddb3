"""The job-written markers in ``.hpc_sweep/markers/``: ``<config>.<attempt>.start`` (host, time, job name and ids),
``<config>.<attempt>.exit`` (exit code, time), and ``<config>.<attempt>.duplicate.<task>`` (a second task of the
same attempt, stopped by the job script's claim guard). Read from one directory listing; a file is opened only
when its content is needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional


class Markers:
    """The job-written markers, from one directory listing; a file is opened only when its content is needed
    (a poll of 10,000 running tasks must not read 10,000 start markers it already knows)."""

    def __init__(self, folder: Path):
        try:
            self.names = set(os.listdir(folder))
        except FileNotFoundError:
            self.names = set()
        self.folder = folder
        self._cache: dict = {}
        self.duplicates = [name for name in self.names if ".duplicate." in name]  # written by the claim guard

    def has(self, key: str, kind: str) -> bool:
        return f"{key}.{kind}" in self.names

    def load(self, key: str, kind: str) -> Optional[dict]:
        name = f"{key}.{kind}"
        if name not in self.names:
            return None
        if name not in self._cache:
            try:
                with open(self.folder / name, encoding="utf-8") as handle:
                    self._cache[name] = json.load(handle)
            except (OSError, ValueError):
                self._cache[name] = None  # being written: the next poll reads it
        return self._cache[name]

    def get(self, key: str, default=None) -> dict:
        found = {kind: self.load(key, kind) for kind in ("start", "exit") if self.has(key, kind)}
        return {k: v for k, v in found.items() if v is not None} or (default if default is not None else {})

    def __getitem__(self, key: str) -> dict:
        return self.get(key)


def read_markers(markers_dir: Path) -> Markers:
    return Markers(markers_dir)
