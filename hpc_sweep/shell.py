"""The one place that runs scheduler commands. Adapters build argv and parse output; this runs them.

Every call can be logged (JSON lines in $HPC_SWEEP_CALL_LOG) so tests and benchmarks count scheduler calls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Mapping, Optional, Sequence

from hpc_sweep.schedulers.base import CommandResult

TIMED_OUT = 124
NOT_FOUND = 127


def run(argv: Sequence[str], timeout: float = 120, cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None, die_with_us: bool = False) -> CommandResult:
    """Run argv. ``die_with_us``: the child is killed if this process dies first (Linux), so a submit command
    still retrying against a slow controller cannot land after the next run reconciled its intent."""
    started = time.monotonic()
    preexec = _kill_when_parent_dies if die_with_us and sys.platform.startswith("linux") else None
    try:
        proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, cwd=cwd,
                              env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL,
                              preexec_fn=preexec)
        result = CommandResult(argv=list(argv), returncode=proc.returncode,
                               stdout=proc.stdout.decode("utf-8", "replace"),
                               stderr=proc.stderr.decode("utf-8", "replace"))
    except subprocess.TimeoutExpired:
        result = CommandResult(argv=list(argv), returncode=TIMED_OUT, stdout="",
                               stderr=f"{argv[0]}: timed out after {timeout:.0f} s")
    except FileNotFoundError:
        result = CommandResult(argv=list(argv), returncode=NOT_FOUND, stdout="",
                               stderr=f"{argv[0]}: command not found")
    _log(result, time.monotonic() - started)
    return result


def _kill_when_parent_dies() -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _log(result: CommandResult, seconds: float) -> None:
    path = os.environ.get("HPC_SWEEP_CALL_LOG")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"argv": list(result.argv), "rc": result.returncode,
                                 "seconds": round(seconds, 4)}) + "\n")


def detect_scheduler() -> Optional[str]:
    """slurm | pbspro | torque | None, by the reference's rules (Slurm first: it may ship qstat wrappers)."""
    from hpc_sweep.schedulers.detect import DETECT_ARGVS, detect_from_outputs

    slurm = run(DETECT_ARGVS["slurm"], timeout=20)
    if slurm.returncode == 0:
        return detect_from_outputs(slurm, None)
    pbs = run(DETECT_ARGVS["pbs"], timeout=20)
    if pbs.returncode == NOT_FOUND:
        return None
    return detect_from_outputs(None, pbs)
