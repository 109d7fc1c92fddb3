"""What `hpc-sweep doctor` looks at, gathered here and judged by the pure checks of :mod:`hpc_sweep.doctor`.

Scheduler commands run through :mod:`hpc_sweep.common.shell` (the limit and shape queries at once, as submit asks
them); the profile's setup lines run in a clean shell: ``env -i`` with only what a cron entry carries
(:data:`hpc_sweep.cron.CARRIED`) and the login names, as a cron-started poll and the jobs it submits have them.
Doctor only reads: the sweep's state is not opened, nothing is cached, so it works before ``generate`` too.
"""

from __future__ import annotations

import getpass
import pwd
import re
import shlex
import shutil
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from hpc_sweep import doctor
from hpc_sweep.common import shell
from hpc_sweep.common.errors import UserError
from hpc_sweep.doctor import CronProbe, Line, SetupProbe

SETUP_TIMEOUT_S = 60
_SETUP_DONE = "hpc-sweep-doctor: setup done"
_VERSION = re.compile(r"(\d+(?:\.\d+)+)")


def examine(sweep_dir: Path, site: Optional[str] = None, cron: bool = True) -> List[Line]:
    """Every doctor line for the sweep in ``sweep_dir`` (or, without one there, for the profile ``site``).
    ``cron``: check crontab/scrontab too (the smoke test does not need them)."""
    from hpc_sweep.sweep.sites import load_profile

    spec = _sweep(sweep_dir)
    root = spec.root if spec else Path(sweep_dir).resolve()
    if spec is None and site is None:
        raise UserError("no sweep.toml here", file=root / "sweep.toml",
                        fix="pass the sweep folder, or --site PROFILE to check a site profile alone")
    profile = load_profile(site if site is not None else spec.site, root if spec else None)
    lines = [Line(doctor.OK, "profile", f"{profile.name} ({profile.path or 'detected'})")]
    version, error = scheduler_version(profile.scheduler)
    lines.append(doctor.check_scheduler(profile.scheduler, version, error))
    if profile.scheduler != "local" and not error:
        lines += _cluster_lines(spec, profile)
    lines.append(doctor.check_setup(setup_probe(profile.setup, _program(spec))))
    lines.append(doctor.check_space(_free_bytes(root), str(root)))
    if cron:
        lines.append(doctor.check_cron(_cron_probe(), _scrontab_probe() if profile.scheduler == "slurm" else None))
    return lines


def _sweep(sweep_dir: Path):
    from hpc_sweep.sweep.sweepfile import load_sweep

    if not (Path(sweep_dir) / "sweep.toml").is_file():
        return None
    return load_sweep(Path(sweep_dir))


def scheduler_version(scheduler: str) -> Tuple[Optional[tuple], Optional[str]]:
    """(version, None) or (None, why the scheduler's commands cannot be used)."""
    from hpc_sweep.schedulers.detect import DETECT_ARGVS, slurm_version

    if scheduler == "local":
        return None, None
    result = shell.run(DETECT_ARGVS["slurm" if scheduler == "slurm" else "pbs"], timeout=20)
    if result.returncode == shell.NOT_FOUND:
        return None, f"{result.argv[0]} not found on PATH"
    if scheduler == "slurm":
        found = slurm_version(result)
        return (found, None) if found else (None, _said(result))
    match = _VERSION.search(f"{result.stdout}\n{result.stderr}")
    return (tuple(int(p) for p in match.group(1).split(".")), None) if match else (None, None)


def _said(result) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return f"{' '.join(result.argv)} failed (rc={result.returncode}): {lines[-1] if lines else 'no output'}"


def _cluster_lines(spec, profile) -> List[Line]:
    """Partition, limits, each shape of the sweep against the nodes, account and QOS: one set of queries."""
    from hpc_sweep.schedulers import get_scheduler
    from hpc_sweep.submit.queries import LIMITS_TIMEOUT_S, fact_argvs, read_facts

    user = getpass.getuser()
    adapter = get_scheduler(profile.scheduler)
    argvs, count = fact_argvs(adapter, profile, user)
    results = shell.run_many(argvs, timeout=LIMITS_TIMEOUT_S)
    limits, shape = read_facts(adapter, profile, user, results)
    failed = [_said(r) for r in results[:count] if r.returncode != 0]
    lines = [doctor.check_partition(shape, profile.partition or profile.queue),
             doctor.check_limits(None if len(failed) == count and count else limits, failed)]
    if shape is not None and shape.partitions:
        lines += _shape_lines(spec, profile, shape)
    lines.append(doctor.check_accounts(shape, profile.account, profile.qos))
    return lines


def _shape_lines(spec, profile, shape) -> List[Line]:
    from hpc_sweep.submit.fit import check
    from hpc_sweep.submit.resources import ask_for

    program = None
    if spec is not None:
        from hpc_sweep.programs import get_program

        program = get_program(spec.program, spec.log)
    walltime = (spec.walltime_s if spec else None) or profile.walltime_s
    lines: List[Line] = []
    for gpus, device_type in sweep_shapes(spec):
        label = f"{device_type}:{gpus}" if gpus else "cpu"
        fit = check(ask_for(spec, profile, program, gpus, device_type, walltime), shape)
        lines += doctor.check_fit(label if spec else f"{label} (example)", fit)
    return lines


def sweep_shapes(spec) -> List[Tuple[int, str]]:
    """The distinct (GPUs, device type) of the sweep's configs, as generate would make them; one GPU without a
    sweep (an example)."""
    if spec is None:
        return [(1, "gpu")]
    from hpc_sweep.common.layout import SweepPaths
    from hpc_sweep.sweep.generate import plan

    shapes = {(p.gpus, p.shape.split(":")[0]) for p in plan(spec, None, SweepPaths.at(spec.root))}
    return sorted(shapes)


# -- the setup lines in a clean shell ---------------------------------------------------------------------------------
def _program(spec) -> Optional[str]:
    """The program the sweep's command starts: its first word that is no VAR=value (None for a placeholder)."""
    if spec is None:
        return None
    try:
        words = shlex.split(spec.command)
    except ValueError:
        return None
    for word in words:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word):
            continue
        return None if "{" in word else word
    return None


def clean_environment() -> dict:
    """What a cron-started poll (and the jobs it submits) has: the login names and what the cron entry carries."""
    from hpc_sweep.cron import carried_environment

    user = getpass.getuser()
    env = {"USER": user, "LOGNAME": user, "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    try:
        env["HOME"] = pwd.getpwnam(user).pw_dir
    except KeyError:
        pass
    env.update(carried_environment())
    return env


def setup_probe(setup: Sequence[str], program: Optional[str]) -> Optional[SetupProbe]:
    """Run the setup lines in a clean bash (the job scripts are bash), then ``command -v`` the program."""
    if not setup and not program:
        return None
    # set -e: the first setup line that fails stops the probe (in a job it would leave the command half set up).
    script = "\n".join(["set -e", *setup, "set +e", f"echo {shlex.quote(_SETUP_DONE)}"])
    if program:
        script += f"\ncommand -v {shlex.quote(program)} || true"
    shell_path = shutil.which("bash") or "/bin/sh"
    env = clean_environment()
    argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), shell_path, "-c", script]
    result = shell.run(argv, timeout=SETUP_TIMEOUT_S, cwd=env.get("HOME"))
    out = result.stdout.splitlines()
    if _SETUP_DONE not in out:
        return SetupProbe(result.returncode or 1, result.stderr, program)
    found = [line for line in out[out.index(_SETUP_DONE) + 1:] if line.strip()]
    return SetupProbe(0, result.stderr, program, found[-1] if found else None)


# -- space and the scheduling tools -----------------------------------------------------------------------------------
def _free_bytes(root: Path) -> Optional[int]:
    folder = root
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(str(folder)).free
    except OSError:
        return None


def _cron_probe() -> CronProbe:
    from hpc_sweep.cron import crontab_usable

    usable, why = crontab_usable()
    return CronProbe("crontab", usable, why)


def _scrontab_probe() -> CronProbe:
    from hpc_sweep.cron import scrontab_usable

    usable, why = scrontab_usable()
    return CronProbe("scrontab", usable, why)
