"""`hpc-sweep doctor [SWEEP] [--site PROFILE]`: one screen a user runs on a new cluster. Pure: each check turns
facts (gathered by :mod:`hpc_sweep.doctor_facts`) into OK/WARN/FAIL lines with the fix; :func:`report` renders them
and gives the exit status (1 on any FAIL).

What is checked, in order: the scheduler and its version; the partition/queue exists and takes jobs; the limits
were read (per-user cap, array size, throttle); each resource shape of the sweep against the nodes (with the
CPUs/memory derived from them); account and QOS; the profile's ``setup`` lines in cron's bare environment and the
command's program on PATH after them; free space in the sweep folder; whether ``crontab`` and ``scrontab`` can
schedule the poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from hpc_sweep.submit.fit import Fit
from hpc_sweep.schedulers.base import QueueLimits
from hpc_sweep.schedulers.cluster import ClusterShape

OK, WARN, FAIL = "OK", "WARN", "FAIL"
FREE_WARN_BYTES = 5 * 1024 ** 3
FREE_FAIL_BYTES = 200 * 1024 ** 2
ME_SINCE = (20, 11)


@dataclass(frozen=True)
class Line:
    status: str                # OK, WARN or FAIL
    topic: str                 # "scheduler", "partition", "limits", "shape 1gpu", ...
    message: str
    fix: Optional[str] = None

    def render(self) -> str:
        text = f"{self.status:<5} {self.topic:<12} {self.message}"
        return f"{text}; {self.fix}" if self.fix else text


@dataclass(frozen=True)
class SetupProbe:
    """The profile's setup lines run in a clean shell (``env -i`` with cron's PATH), then ``command -v PROGRAM``."""

    returncode: int
    stderr: str = ""
    program: Optional[str] = None        # the command's program (first word), None when there is none to look for
    program_path: Optional[str] = None   # where the clean shell found it; None: not found


@dataclass(frozen=True)
class CronProbe:
    """Whether a scheduling tool can be used: ``crontab -l`` / ``scrontab -l`` answered (no crontab counts)."""

    name: str                 # "crontab" or "scrontab"
    usable: bool
    detail: str = ""          # why not: "not installed", "permission denied", "disabled on this cluster"


def check_scheduler(scheduler: str, version: Optional[Tuple[int, ...]], error: Optional[str] = None) -> Line:
    if scheduler == "local":
        return Line(OK, "scheduler", "local (this machine, no batch scheduler)")
    if error:
        return Line(FAIL, "scheduler", f"{scheduler} not usable: {error}",
                    "load the scheduler's module or fix PATH, or set scheduler in the site profile")
    shown = _version(scheduler, version)
    if scheduler == "slurm" and version and tuple(version[:2]) < ME_SINCE:
        return Line(OK, "scheduler", f"slurm {shown} (before 20.11: queries use -u $USER, not --me)")
    return Line(OK, "scheduler", f"{scheduler} {shown}")


def _version(scheduler: str, version: Optional[Tuple[int, ...]]) -> str:
    if not version:
        return "version unknown"
    if scheduler == "slurm" and len(version) >= 2:  # Slurm spells its minor with two digits: 22.05.8
        return ".".join([str(version[0]), f"{version[1]:02d}", *map(str, version[2:])])
    return ".".join(map(str, version))


def check_partition(shape: Optional[ClusterShape], name: Optional[str]) -> Line:
    where = "partition" if shape is None or shape.scheduler == "slurm" else "queue"
    if shape is None or not shape.partitions:
        errors = "; ".join(shape.errors) if shape and shape.errors else "not read"
        return Line(WARN, where, f"{where}s could not be read ({errors})", "submit still works; shapes are unchecked")
    partition = shape.partition(name)
    if partition is None:
        known = ", ".join(shape.partitions)
        said = f"{where} {name} does not exist" if name else f"no default {where}"
        return Line(FAIL, where, f"{said} ({where}s: {known})", f"set {where} in the site profile")
    chosen = "" if name else " (the default)"
    if not partition.up:
        return Line(FAIL, where, f"{partition.name}{chosen} is {partition.state}", f"set {where} to another")
    nodes = sum(g.count for g in partition.nodes)
    up = sum(g.count for g in partition.usable_nodes)
    if nodes and not up:
        return Line(FAIL, where, f"{partition.name}{chosen}: none of its {nodes} nodes takes jobs",
                    f"ask the admins, or set {where} to another")
    taking = f", {up} of {nodes} nodes take jobs" if nodes else ""
    return Line(OK, where, f"{partition.name}{chosen} is up{taking}")


def check_limits(limits: Optional[QueueLimits], errors: Sequence[str] = ()) -> Line:
    if limits is None:
        return Line(WARN, "limits", "not read: " + ("; ".join(errors) or "no answer"),
                    "set max_queued in the site profile so submit stays under the per-user cap")
    parts = [f"per-user cap {limits.max_queued if limits.max_queued is not None else 'none found'}",
             f"array size {limits.max_array_size if limits.max_array_size is not None else 'unknown'}",
             f"throttle {'supported' if limits.throttle_supported else 'not supported'}"]
    status = WARN if errors else OK
    return Line(status, "limits", ", ".join(parts) + (f" ({'; '.join(errors)})" if errors else ""))


def check_fit(label: str, fit: Fit) -> List[Line]:
    """One line per problem (FAIL), or one OK line with the per-task request; derived defaults follow as OK lines."""
    topic = f"shape {label}"
    lines = [Line(FAIL, topic, problem.message) for problem in fit.problems]
    if not lines:
        lines.append(Line(OK, topic, f"fits {fit.partition or 'the default partition'}: {fit.cpus} "
                                     f"CPU{'s' if fit.cpus != 1 else ''}, {fit.mem_mb}M per task"))
    lines += [Line(OK, topic, note) for note in fit.defaults]
    return lines


def check_accounts(shape: Optional[ClusterShape], account: Optional[str], qos: Optional[str]) -> Line:
    if shape is None or shape.scheduler != "slurm":
        return Line(OK, "account", f"account {account}" if account else "no account set (the scheduler's default)")
    if not shape.accounts_enforced:
        return Line(OK, "account", "accounts are not enforced on this cluster")
    if shape.associations is None:
        return Line(WARN, "account", "your associations could not be read (sacctmgr)",
                    "account and QOS are checked by the scheduler at submit only")
    if not shape.associations:
        return Line(FAIL, "account", "you have no Slurm association on this cluster",
                    "ask the admins to add you to an account")
    accounts = sorted({a.account for a in shape.associations})
    allowed = sorted({q for a in shape.associations if account in (None, a.account) for q in a.qos})
    if account and account not in accounts:
        return Line(FAIL, "account", f"account {account} is not yours (yours: {', '.join(accounts)})",
                    "set account in the site profile")
    if qos and allowed and qos not in allowed:
        return Line(FAIL, "account", f"QOS {qos} is not allowed to you (yours: {', '.join(allowed)})",
                    "set qos in the site profile")
    said = f"account {account}" if account else f"accounts {', '.join(accounts)} (the default one is used)"
    return Line(OK, "account", said + (f", QOS {qos}" if qos else ""))


def check_setup(probe: Optional[SetupProbe]) -> Line:
    if probe is None:
        return Line(OK, "setup", "no setup lines and no program to look for")
    if probe.returncode != 0:
        said = probe.stderr.strip().splitlines()
        return Line(FAIL, "setup", f"the setup lines failed in a clean shell (rc={probe.returncode}"
                                   f"{': ' + said[-1] if said else ''})",
                    "make them work without your login profile (cron and jobs start without it)")
    if probe.program and not probe.program_path:
        return Line(FAIL, "setup", f"{probe.program} is not on PATH after the setup lines",
                    "add the module load / venv activation that provides it to setup in the site profile")
    if probe.program:
        return Line(OK, "setup", f"setup lines run; {probe.program} is {probe.program_path}")
    return Line(OK, "setup", "setup lines run in a clean shell")


def check_space(free_bytes: Optional[int], where: str) -> Line:
    if free_bytes is None:
        return Line(WARN, "space", f"free space in {where} unknown")
    shown = f"{free_bytes / 1024 ** 3:.1f} GiB free in {where}"
    if free_bytes < FREE_FAIL_BYTES:
        return Line(FAIL, "space", shown, "free some space or move the sweep")
    if free_bytes < FREE_WARN_BYTES:
        return Line(WARN, "space", shown, "checkpoints and logs may not fit")
    return Line(OK, "space", shown)


def check_cron(crontab: CronProbe, scrontab: Optional[CronProbe]) -> Line:
    """Which of crontab and scrontab can run the poll: FAIL only when neither can."""
    if crontab.usable:
        extra = " (scrontab too)" if scrontab and scrontab.usable else ""
        return Line(OK, "cron", f"crontab usable{extra}: 'hpc-sweep cron install'")
    if scrontab and scrontab.usable:
        return Line(OK, "cron", f"crontab {crontab.detail or 'not usable'}; scrontab usable: "
                                "'hpc-sweep cron install --via scrontab'")
    why = f"crontab {crontab.detail or 'not usable'}"
    if scrontab:
        why += f", scrontab {scrontab.detail or 'not usable'}"
    return Line(WARN, "cron", why, "run 'hpc-sweep poll SWEEP' by hand or from another machine's cron")


def report(lines: Sequence[Line]) -> Tuple[str, int]:
    """The screen, and the exit status: 1 when any line FAILed."""
    text = "".join(line.render() + "\n" for line in lines)
    return text, 1 if any(line.status == FAIL for line in lines) else 0
