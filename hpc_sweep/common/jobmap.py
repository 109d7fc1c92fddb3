"""The index map: the tab-separated file beside each job script that names, per array index, the config, its
attempt, run config, output folder, device, GPUs and the environment the task exports.

Written by submit (one per submission), read by the job script, the local runner, adoption of orphans
(:mod:`hpc_sweep.submit.intents`) and ``hpc-sweep repair``. Columns: index, config, attempt, config file, outputs
folder, device, gpus, and -- only when a task has one -- its environment as ``NAME=VALUE`` words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from hpc_sweep.common.errors import UserError


@dataclass(frozen=True)
class MapEntry:
    index: int
    name: str
    attempt: int
    config_file: str
    outputs_dir: str
    device: str
    gpus: int
    env: tuple = ()  # ("NAME=VALUE", ...) the task exports before its command (e.g. for a resume)

    def line(self) -> str:
        fields = [str(self.index), self.name, str(self.attempt), self.config_file, self.outputs_dir, self.device,
                  str(self.gpus)]
        for value in fields:
            if "\t" in value or "\n" in value:
                raise UserError(f"'{value}' contains a tab or newline", fix="use paths without tabs or newlines")
        if self.env:  # only then an eighth column: maps without one read as before
            for word in self.env:
                if not _ENV_WORD.match(word):
                    raise ValueError(f"environment word {word!r} is not NAME=VALUE without blanks")
            fields.append(" ".join(self.env))
        return "\t".join(fields)


# What the job script exports as it is: a variable name, '=', a value without blanks (the words are split at
# blanks; read -a and a quoted export neither glob nor expand them).
_ENV_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[^\s]*\Z")


def env_words(env: dict) -> tuple:
    """A task's environment as map words, in a stable order."""
    return tuple(f"{name}={value}" for name, value in sorted(env.items()))


def map_text(entries: Sequence[MapEntry]) -> str:
    return "".join(entry.line() + "\n" for entry in entries)


def parse_map(text: str) -> list[MapEntry]:
    """Entries of a map; maps written before the environment column (7 columns) read with no environment."""
    entries = []
    for line in text.splitlines():
        if line.strip():
            idx, name, attempt, config, outputs, device, gpus, *rest = line.split("\t")
            env = tuple(rest[0].split()) if rest else ()
            entries.append(MapEntry(int(idx), name, int(attempt), config, outputs, device, int(gpus), env))
    return entries
