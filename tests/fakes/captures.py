"""Reading the captured scheduler output under tests/fixtures for the adapter tests.

The captures live in the repository (copied from the project's shared fixture store with their provenance
READMEs), so a fresh clone tests the same bytes; a missing folder or file is an error, never a skip.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

from hpc_sweep.schedulers.base import CommandResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_folder(*parts: str) -> Path:
    """A folder of captures under tests/fixtures; raises at import (collection) when the folder is missing."""
    folder = FIXTURES.joinpath(*parts)
    if not folder.is_dir():
        raise FileNotFoundError(f"fixture folder {folder} missing: the repository's tests/fixtures is incomplete")
    return folder


def fixture_files(folder: Path) -> List[str]:
    """Every capture in ``folder`` (the README describing them is not one)."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix == ".txt")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="surrogateescape")


def captured_result(path: Path, argv: Tuple[str, ...] = ("qstat",)) -> CommandResult:
    """A session capture as the shell module would hand it over.

    The OpenPBS captures interleave what the terminal showed: ``qstat: ...`` lines are stderr and
    ``rc=N`` lines the exit status (c_parent_json_done_noX.txt holds two runs of the same command).
    """
    stdout: List[str] = []
    stderr: List[str] = []
    rc = 0
    for line in read(path).splitlines(keepends=True):
        # "}rc=35": the JSON without Jobs has no trailing newline, so the shell's rc echo follows the brace.
        m = re.match(r"^(\}?)rc=(\d+)\s*$", line)
        if m:
            stdout.append(m.group(1))
            rc = int(m.group(2))
        elif line.startswith(("qstat: ", "qsub: ", "qdel: ")):
            if line not in stderr:  # the second run's copy of the same message
                stderr.append(line)
        else:
            stdout.append(line)
    return CommandResult(argv=list(argv), returncode=rc, stdout="".join(stdout), stderr="".join(stderr))


def stderr_result(path: Path, returncode: int, argv: Tuple[str, ...] = ("qstat",)) -> CommandResult:
    """A capture that is a failed command's stderr (exit codes from the fixture README where known)."""
    return CommandResult(argv=list(argv), returncode=returncode, stdout="", stderr=read(path))


def stdout_result(path: Path, argv: Tuple[str, ...] = ("qstat",), returncode: int = 0) -> CommandResult:
    return CommandResult(argv=list(argv), returncode=returncode, stdout=read(path), stderr="")


_STATE_LETTERS = set("BCEFHMQRSTUWX")


def table_rows(path: Path) -> List[Tuple[str, str]]:
    """(job id as printed, state letter) for each row of a tabular ``qstat`` listing.

    Only used to cross-check the adapters: plain qstat truncates ids, so the adapters never read it. The
    state is the last one-letter column (the default layout ends with the queue, ``-a``/``-u`` with the
    elapsed time, ``-n -1`` with the host).
    """
    rows: List[Tuple[str, str]] = []
    seen_rule = False
    for line in read(path).splitlines():
        if line.startswith("---"):
            seen_rule = True
            continue
        if not seen_rule or not line.strip():
            continue
        words = line.split()
        letters = [w for w in words[1:] if len(w) == 1 and w in _STATE_LETTERS]
        rows.append((words[0], letters[-1]))
    return rows
