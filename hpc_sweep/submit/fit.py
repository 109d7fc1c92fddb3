"""Does a resource shape fit the cluster? Pure: the shape of one submission (what each task asks) against the
cluster's shape (:mod:`hpc_sweep.schedulers.cluster`), giving the problems that no amount of waiting would clear and
the per-task CPUs and memory, derived from the partition's nodes where the profile sets none. What a sweep's tasks
ask for, and the check of a planned submission, are :mod:`hpc_sweep.submit.resources`'.

Every problem is one line naming the partition, what its nodes have, and the key to change, e.g.
``partition debug: no node has 4 CPUs for one task (nodes have 2 CPUs, 21694M, 8 gpu); set cpus_per_gpu = 2 or fewer
in site.toml``.

Only what can never run is a problem: busy nodes, queue caps and fair share are the scheduler's business. A part of
the shape that could not be read (associations without accounting...) is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import List, Mapping, Optional, Sequence, Tuple

from hpc_sweep.schedulers.cluster import ClusterShape, NodeGroup, Partition

FALLBACK_CPUS_PER_GPU = 4          # where the partition shows no GPU nodes to derive from
FALLBACK_MEM_PER_GPU_MB = 16 * 1024


@dataclass(frozen=True)
class Ask:
    """What each task of one submission asks for, before defaults. ``where`` names, per key, the file that sets
    it (for the fix): {"cpus_per_gpu": "sweep.toml [sweep]"}; keys not named are the site profile's."""

    gpus: int
    walltime_s: int
    cpus_per_gpu: Optional[int] = None     # None: derived from the partition's nodes
    mem_per_gpu_mb: Optional[int] = None
    cpus_per_task: int = 1                 # CPU-only tasks
    mem_mb: int = 4096                     # CPU-only tasks
    gpu_name: str = "gpu"                  # the GRES name (Slurm) or "gpu" (PBS ngpus, Torque gpus)
    gpu_type: Optional[str] = None
    partition: Optional[str] = None        # None: the cluster's default partition/queue
    account: Optional[str] = None
    qos: Optional[str] = None
    where: Mapping[str, str] = field(default_factory=dict)

    def source(self, key: str) -> str:
        return self.where.get(key, "the site profile")


@dataclass(frozen=True)
class Problem:
    key: str        # the key to change: cpus_per_gpu, mem_per_gpu, gpus, walltime, partition, account, qos...
    message: str    # one line


@dataclass(frozen=True)
class Fit:
    partition: Optional[str]          # the partition the job goes to (the default one when none was set)
    cpus: int                         # per task, after defaults
    mem_mb: int
    defaults: Tuple[str, ...] = ()    # how derived values were chosen, one line each (dry run and doctor)
    problems: Tuple[Problem, ...] = ()
    checked: bool = True              # False: the cluster's shape was not read, nothing was checked

    @property
    def ok(self) -> bool:
        return not self.problems


# ----------------------------------------------------------------------------------------------------------------
# defaults from the nodes


def per_gpu_from_nodes(partition: Partition, gpu_name: str = "gpu", gpu_type: Optional[str] = None
                       ) -> Optional[Tuple[Fraction, Fraction, NodeGroup]]:
    """(CPUs per GPU, MiB per GPU, the node group they come from): node CPUs and memory divided by node GPUs,
    the smallest over the partition's GPU nodes (those that take jobs, else all), so it fits on each of them. The
    partition's MaxCPUsPerNode/MaxMemPerNode cap what a node offers. None without GPU nodes."""
    groups = [g for g in (partition.usable_nodes or partition.nodes) if g.gpus(gpu_name, gpu_type) > 0]
    best = None
    for group in groups:
        gpus = group.gpus(gpu_name, gpu_type)
        cpus = _capped(group.cpus, partition.max_cpus_per_node)
        memory = _capped(group.memory_mb, partition.max_mem_per_node_mb)
        if cpus is None or memory is None:
            continue
        candidate = (Fraction(cpus, gpus), Fraction(memory, gpus), group)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    return best


def _capped(value: Optional[int], cap: Optional[int]) -> Optional[int]:
    if value is None:
        return cap
    return value if cap is None else min(value, cap)


def resolve(ask: Ask, partition: Optional[Partition]) -> Tuple[int, int, Tuple[str, ...]]:
    """Per-task CPUs and MiB, and how the derived ones were chosen."""
    if ask.gpus == 0:
        return ask.cpus_per_task, ask.mem_mb, ()
    derived = per_gpu_from_nodes(partition, ask.gpu_name, ask.gpu_type) if partition else None
    notes: List[str] = []
    if ask.cpus_per_gpu is not None:
        cpus = ask.cpus_per_gpu * ask.gpus
    elif derived:
        cpus = max(1, int(derived[0] * ask.gpus))
        notes.append(f"cpus_per_gpu: {_number(derived[0])} from the nodes of partition {partition.name} "
                     f"({derived[2].describe(ask.gpu_name)}): {cpus} CPU{'s' if cpus > 1 else ''} for {ask.gpus} "
                     f"{ask.gpu_name}")
    else:
        cpus = FALLBACK_CPUS_PER_GPU * ask.gpus
        notes.append(f"cpus_per_gpu: {FALLBACK_CPUS_PER_GPU} (no {ask.gpu_name} nodes seen to derive it from)")
    if ask.mem_per_gpu_mb is not None:
        memory = ask.mem_per_gpu_mb * ask.gpus
    elif derived:
        memory = max(1, int(derived[1] * ask.gpus))
        notes.append(f"mem_per_gpu: {int(derived[1])}M from the nodes of partition {partition.name} "
                     f"({derived[2].describe(ask.gpu_name)}): {memory}M for {ask.gpus} {ask.gpu_name}")
    else:
        memory = FALLBACK_MEM_PER_GPU_MB * ask.gpus
        notes.append(f"mem_per_gpu: {FALLBACK_MEM_PER_GPU_MB}M (no {ask.gpu_name} nodes seen to derive it from)")
    return cpus, memory, tuple(notes)


def _number(value: Fraction) -> str:
    return str(int(value)) if value.denominator == 1 else f"{float(value):.2f}".rstrip("0")


# ----------------------------------------------------------------------------------------------------------------
# the check


def check(ask: Ask, shape: ClusterShape) -> Fit:
    """The fit of one shape: derived CPUs/memory and every problem that makes it impossible."""
    if not shape.partitions:  # not read (its queries failed, or no batch scheduler): nothing to check against
        cpus, memory, notes = resolve(ask, None)
        return Fit(partition=ask.partition, cpus=cpus, mem_mb=memory, defaults=notes, checked=False)
    where = "partition" if shape.scheduler == "slurm" else "queue"
    partition = shape.partition(ask.partition)
    cpus, memory, notes = resolve(ask, partition)
    problems: List[Problem] = []
    if partition is None:
        problems.append(_missing(ask, shape, where))
    else:
        problems += _partition_problems(ask, partition, where, cpus, memory)
        problems += _account_problems(ask, shape, partition, where)
        problems += _limit_problems(ask, shape, partition, cpus, memory)
    return Fit(partition=partition.name if partition else ask.partition, cpus=cpus, mem_mb=memory,
               defaults=notes, problems=tuple(problems))


def _missing(ask: Ask, shape: ClusterShape, where: str) -> Problem:
    known = ", ".join(shape.partitions) or "none"
    key = "partition" if where == "partition" else "queue"
    if ask.partition:
        return Problem(key, f"{where} {ask.partition} does not exist ({where}s: {known}); "
                            f"set {key} to one of them in {ask.source(key)}")
    return Problem(key, f"no default {where} ({where}s: {known}); set {key} in {ask.source(key)}")


def _partition_problems(ask: Ask, partition: Partition, where: str, cpus: int, memory: int) -> List[Problem]:
    label = f"{where} {partition.name}"
    key = "partition" if where == "partition" else "queue"
    problems: List[Problem] = []
    if not partition.up:
        problems.append(Problem(key, f"{label} is {partition.state}; set {key} to another in {ask.source(key)}"))
    if partition.max_walltime_s is not None and ask.walltime_s > partition.max_walltime_s:
        problems.append(_walltime(ask, label, partition.max_walltime_s))
    problems += _node_problems(ask, partition, label, cpus, memory)
    limits = partition.max_per_job
    if "gpu" in limits and ask.gpus > limits["gpu"]:
        problems.append(Problem("gpus", f"{label} allows at most {limits['gpu']} GPUs per job (asked {ask.gpus}); "
                                        f"ask for {limits['gpu']} or fewer per run in {ask.source('gpus')}"))
    if "ncpus" in limits and cpus > limits["ncpus"]:
        problems.append(_cpus(ask, f"{label} allows at most {limits['ncpus']} CPUs per job (asked {cpus})",
                              limits["ncpus"]))
    if "mem" in limits and memory > limits["mem"]:
        problems.append(_mem(ask, f"{label} allows at most {limits['mem']}M per job (asked {memory}M)",
                             limits["mem"]))
    return problems


def _node_problems(ask: Ask, partition: Partition, label: str, cpus: int, memory: int) -> List[Problem]:
    """What no node of the partition can hold, one problem per resource; nodes that take no jobs are named."""
    groups = partition.nodes
    if not groups:
        return []  # nodes not read: nothing to say
    usable = partition.usable_nodes
    if not usable:
        states = ", ".join(f"{g.count} {g.raw_state or g.state}" for g in groups)
        key = "partition" if label.startswith("partition") else "queue"
        return [Problem(key, f"{label}: no node takes jobs ({states}); ask the admins, or set {key} to another "
                             f"in {ask.source(key)}")]
    gpu_ok = [g for g in usable if g.gpus(ask.gpu_name, ask.gpu_type) >= ask.gpus]
    have = "; ".join(g.describe(ask.gpu_name) for g in usable) + _caps(partition)
    if not gpu_ok:
        most = max(g.gpus(ask.gpu_name, ask.gpu_type) for g in usable)
        kind = f"{ask.gpu_name}:{ask.gpu_type}" if ask.gpu_type else ask.gpu_name
        return [Problem("gpus", f"{label}: no node has {ask.gpus} {kind} for one task (nodes have {have}); "
                                f"ask for {most} or fewer per run in {ask.source('gpus')}")]
    problems: List[Problem] = []
    node_cpus = max(_capped(g.cpus, partition.max_cpus_per_node) or 0 for g in gpu_ok)
    if cpus > node_cpus:
        problems.append(_cpus(ask, f"{label}: no node has {cpus} CPUs for one task (nodes have {have})", node_cpus))
    node_mem = max(_capped(g.memory_mb, partition.max_mem_per_node_mb) or 0 for g in gpu_ok)
    if memory > node_mem:
        problems.append(_mem(ask, f"{label}: no node has {memory}M for one task (nodes have {have})", node_mem))
    if partition.max_mem_per_cpu_mb is not None and memory > partition.max_mem_per_cpu_mb * node_cpus:
        problems.append(_mem(ask, f"{label} allows {partition.max_mem_per_cpu_mb}M per CPU, at most "
                                  f"{partition.max_mem_per_cpu_mb * node_cpus}M on its nodes (asked {memory}M)",
                             partition.max_mem_per_cpu_mb * node_cpus))
    if not problems and not any(_holds(g, partition, cpus, memory) for g in gpu_ok):
        problems.append(Problem("gpus", f"{label}: no single node has {ask.gpus} {ask.gpu_name}, {cpus} CPUs and "
                                        f"{memory}M together (nodes have {have}); lower cpus_per_gpu or mem_per_gpu "
                                        f"in {ask.source('cpus_per_gpu')}"))
    return problems


def _caps(partition: Partition) -> str:
    caps = [f"MaxCPUsPerNode={partition.max_cpus_per_node}" if partition.max_cpus_per_node is not None else "",
            f"MaxMemPerNode={partition.max_mem_per_node_mb}M" if partition.max_mem_per_node_mb is not None else ""]
    caps = [c for c in caps if c]
    return f"; the {'partition' if partition.nodes else 'queue'} allows {', '.join(caps)}" if caps else ""


def _holds(group: NodeGroup, partition: Partition, cpus: int, memory: int) -> bool:
    return (_capped(group.cpus, partition.max_cpus_per_node) or 0) >= cpus and \
        (_capped(group.memory_mb, partition.max_mem_per_node_mb) or 0) >= memory


def _cpus(ask: Ask, what: str, most: int) -> Problem:
    if ask.gpus:
        per_gpu = most // ask.gpus
        fix = (f"set cpus_per_gpu = {per_gpu} or fewer in {ask.source('cpus_per_gpu')}" if per_gpu >= 1 else
               f"ask for {most} or fewer {ask.gpu_name} per run in {ask.source('gpus')}")
        return Problem("cpus_per_gpu" if per_gpu >= 1 else "gpus", f"{what}; {fix}")
    return Problem("cpus_per_task", f"{what}; set cpus_per_task = {most} or fewer in {ask.source('cpus_per_task')}")


def _mem(ask: Ask, what: str, most_mb: int) -> Problem:
    if ask.gpus:
        return Problem("mem_per_gpu", f"{what}; set mem_per_gpu = \"{most_mb // ask.gpus}M\" or less in "
                                      f"{ask.source('mem_per_gpu')}")
    return Problem("mem", f"{what}; set mem = \"{most_mb}M\" or less in {ask.source('mem')}")


def _walltime(ask: Ask, label: str, most_s: int) -> Problem:
    return Problem("walltime", f"{label} allows at most {_hms(most_s)} (asked {_hms(ask.walltime_s)}); set "
                               f"walltime = \"{_hms(most_s)}\" or less in {ask.source('walltime')}")


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ----------------------------------------------------------------------------------------------------------------
# accounts, QOS and their per-job limits (Slurm)


def _account_problems(ask: Ask, shape: ClusterShape, partition: Partition, where: str) -> List[Problem]:
    if shape.associations is None or not shape.accounts_enforced:
        return []
    label = f"{where} {partition.name}"
    mine = [a for a in shape.associations if a.partition in (None, partition.name)]
    accounts = sorted({a.account for a in mine})
    problems: List[Problem] = []
    if ask.account and accounts and ask.account not in accounts:
        problems.append(Problem("account", f"account {ask.account} is not yours on {label} (yours: "
                                           f"{', '.join(accounts)}); set account in {ask.source('account')}"))
    allowed = partition.allow_accounts
    usable = [a for a in ([ask.account] if ask.account else accounts)
              if (allowed is None or a in allowed) and a not in partition.deny_accounts]
    if accounts and not usable:
        listed = ", ".join(sorted(allowed)) if allowed is not None else "all but " + ", ".join(
            sorted(partition.deny_accounts))
        problems.append(Problem("account", f"{label} takes jobs of accounts {listed} only (yours: "
                                           f"{ask.account or ', '.join(accounts)}); set account or "
                                           f"{'partition' if where == 'partition' else 'queue'} in "
                                           f"{ask.source('account')}"))
    if ask.qos:
        qos_allowed = sorted({q for a in mine if not ask.account or a.account == ask.account for q in a.qos})
        if shape.qos is not None and ask.qos not in shape.qos:
            problems.append(Problem("qos", f"QOS {ask.qos} does not exist (QOS: {', '.join(shape.qos) or 'none'}); "
                                           f"set qos in {ask.source('qos')}"))
        elif qos_allowed and ask.qos not in qos_allowed:
            problems.append(Problem("qos", f"QOS {ask.qos} is not allowed to you on {label} (yours: "
                                           f"{', '.join(qos_allowed)}); set qos in {ask.source('qos')}"))
        elif (partition.allow_qos is not None and ask.qos not in partition.allow_qos) or ask.qos in partition.deny_qos:
            problems.append(Problem("qos", f"{label} does not take QOS {ask.qos}; set qos in {ask.source('qos')}"))
    return problems


def _limit_problems(ask: Ask, shape: ClusterShape, partition: Partition, cpus: int, memory: int) -> List[Problem]:
    """Per-job walltime and TRES limits of the QOS the job runs under, its partition's QOS and its association."""
    problems: List[Problem] = []
    for label, wall, per_job in _binding_limits(ask, shape, partition):
        if wall is not None and ask.walltime_s > wall:
            problems.append(_walltime(ask, label, wall))
        asked = {f"gres/{ask.gpu_name}": ask.gpus, "cpu": cpus, "mem": memory}
        for tres, most in per_job.items():
            if tres not in asked or asked[tres] <= most:
                continue
            what = f"{label} allows at most {most}{'M' if tres == 'mem' else ''} {tres} per job " \
                   f"(asked {asked[tres]}{'M' if tres == 'mem' else ''})"
            if tres == "cpu":
                problems.append(_cpus(ask, what, most))
            elif tres == "mem":
                problems.append(_mem(ask, what, most))
            else:
                problems.append(Problem("gpus", f"{what}; ask for {most} or fewer per run in {ask.source('gpus')}"))
    return problems


def _binding_limits(ask: Ask, shape: ClusterShape, partition: Partition
                    ) -> Sequence[Tuple[str, Optional[int], Mapping[str, int]]]:
    out = []
    if shape.qos is not None:
        names = [partition.qos] if partition.qos else []
        names.append(ask.qos or _default_qos(ask, shape, partition))
        for name in dict.fromkeys(n for n in names if n):
            qos = shape.qos.get(name)
            if qos is not None:
                out.append((f"QOS {name}", qos.max_walltime_s, qos.max_per_job))
    mine = [a for a in shape.associations or () if a.partition in (None, partition.name)
            and ask.account in (None, a.account)]
    if mine:
        # Without an account the job gets the user's default one, which sacctmgr's listing does not name: a limit
        # binds only where every candidate association has it (the loosest of them).
        walls = [a.max_walltime_s for a in mine]
        wall = None if None in walls else max(walls)
        keys = set.intersection(*(set(a.max_per_job) for a in mine))
        per_job = {k: max(a.max_per_job[k] for a in mine) for k in keys}
        label = f"your association (account {mine[0].account})" if len(mine) == 1 else "each of your associations"
        out.append((label, wall, per_job))
    return out


def _default_qos(ask: Ask, shape: ClusterShape, partition: Partition) -> Optional[str]:
    """The QOS a job gets without --qos: its association's default, else its only QOS, else 'normal'."""
    for assoc in shape.associations or ():
        if assoc.partition in (None, partition.name) and ask.account in (None, assoc.account):
            if assoc.default_qos:
                return assoc.default_qos
            if len(assoc.qos) == 1:
                return next(iter(assoc.qos))
            return "normal" if "normal" in assoc.qos or not assoc.qos else None
    return "normal"
