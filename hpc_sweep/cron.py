"""`hpc-sweep cron install|remove|show [--via crontab|scrontab]`: exactly one entry per sweep, running `hpc-sweep poll`.

cron starts commands with PATH=/usr/bin:/bin and no module setup, so the entry carries what this shell had:
PATH and the scheduler's own variables, and the absolute path of this installation's executable.

Two ways to schedule the poll:

- ``crontab`` (the default): one line of the user's crontab on this machine. Many centres forbid user crontabs
  on login nodes: a ``crontab`` that is missing or refuses the user is one line naming the alternatives.
- ``scrontab`` (Slurm >= 20.11 with ``ScronParameters=enable``): the poll runs as a small scheduled Slurm job, our
  entry framed by marker comments among the user's other scrontab lines (:mod:`hpc_sweep.scrontab`). The sweep
  folder must be on a file system the compute nodes see.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from hpc_sweep.common.durations import parse_duration
from hpc_sweep.common.errors import RuntimeFailure, UserError

CARRIED = ("PATH", "LD_LIBRARY_PATH", "SLURM_CONF", "PBS_CONF_FILE", "PBS_SERVER", "PBS_DEFAULT", "PBS_HOME",
           "PBS_EXEC", "MODULEPATH", "HOME", "LANG")
TAG = "# hpc-sweep poll:"
VIA = ("crontab", "scrontab")
_ELSEWHERE = "on Slurm use 'hpc-sweep cron install --via scrontab', or run 'hpc-sweep poll' another way"
_FORBIDDEN = re.compile(r"not allowed|permission denied|not permitted", re.I)
SCRONTAB_TIMEOUT_S = 60


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


def carried_environment(env: Optional[dict] = None) -> dict:
    """What the entry carries of this shell's environment (cron has none of it)."""
    env = dict(os.environ if env is None else env)
    return {key: env[key] for key in CARRIED if env.get(key)}


def poll_command(root: Path, env: Optional[dict] = None) -> str:
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in carried_environment(env).items())
    return f"cd {shlex.quote(str(root))} && env {assignments} {executable()} poll {shlex.quote(str(root))}"


def cron_line(root: Path, every: str, env: Optional[dict] = None) -> str:
    return f"{schedule(every)} {poll_command(root, env)} {TAG} {root}"


# -- crontab ---------------------------------------------------------------------------------------------------------
def _crontab_argv() -> list:
    return [os.environ.get("HPC_SWEEP_CRONTAB", "crontab")]


def _run_crontab(args: list, text: Optional[str] = None) -> subprocess.CompletedProcess:
    """crontab, or one line saying why it cannot be used here (missing, or user crontabs forbidden)."""
    try:
        proc = subprocess.run([*_crontab_argv(), *args], input=text, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RuntimeFailure(f"crontab is not installed on this host; {_ELSEWHERE}") from None
    except PermissionError:
        raise RuntimeFailure(f"this host does not let you run crontab (permission denied); {_ELSEWHERE}") from None
    if proc.returncode != 0 and _FORBIDDEN.search(proc.stderr):
        said = next(line for line in proc.stderr.splitlines() if _FORBIDDEN.search(line)).strip()
        raise RuntimeFailure(f"this host does not let you use crontab ({said}); {_ELSEWHERE}")
    return proc


def read_crontab() -> list:
    proc = _run_crontab(["-l"])
    if proc.returncode != 0:
        if "no crontab" in proc.stderr.lower():
            return []
        raise RuntimeFailure(f"crontab -l failed: {proc.stderr.strip()}")
    return proc.stdout.splitlines()


def write_crontab(lines: list) -> None:
    proc = _run_crontab(["-"], "".join(line + "\n" for line in lines))
    if proc.returncode != 0:
        raise RuntimeFailure(f"crontab - failed: {proc.stderr.strip()}")


def crontab_usable() -> Tuple[bool, str]:
    """(usable, why not) for doctor: ``crontab -l`` answered (no crontab yet counts as usable)."""
    try:
        read_crontab()
    except RuntimeFailure as exc:
        return False, str(exc).split(";")[0]
    return True, ""


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


# -- scrontab --------------------------------------------------------------------------------------------------------
def _scrontab_lines() -> list:
    from hpc_sweep import scrontab

    try:
        return scrontab.parse_list(_run_scrontab(scrontab.list_argv()))
    except scrontab.ScrontabError as exc:
        raise RuntimeFailure(exc.message) from None


def _run_scrontab(argv: list, env: Optional[dict] = None):
    from hpc_sweep.common import shell

    result = shell.run(argv, timeout=SCRONTAB_TIMEOUT_S, env=env)
    if result.returncode == shell.NOT_FOUND and "command not found" in result.stderr:
        raise RuntimeFailure("scrontab is not installed on this host (Slurm 20.11 or later has it); use 'hpc-sweep "
                             "cron install' (crontab) or run 'hpc-sweep poll' another way")
    return result


def scrontab_usable() -> Tuple[bool, str]:
    """(usable, why not) for doctor: ``scrontab -l`` answered."""
    try:
        _scrontab_lines()
    except RuntimeFailure as exc:
        return False, str(exc).split(";")[0].split(" (")[0]
    return True, ""


def scron_install(root: Path, every: str, job_name: str, partition: Optional[str] = None,
                  account: Optional[str] = None, qos: Optional[str] = None,
                  version: Optional[tuple] = None) -> list:
    """Install (or replace) this sweep's scrontab entry; the block written."""
    from hpc_sweep import scrontab

    try:
        options = scrontab.entry_options(str(root), job_name, partition, account, qos)
        block = scrontab.render_entry(str(root), schedule(every), poll_command(root), options)
    except ValueError as exc:
        raise UserError(str(exc), file=root, fix="move the sweep to a path without them") from None
    _write_scrontab(root, scrontab.with_entry(_scrontab_lines(), str(root), block), version)
    return block


def scron_remove(root: Path, version: Optional[tuple] = None) -> bool:
    lines, found = _without(root)
    if found:
        _write_scrontab(root, lines, version)
    return found


def _without(root: Path) -> Tuple[list, bool]:
    from hpc_sweep import scrontab

    try:
        return scrontab.without_entry(_scrontab_lines(), str(root))
    except scrontab.ScrontabError as exc:
        raise RuntimeFailure(exc.message) from None


def scron_show(root: Path) -> Optional[str]:
    from hpc_sweep import scrontab

    try:
        entry = scrontab.find_entry(_scrontab_lines(), str(root))
    except scrontab.ScrontabError as exc:
        raise RuntimeFailure(exc.message) from None
    if entry is None:
        return None
    return "\n".join(entry.lines) + ("\n(disabled by Slurm: see 'scrontab -l')" if entry.disabled else "")


def _write_scrontab(root: Path, lines: list, version: Optional[tuple]) -> None:
    """Replace the user's whole scrontab with ``lines`` (written to a file in the sweep's state folder first)."""
    from hpc_sweep import scrontab
    from hpc_sweep.common.atomicio import write_atomic

    state = root / ".hpc_sweep"
    state.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scrontab-", dir=str(state)) as folder:
        new = Path(folder) / "crontab"
        write_atomic(new, scrontab.crontab_text(lines))
        argv, via_editor = scrontab.install_argv(version, str(new))
        env = None
        if via_editor:  # Slurm 20.11: scrontab -e runs $VISUAL FILE, our "editor" copies the new crontab there
            editor = Path(folder) / "editor"
            write_atomic(editor, scrontab.editor_script(str(new)), mode=0o700)
            env = dict(os.environ, VISUAL=str(editor), EDITOR=str(editor))
        try:
            scrontab.parse_install(_run_scrontab(argv, env))
        except scrontab.ScrontabError as exc:
            raise RuntimeFailure(exc.message) from None
