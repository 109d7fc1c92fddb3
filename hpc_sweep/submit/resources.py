"""What each task of a submission asks for, and whether the cluster can ever hold it.

The request comes from the sweep (``device``, ``walltime``, ``cpus_per_gpu``, ``mem_per_gpu``), the site profile and,
for CPUs and memory per GPU that neither sets, the partition's nodes (:mod:`hpc_sweep.submit.fit`, against the shape
:mod:`hpc_sweep.submit.queries` caches with the limits). :func:`check_chunks` runs before any intent is recorded:
a shape that no node, partition, QOS or association can ever hold is refused with the key to change, so nothing
is queued to wait forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from hpc_sweep.submit.fit import Ask, Fit, check, resolve

if TYPE_CHECKING:
    from hpc_sweep.programs.base import Program
    from hpc_sweep.schedulers.cluster import ClusterShape
    from hpc_sweep.session import Session
    from hpc_sweep.submit.planning import Chunk
    from hpc_sweep.sweep.sites import SiteProfile
    from hpc_sweep.sweep.sweepfile import SweepSpec


def ask_for(spec: Optional["SweepSpec"], profile: "SiteProfile", program: Optional["Program"], gpus: int,
            device_type: str, walltime_s: int) -> Ask:
    """What one task of ``gpus`` devices of ``device_type`` asks for, before defaults, with where each key is set
    (the fix names that file). ``spec`` None: the profile alone (doctor outside a sweep)."""
    from hpc_sweep.submit.scripts import mem_mb

    per_gpu_mem = (spec and spec.mem_per_gpu) or profile.mem_per_gpu
    slurm = profile.scheduler == "slurm"
    return Ask(gpus=gpus, walltime_s=walltime_s, cpus_per_gpu=(spec and spec.cpus_per_gpu) or profile.cpus_per_gpu,
               mem_per_gpu_mb=mem_mb(per_gpu_mem, "mem_per_gpu") if per_gpu_mem else None,
               cpus_per_task=profile.cpus_per_task, mem_mb=mem_mb(profile.mem, "mem"),
               gpu_name=profile.gpu_resource.get(device_type, device_type) if slurm else "gpu",
               gpu_type=profile.gpu_type, partition=profile.partition or profile.queue, account=profile.account,
               qos=profile.qos, where=_sources(spec, profile, program))


def _sources(spec: Optional["SweepSpec"], profile: "SiteProfile", program: Optional["Program"]) -> dict:
    """Key -> the file to change it in: sweep.toml where it sets the key (or may, where neither sets it), else the
    site profile (a copy of it, for a shipped one)."""
    sweep_file = f"{spec.path} [sweep]" if spec else "sweep.toml [sweep]"
    mine = _profile_source(profile)
    where = {key: sweep_file if getattr(spec, key, None) is not None or getattr(profile, key) is None else mine
             for key in ("cpus_per_gpu", "mem_per_gpu")}
    where["walltime"] = sweep_file if (spec and spec.walltime_s is not None) or mine != str(profile.path) else mine
    if program is not None and program.device_key():
        where["gpus"] = "the configs' system.device (the base or the grid)"
    else:
        where["gpus"] = f"{spec.path if spec else 'sweep.toml'} (device)"
    for key in ("partition", "queue", "account", "qos", "cpus_per_task", "mem"):
        where[key] = mine
    return where


def session_ask(session: Session, gpus: int, device_type: str, walltime_s: int) -> Ask:
    return ask_for(session.spec, session.profile, session.program, gpus, device_type, walltime_s)


def _profile_source(profile) -> str:
    """The file to change a profile key in: the user's own profile, or -- for a shipped one -- a copy of it."""
    from hpc_sweep.sweep.sites import shipped_dir, user_dir

    if profile.path is None or Path(profile.path).parent == Path(shipped_dir()).resolve():
        return f"a site profile of your own ({user_dir()}/<name>.toml, named in sweep.toml's site)"
    return str(profile.path)


def task_resources(session: Session, gpus: int, device_type: str, walltime_s: int) -> Fit:
    """The CPUs and memory each task gets (derived from the nodes where neither sweep nor profile sets them), from
    the last shape read, however old (it was checked fresh before anything was submitted)."""
    from hpc_sweep.submit.queries import cached_shape

    ask = session_ask(session, gpus, device_type, walltime_s)
    shape = cached_shape(session, None)
    if shape is None:
        cpus, memory, notes = resolve(ask, None)
        return Fit(partition=ask.partition, cpus=cpus, mem_mb=memory, defaults=notes, checked=False)
    return check(ask, shape)


@dataclass
class Unfit:
    """A planned submission no node can ever hold: its configs, and the problems (one line each)."""

    chunk: "Chunk"
    problems: Tuple[str, ...]

    @property
    def reason(self) -> str:
        return "cannot run on this cluster: " + " | ".join(self.problems)


def check_chunks(session: Session, chunks: Sequence["Chunk"], fresh: bool) -> List[Unfit]:
    """The chunks whose shape can never run here. ``fresh``: the shape was read by this command; otherwise a
    shape found unfit is asked for again before it is believed (the cluster may have changed within the hour)."""
    from hpc_sweep.submit.queries import cached_shape, shape_now

    shape = cached_shape(session, None)
    if shape is None or not chunks:
        return []
    verdicts = _verdicts(session, chunks, shape)
    if any(verdicts.values()) and not fresh:
        shape = shape_now(session)
        verdicts = _verdicts(session, chunks, shape)
    return [Unfit(chunk, verdicts[_key(chunk)]) for chunk in chunks if verdicts[_key(chunk)]]


def _key(chunk: "Chunk") -> tuple:
    return chunk.configs[0].gpus, chunk.shape.split(":")[0], chunk.walltime_s


def _verdicts(session: Session, chunks: Sequence["Chunk"], shape: "ClusterShape") -> Dict[tuple, Tuple[str, ...]]:
    """Each distinct (GPUs, device type, walltime) of the chunks -> its problems (empty: it fits)."""
    out: Dict[tuple, Tuple[str, ...]] = {}
    for chunk in chunks:
        key = _key(chunk)
        if key not in out:
            fit = check(session_ask(session, *key), shape)
            out[key] = tuple(dict.fromkeys(problem.message for problem in fit.problems))
    return out


def describe(cpus: int, mem_mb: int) -> str:
    return f"{cpus} CPU{'s' if cpus != 1 else ''} and {mem_mb}M per task"


def resources_line(fit: Optional[Fit]) -> Optional[str]:
    """'2 CPUs and 2711M per task (cpus_per_gpu: 2 from the nodes of partition debug ...)' for a dry run."""
    if fit is None:
        return None
    return describe(fit.cpus, fit.mem_mb) + (f" ({'; '.join(fit.defaults)})" if fit.defaults else "")
