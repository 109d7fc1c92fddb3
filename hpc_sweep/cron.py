"""`hpc-sweep cron install|remove|show`: exactly one crontab line per sweep, running `hpc-sweep poll`.

cron starts commands with PATH=/usr/bin:/bin and no module setup, so the line carries what this shell had:
PATH and the scheduler's own variables, and the absolute path of this installation's executable.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from hpc_sweep.common.durations import parse_duration
from hpc_sweep.common.errors import RuntimeFailure, UserError

CARRIED = ("PATH", "LD_LIBRARY_PATH", "SLURM_CONF", "PBS_CONF_FILE", "PBS_SERVER", "PBS_DEFAULT", "PBS_HOME",
           "PBS_EXEC", "MODULEPATH", "HOME", "LANG")
TAG = "# hpc-sweep poll:"


def executable() -> str:
    """This installation's hpc-sweep, absolute: the console script beside the running Python."""
    beside = Path(sys.executable).parent / "hpc-sweep"
    if beside.is_file():
        return str(beside)
    found = shutil.which("hpc-sweep")
    if found:
        return str(Path(found).resolve())
    return f"{sys.executable} -m hpc_sweep.cli"


def schedule(every: str) -> str:
    try:
        seconds = parse_duration(every)
    except ValueError as exc:
        raise UserError(str(exc), key="--every") from None
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"*/{minutes} * * * *" if minutes > 1 else "* * * * *"
    hours = max(1, round(minutes / 60))
    if hours >= 24:
        return "0 0 * * *"
    return f"0 */{hours} * * *" if hours > 1 else "0 * * * *"


def cron_line(root: Path, every: str, env: Optional[dict] = None) -> str:
    env = dict(os.environ if env is None else env)
    assignments = " ".join(f"{k}={shlex.quote(env[k])}" for k in CARRIED if env.get(k))
    exe = executable()
    command = f"cd {shlex.quote(str(root))} && env {assignments} {exe} poll {shlex.quote(str(root))}"
    return f"{schedule(every)} {command} {TAG} {root}"


def _crontab_argv() -> list:
    return [os.environ.get("HPC_SWEEP_CRONTAB", "crontab")]


def read_crontab() -> list:
    try:
        proc = subprocess.run([*_crontab_argv(), "-l"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RuntimeFailure("crontab not found on this host; run 'hpc-sweep poll' by other means") from None
    if proc.returncode != 0:
        if "no crontab" in proc.stderr.lower():
            return []
        raise RuntimeFailure(f"crontab -l failed: {proc.stderr.strip()}")
    return proc.stdout.splitlines()


def write_crontab(lines: list) -> None:
    text = "".join(line + "\n" for line in lines)
    proc = subprocess.run([*_crontab_argv(), "-"], input=text, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeFailure(f"crontab - failed: {proc.stderr.strip()}")


def _ours(line: str, root: Path) -> bool:
    return line.rstrip().endswith(f"{TAG} {root}")


def install(root: Path, every: str) -> str:
    line = cron_line(root, every)
    kept = [l for l in read_crontab() if not _ours(l, root)]
    write_crontab(kept + [line])
    return line


def remove(root: Path) -> bool:
    lines = read_crontab()
    kept = [l for l in lines if not _ours(l, root)]
    if len(kept) != len(lines):
        write_crontab(kept)
        return True
    return False


def show(root: Path) -> Optional[str]:
    return next((l for l in read_crontab() if _ours(l, root)), None)


