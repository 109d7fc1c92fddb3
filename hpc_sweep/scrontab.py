"""`cron install --via scrontab`: the poll as a Slurm cron job, one entry per sweep, for sites whose login nodes
forbid user crontabs. Pure pieces: render our entry, find and remove it among the user's other lines, argv and
answers of ``scrontab``. :mod:`hpc_sweep.cron` runs it (through :mod:`hpc_sweep.common.shell`).

Facts (Slurm's scrontab.c and man page; none of this is on the test cluster, whose Debian 22.05 packages ship no
``scrontab`` client although slurmctld accepts ``ScronParameters=enable``):

- Slurm >= 20.11 with ``ScronParameters=enable`` in slurm.conf; otherwise ``scrontab`` exits 1 with
  ``scrontab: fatal: scrontab is disabled on this cluster``.
- ``scrontab -l`` prints the whole crontab, or ``no crontab for USER`` (exit 1). Lines of an entry that an admin
  or a failure disabled come back prefixed ``#DISABLED: ``; rejected ones ``#BAD: ``.
- ``scrontab FILE`` (or ``-``, stdin) replaces the whole crontab (the man page has it from 21.08); 20.11
  only edits through ``$VISUAL``/``$EDITOR`` (``scrontab -e``), so there the new text is written by an "editor"
  that copies a file over the one it is handed. ``scrontab -r`` removes everything: never used, other entries of
  the user would go with ours.
- ``#SCRON`` lines set sbatch options for the next cron line only; plain ``#`` comments in between are ignored,
  which lets our begin/end markers frame the entry. The job runs ``/bin/sh`` with the user's login environment
  (``SLURM_GET_USER_ENV=1``) in ``$HOME`` unless ``--chdir`` says otherwise; the next run is queued only after the
  previous one ended, so polls never overlap.
- On a line it rejects, scrontab asks "Do you want to retry the edit? (y/n)" and reads the answer from stdin, which
  is empty here (the crontab is given as a file). Our block is therefore checked here before it is sent, and
  scrontab always runs under a time-out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from hpc_sweep.schedulers.base import CommandResult

SCRON_SINCE = (20, 11)
FILE_SINCE = (21, 8)
BEGIN = "# hpc-sweep poll begin:"
END = "# hpc-sweep poll end:"
DISABLED = "#DISABLED: "
POLL_WALLTIME = "00:15:00"
_UNSAFE = re.compile(r"[\s\"'\\]")  # #SCRON lines are split at blanks


class ScrontabError(Exception):
    """scrontab is missing, disabled, or answered something we cannot read; ``message`` is one line."""

    def __init__(self, message: str, disabled: bool = False):
        super().__init__(message)
        self.message = message
        self.disabled = disabled


@dataclass(frozen=True)
class Entry:
    """Our entry as found in the crontab."""

    root: str
    lines: Tuple[str, ...]     # the whole block, markers included
    schedule: str              # "*/10 * * * *"
    command: str
    disabled: bool             # Slurm disabled the cron line (shown as #DISABLED:)


def entry_options(root: str, job_name: str, partition: Optional[str] = None, account: Optional[str] = None,
                  qos: Optional[str] = None, walltime: str = POLL_WALLTIME) -> List[str]:
    """The ``#SCRON`` options of the poll job: a short CPU job writing its output into the sweep's state folder."""
    if _UNSAFE.search(root):
        raise ValueError(f"{root!r} has a blank, quote or backslash, which #SCRON lines cannot carry")
    options = [f"--job-name={job_name}", f"--time={walltime}", "--ntasks=1", "--cpus-per-task=1",
               f"--chdir={root}", f"--output={root}/.hpc_sweep/scrontab-poll.out", "--open-mode=append"]
    for key, value in (("partition", partition), ("account", account), ("qos", qos)):
        if value:
            options.append(f"--{key}={value}")
    return options


def render_entry(root: str, schedule: str, command: str, options: Sequence[str]) -> List[str]:
    """Our block: begin marker, one ``#SCRON`` line per option, the cron line, end marker."""
    if len(schedule.split()) != 5:
        raise ValueError(f"not a five-field cron schedule: {schedule!r}")
    if "\n" in command or "\n" in root:
        raise ValueError("the poll command and sweep path must be single lines")
    return [f"{BEGIN} {root}", *(f"#SCRON {option}" for option in options), f"{schedule} {command}",
            f"{END} {root}"]


def find_entry(lines: Sequence[str], root: str) -> Optional[Entry]:
    span = _span(lines, root)
    if span is None:
        return None
    block = tuple(lines[span[0]:span[1] + 1])
    cron = [line for line in block[1:-1] if not line.lstrip().startswith("#") or line.startswith(DISABLED)]
    cron = [line for line in cron if not line[len(DISABLED):].lstrip().startswith("#SCRON")]
    if len(cron) != 1:
        raise ScrontabError(f"the hpc-sweep entry for {root} in scrontab has {len(cron)} cron lines; edit it with "
                            "'scrontab -e'")
    text = cron[0]
    disabled = text.startswith(DISABLED)
    fields = text[len(DISABLED):].split(None, 5) if disabled else text.split(None, 5)
    return Entry(root=root, lines=block, schedule=" ".join(fields[:5]), command=fields[5] if len(fields) > 5 else "",
                 disabled=disabled)


def without_entry(lines: Sequence[str], root: str) -> Tuple[List[str], bool]:
    """The crontab without our block (every other line kept as it was), and whether there was one."""
    span = _span(lines, root)
    if span is None:
        return list(lines), False
    return [*lines[:span[0]], *lines[span[1] + 1:]], True


def with_entry(lines: Sequence[str], root: str, block: Sequence[str]) -> List[str]:
    """The crontab with ``block`` as the only entry of this sweep, at the end."""
    kept, _ = without_entry(lines, root)
    return [*kept, *block]


def _span(lines: Sequence[str], root: str) -> Optional[Tuple[int, int]]:
    """(begin, end) line numbers of our block; ScrontabError for a begin without its end (or two begins): we never
    guess which of the user's lines are ours."""
    begins = [i for i, line in enumerate(lines) if line.rstrip() == f"{BEGIN} {root}"]
    ends = [i for i, line in enumerate(lines) if line.rstrip() == f"{END} {root}"]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ScrontabError(f"the hpc-sweep markers for {root} in scrontab are damaged ({len(begins)} begin, "
                            f"{len(ends)} end); fix them with 'scrontab -e'")
    return begins[0], ends[0]


# ----------------------------------------------------------------------------------------------------------------
# argv and answers


def list_argv() -> List[str]:
    return ["scrontab", "-l"]


def install_argv(version: Optional[Tuple[int, ...]], crontab_file: str) -> Tuple[List[str], bool]:
    """(argv, via_editor): ``scrontab FILE`` replacing the crontab with the file's from 21.08 (or an unknown
    version: the answer then says if it is older); on 20.11 ``scrontab -e`` with VISUAL set to a program that
    copies the new crontab over the file it is given (:func:`editor_script`)."""
    if version is not None and tuple(version[:2]) < FILE_SINCE:
        return ["scrontab", "-e"], True
    return ["scrontab", crontab_file], False


def editor_script(crontab_file: str) -> str:
    """The 20.11 "editor": scrontab runs ``$VISUAL FILE`` and reads FILE back."""
    quoted = "'" + crontab_file.replace("'", "'\\''") + "'"
    return f"#!/bin/sh\n# written by hpc-sweep: installs the crontab it was given\ncat {quoted} > \"$1\"\n"


def crontab_text(lines: Sequence[str]) -> str:
    return "".join(line + "\n" for line in lines)


def parse_list(result: CommandResult) -> List[str]:
    """The crontab's lines from ``scrontab -l``; [] for "no crontab"; ScrontabError when scrontab cannot be used."""
    said = (result.stderr + result.stdout).strip()
    if "disabled on this cluster" in said:
        raise ScrontabError("scrontab is disabled on this cluster (ScronParameters=enable is not set); use "
                            "'hpc-sweep cron install' or run 'hpc-sweep poll' another way", disabled=True)
    if result.returncode == 0:
        return result.stdout.splitlines()
    if re.search(r"^no crontab for \S+", said, re.M):
        return []
    raise ScrontabError(f"scrontab -l failed (rc={result.returncode}): {_last(said)}")


def parse_install(result: CommandResult) -> None:
    """Raise ScrontabError unless ``scrontab -`` took the new crontab."""
    said = (result.stderr + result.stdout).strip()
    if "disabled on this cluster" in said:
        raise ScrontabError("scrontab is disabled on this cluster (ScronParameters=enable is not set)", disabled=True)
    if result.returncode != 0 or "There was an issue with the job submission" in said or \
            "There are errors in your crontab" in said:
        raise ScrontabError(f"scrontab refused the entry (rc={result.returncode}): {_last(said)}")


def _last(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
