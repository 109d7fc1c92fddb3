"""Site profiles: shipped ones in site_configs/, the user's own in ~/.config/hpc-sweep/sites/ or any path.

A profile says which scheduler, where to queue, how GPUs are requested, the limits to respect, the setup lines
and which job template to use. Unknown keys are errors (with the nearest valid key), so a typo never silently
drops a directive.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hpc_sweep.common.durations import parse_duration
from hpc_sweep.common.errors import UserError
from hpc_sweep.common.formats import parse_toml, read_text

SCHEDULERS = ("slurm", "pbspro", "torque", "local")
GPU_REQUESTS = {
    "slurm": ("gres", "gpus-per-node", "gpus"),
    "pbspro": ("select",),
    "torque": ("nodes",),
    "local": ("local",),
}
_NAME_FIX = "use only letters, digits and _ . : @ + -"
DEFAULT_GPU_REQUEST = {"slurm": "gres", "pbspro": "select", "torque": "nodes", "local": "local"}

_KEYS = {
    "scheduler": str, "description": str, "hostname": str, "partition": str, "queue": str, "account": str,
    "qos": str, "walltime": (str, int), "gpu_request": str, "gpu_resource": dict, "gpu_type": str,
    "cpus_per_gpu": int, "mem_per_gpu": str, "cpus_per_task": int, "mem": str, "max_queued": int,
    "max_array_size": int, "array_throttle": int, "setup": list, "extra_directives": list, "template": str,
    "poll_min_interval": (str, int), "gpu_min_free_mb": int, "runs_per_gpu": int, "cpu_slots": int,
    "throttle_supported": bool,
}


@dataclass
class SiteProfile:
    name: str
    path: Optional[Path]
    scheduler: str
    description: str = ""
    hostname: Optional[str] = None
    partition: Optional[str] = None
    queue: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    walltime_s: int = 24 * 3600
    gpu_request: str = "gres"
    gpu_resource: dict = field(default_factory=lambda: {"gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "dcu": "dcu"})
    gpu_type: Optional[str] = None
    cpus_per_gpu: Optional[int] = None     # None: the partition's node CPUs per GPU (hpc_sweep.submit.fit)
    mem_per_gpu: Optional[str] = None      # None: the partition's node memory per GPU
    cpus_per_task: int = 1
    mem: str = "4G"
    max_queued: Optional[int] = None
    max_array_size: Optional[int] = None
    array_throttle: Optional[int] = None
    setup: list = field(default_factory=list)
    extra_directives: list = field(default_factory=list)
    template: Optional[str] = None
    poll_min_interval_s: int = 60
    gpu_min_free_mb: int = 2000
    runs_per_gpu: int = 1
    cpu_slots: Optional[int] = None
    throttle_supported: Optional[bool] = None

    @property
    def template_name(self) -> str:
        return self.template or f"{self.scheduler}.sh.j2"

    @property
    def template_dirs(self) -> list[Path]:
        """Where this profile's own templates live (beside the profile), searched before the shipped ones."""
        return [self.path.parent] if self.path else []


def shipped_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("hpc_sweep.site_configs")))


def shipped_templates() -> Path:
    from importlib import resources

    return Path(str(resources.files("hpc_sweep.job_templates")))


def user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hpc-sweep" / "sites"


def profile_files() -> dict[str, Path]:
    """Name -> file; the user's profiles shadow shipped ones of the same name."""
    found: dict[str, Path] = {}
    for folder in (shipped_dir(), user_dir()):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = path
    return found


def load_profile_file(path: Path, name: Optional[str] = None) -> SiteProfile:
    data = parse_toml(read_text(path, "site profile"), path)
    for key, value in data.items():
        if key not in _KEYS:
            close = difflib.get_close_matches(key, list(_KEYS), n=1)
            fix = f"did you mean '{close[0]}'?" if close else "remove it"
            raise UserError("is not a site profile key", file=path, key=key, fix=fix)
        if not isinstance(value, _KEYS[key]) or isinstance(value, bool) and _KEYS[key] is int:
            wanted = " or ".join(t.__name__ for t in (_KEYS[key] if isinstance(_KEYS[key], tuple) else (_KEYS[key],)))
            raise UserError(f"has the wrong type ({type(value).__name__})", file=path, key=key, fix=f"give a {wanted}")
    scheduler = data.get("scheduler")
    if scheduler not in SCHEDULERS:
        raise UserError(f"'{scheduler}' is not a scheduler", file=path, key="scheduler",
                        fix=f"use one of {', '.join(SCHEDULERS)}")
    profile = SiteProfile(name=name or path.stem, path=path.resolve(), scheduler=scheduler,
                          gpu_request=DEFAULT_GPU_REQUEST[scheduler])
    for key, value in data.items():
        if key in ("walltime", "poll_min_interval"):
            try:
                setattr(profile, f"{key}_s", parse_duration(value))
            except ValueError as exc:
                raise UserError(str(exc), file=path, key=key) from None
        elif key == "gpu_resource":
            profile.gpu_resource = {**profile.gpu_resource, **value}
        elif key != "scheduler":
            setattr(profile, key, value)
    _validate(profile, path)
    return profile


def _validate(profile: SiteProfile, path: Path) -> None:
    if profile.gpu_request not in GPU_REQUESTS[profile.scheduler]:
        raise UserError(f"'{profile.gpu_request}' is not a GPU request style for {profile.scheduler}", file=path,
                        key="gpu_request", fix=f"use one of {', '.join(GPU_REQUESTS[profile.scheduler])}")
    for key in ("max_queued", "max_array_size", "array_throttle", "cpus_per_gpu", "runs_per_gpu", "cpu_slots"):
        value = getattr(profile, key)
        if value is not None and value < 1:
            raise UserError("must be at least 1", file=path, key=key, fix="give a positive integer")
    for key in ("setup", "extra_directives"):
        for line in getattr(profile, key):
            # A newline (or \r, NUL...) would smuggle a second line into the script: a directive could become a
            # command, or a command end early.
            if not isinstance(line, str) or any(ord(ch) < 32 and ch != "\t" for ch in line):
                raise UserError("must be a list of single-line strings", file=path, key=key,
                                fix="one string per line, without control characters")
    for line in profile.extra_directives:
        if not line.lstrip().startswith("#"):
            raise UserError(f"'{line}' is not a directive line; it would run as a shell command", file=path,
                            key="extra_directives", fix="write the full line, e.g. '#SBATCH --constraint=a100'")
    for kind, name in profile.gpu_resource.items():
        # Resource names land in #SBATCH/#PBS lines like the names below.
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.:@+-]+", name):
            raise UserError(f"{name!r} has characters a scheduler name cannot have", file=path,
                            key=f"gpu_resource.{kind}", fix=_NAME_FIX)
    for key in ("partition", "queue", "account", "qos", "gpu_type", "mem_per_gpu", "mem"):
        value = getattr(profile, key)
        # These land in #SBATCH/#PBS lines: keep them to characters schedulers accept, nothing a shell reads.
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.:@+-]+", value):
            raise UserError(f"'{value}' has characters a scheduler name cannot have", file=path, key=key,
                            fix=_NAME_FIX)
    if profile.template is not None:
        # A file beside the profile or a shipped one, by plain name: the job script is built from it.
        beside = path.parent / profile.template
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", profile.template) or profile.template.startswith(".") or \
                not (beside.is_file() or (shipped_templates() / profile.template).is_file()):
            raise UserError(f"job template '{profile.template}' not found beside the profile or among the shipped "
                            "ones", file=path, key="template",
                            fix="a file name beside the profile, or slurm.sh.j2, pbspro.sh.j2, torque.sh.j2, local.sh.j2")
    if profile.hostname:
        try:
            re.compile(profile.hostname)
        except re.error as exc:
            raise UserError(f"is not a valid regular expression: {exc}", file=path, key="hostname") from None


def load_profile(site: Optional[str], sweep_root: Optional[Path] = None) -> SiteProfile:
    """A profile by name, by path (relative to the sweep folder), or detected when ``site`` is None/"auto"."""
    if site in (None, "", "auto"):
        return detect_profile()
    candidate = Path(site)
    if site.endswith(".toml") or "/" in site:
        if not candidate.is_absolute() and sweep_root is not None:
            candidate = sweep_root / candidate
        if not candidate.is_file():
            raise UserError(f"site profile '{site}' not found", key="sweep.site",
                            fix="give a path to a .toml or a name from 'hpc-sweep sites'")
        return load_profile_file(candidate)
    files = profile_files()
    if site not in files:
        close = difflib.get_close_matches(site, list(files), n=1)
        fix = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(files)}"
        raise UserError(f"unknown site profile '{site}'", key="sweep.site", fix=fix)
    return load_profile_file(files[site], site)


def detect_profile() -> SiteProfile:
    """A profile whose hostname pattern matches this host; else the generic profile of the scheduler found."""
    host = socket.getfqdn()
    files = profile_files()
    for name, path in files.items():
        profile = load_profile_file(path, name)
        if profile.hostname and re.search(profile.hostname, host):
            return profile
    kind = detect_scheduler() or "local"
    return load_profile_file(files[kind], kind)


def detect_scheduler() -> Optional[str]:
    """slurm | pbspro | torque | None, by the reference's rules (Slurm first: it may ship qstat wrappers). Runs
    the two version commands (through :mod:`hpc_sweep.common.shell`) only when no profile names the host."""
    from hpc_sweep.common import shell
    from hpc_sweep.schedulers.detect import DETECT_ARGVS, detect_from_outputs

    slurm = shell.run(DETECT_ARGVS["slurm"], timeout=20)
    if slurm.returncode == 0:
        return detect_from_outputs(slurm, None)
    pbs = shell.run(DETECT_ARGVS["pbs"], timeout=20)
    if pbs.returncode == shell.NOT_FOUND:
        return None
    return detect_from_outputs(None, pbs)


def describe(profile: SiteProfile) -> dict[str, Any]:
    return {"name": profile.name, "scheduler": profile.scheduler, "description": profile.description,
            "hostname": profile.hostname or "", "path": str(profile.path) if profile.path else ""}
