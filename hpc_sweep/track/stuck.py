"""Stuck is not pending: which pending reasons waiting can never clear, the fix to print, and the poll's step that
records them.

:func:`stuck` is pure: a pending task's reason (Slurm ``squeue %r``, the PBS/Torque ``comment``) and, where it
matters, its partition's shape give None (it may start: priority, resources, limits that free up) or a
:class:`Stuck` with the fix. Reasons are Slurm 22.05's ``job_state_reason_string`` words, as captured in
tests/fixtures/slurm-22.05/squeue_*.txt.

:func:`mark_stuck` is the poll's step, after the scheduler's answer was applied: each pending attempt's fix is
stored (``attempts.stuck``; cleared once it is no longer pending or its reason changed), and one line per new
(reason, fix) is printed once, with an event per attempt, so cron mails it once. The status only reads what is
stored.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from hpc_sweep.schedulers.cluster import ClusterShape, Partition
from hpc_sweep.state.states import ConfigState
from hpc_sweep.submit.fit import check
from hpc_sweep.submit.packing import Packing, session_packing, task_request

if TYPE_CHECKING:
    from hpc_sweep.session import Session
    from hpc_sweep.submit.fit import Ask

_DOCTOR = "run 'hpc-sweep doctor' to see what the nodes have, then cancel and resubmit"
_WALLTIME = "lower walltime in sweep.toml or the site profile, then cancel and resubmit"
_GPUS = "ask for fewer GPUs per run (or another QOS/account), then cancel and resubmit"
_CPUS = "lower cpus_per_gpu (or cpus_per_task), then cancel and resubmit"
_MEMORY = "lower mem_per_gpu (or mem), then cancel and resubmit"

# Slurm reasons that no amount of waiting clears: the job as submitted breaks a partition, QOS or association rule.
SLURM_NEVER: Dict[str, str] = {
    "PartitionConfig": "the partition's limits or nodes cannot hold the request (CPUs or memory per node); " + _DOCTOR,
    "PartitionTimeLimit": "walltime is above the partition's MaxTime; " + _WALLTIME,
    "PartitionNodeLimit": "more nodes than the partition allows; " + _DOCTOR,
    "PartitionInactive": "the partition is inactive; set partition to another in the site profile, then cancel and "
                         "resubmit",
    "BadConstraints": "no node has the requested features (extra_directives --constraint); fix them, then cancel "
                      "and resubmit",
    "InvalidAccount": "the account is not (or no longer) yours; set account in the site profile, then cancel and "
                      "resubmit",
    "InvalidQOS": "the QOS is not (or no longer) allowed to you; set qos in the site profile, then cancel and "
                  "resubmit",
    "AccountNotAllowed": "the partition does not take this account; set account or partition, then cancel and "
                         "resubmit",
    "QOSNotAllowed": "the partition does not take this QOS; set qos or partition, then cancel and resubmit",
    "MaxMemPerLimit": "memory is above the partition's MaxMemPerNode/MaxMemPerCPU; " + _MEMORY,
    "QOSMaxWallDurationPerJobLimit": "walltime is above the QOS's MaxWall; " + _WALLTIME,
    "AssocMaxWallDurationPerJobLimit": "walltime is above your association's MaxWall; " + _WALLTIME,
    "QOSMaxGRESPerJob": "more GPUs than the QOS allows per job; " + _GPUS,
    "AssocMaxGRESPerJob": "more GPUs than your association allows per job; " + _GPUS,
    "QOSMaxGRESPerNode": "more GPUs per node than the QOS allows; " + _GPUS,
    "AssocMaxGRESPerNode": "more GPUs per node than your association allows; " + _GPUS,
    "QOSMaxCpuPerJobLimit": "more CPUs than the QOS allows per job; " + _CPUS,
    "AssocMaxCpuPerJobLimit": "more CPUs than your association allows per job; " + _CPUS,
    "QOSMaxCpuPerNode": "more CPUs per node than the QOS allows; " + _CPUS,
    "AssocMaxCpuPerNode": "more CPUs per node than your association allows; " + _CPUS,
    "QOSMaxMemoryPerJob": "more memory than the QOS allows per job; " + _MEMORY,
    "AssocMaxMemPerJob": "more memory than your association allows per job; " + _MEMORY,
    "QOSMaxMemoryPerNode": "more memory per node than the QOS allows; " + _MEMORY,
    "AssocMaxMemPerNode": "more memory per node than your association allows; " + _MEMORY,
    "QOSMaxNodePerJobLimit": "more nodes than the QOS allows per job; " + _DOCTOR,
    "AssocMaxNodePerJobLimit": "more nodes than your association allows per job; " + _DOCTOR,
    "QOSMinGRES": "fewer GPUs than the QOS requires; ask for more GPUs per run or another QOS, then cancel and "
                  "resubmit",
    "QOSMinCpuNotSatisfied": "fewer CPUs than the QOS requires; raise cpus_per_gpu or use another QOS, then cancel "
                             "and resubmit",
    "QOSMinMemory": "less memory than the QOS requires; raise mem_per_gpu or use another QOS, then cancel and "
                    "resubmit",
    "QOSMinNode": "fewer nodes than the QOS requires; use another QOS, then cancel and resubmit",
    "DependencyNeverSatisfied": "a job it depends on failed; cancel it",
}
# Slurm spells these two out with the partition's rule: "Job's account not permitted to use this partition (...)".
_SLURM_SENTENCES = {
    "Job's account not permitted to use this partition": "set account or partition in the site profile, then "
                                                         "cancel and resubmit",
    "Job's QOS not permitted to use this partition": "set qos or partition in the site profile, then cancel and "
                                                     "resubmit",
}
_REQ_NODE_NOT_AVAIL = "ReqNodeNotAvail"
_PBS_NEVER = re.compile(r"^\s*Can Never Run\b", re.I)
# Torque's pbs_sched says this while nodes are busy too: stuck only when the queue's nodes cannot hold the job.
_TORQUE_NO_NODES = re.compile(r"Not enough of the right type of nodes", re.I)


@dataclass(frozen=True)
class Stuck:
    reason: str    # the scheduler's words
    fix: str       # one line: why it cannot start and what to change


def stuck(scheduler: str, reason: Optional[str], partition: Optional[Partition] = None,
          fits: Optional[bool] = None) -> Optional[Stuck]:
    """Whether a pending task with this reason/comment can never start. ``partition``: its partition's shape
    (ReqNodeNotAvail and Torque's node comment are stuck only when no node of it takes jobs); ``fits``: the fit
    check's verdict for the task's shape, when known (False makes Torque's node comment stuck)."""
    text = (reason or "").strip()
    if not text or text == "None":
        return None
    if scheduler == "slurm":
        return _slurm(text, partition)
    if scheduler == "pbspro":
        return Stuck(text, "no node can ever hold the request; " + _DOCTOR) if _PBS_NEVER.match(text) else None
    if scheduler == "torque":
        if _TORQUE_NO_NODES.search(text) and (fits is False or _no_node_up(partition)):
            return Stuck(text, "no node of the queue can hold the request; " + _DOCTOR)
        return None
    return None


def _slurm(text: str, partition: Optional[Partition]) -> Optional[Stuck]:
    word = text.split(",", 1)[0].strip()
    if word in SLURM_NEVER:
        return Stuck(text, SLURM_NEVER[word])
    for sentence, fix in _SLURM_SENTENCES.items():
        if text.startswith(sentence):
            return Stuck(text, fix)
    if word == _REQ_NODE_NOT_AVAIL and _no_node_up(partition):
        return Stuck(text, f"every node of partition {partition.name} is down or drained; ask the admins, or set "
                           "partition to another in the site profile, then cancel and resubmit")
    return None


def _no_node_up(partition: Optional[Partition]) -> bool:
    return partition is not None and bool(partition.nodes) and not partition.usable_nodes


def needs_partition(scheduler: str, reason: Optional[str]) -> bool:
    """Whether :func:`stuck` needs the partition's nodes to decide this reason."""
    text = (reason or "").strip()
    if scheduler == "slurm":
        return text.split(",", 1)[0].strip() == _REQ_NODE_NOT_AVAIL
    return scheduler == "torque" and bool(_TORQUE_NO_NODES.search(text))


# ----------------------------------------------------------------------------------------------------------------
# the poll's step

_PENDING_OR_STUCK = f"""
SELECT a.config, a.attempt, a.state, a.reason, a.stuck, c.gpus, c.shape, c.walltime_s
FROM attempts a JOIN configs c ON c.name = a.config AND c.attempt = a.attempt
WHERE a.state = '{ConfigState.PENDING}' OR a.stuck IS NOT NULL
"""


def mark_stuck(session: Session, report) -> None:
    """Store each pending attempt's fix where waiting cannot start it; note the new ones in ``report.notes``."""
    store, scheduler = session.store, session.profile.scheduler
    rows = store.query(_PENDING_OR_STUCK)
    if not rows:
        return
    partition, fits = _partition_and_fits(session, scheduler, rows)
    updates: List[tuple] = []
    new: Dict[Tuple[str, str], List[str]] = {}
    for config, attempt, state, reason, stored, gpus, shape, walltime_s in rows:
        found = None
        if state == ConfigState.PENDING:
            found = stuck(scheduler, reason, partition, fits(gpus, shape, walltime_s) if fits else None)
        fix = found.fix if found else None
        if fix != stored:
            updates.append((fix, config, attempt))
            if found:
                new.setdefault((found.reason, fix), []).append(config)
    if not updates:
        return
    with store.transaction() as conn:
        conn.executemany("UPDATE attempts SET stuck = ? WHERE config = ? AND attempt = ?", updates)
        for (reason, fix), names in new.items():
            for name in names:
                store.add_event("stuck", f"{reason}: {fix}", name)
    for (reason, fix), names in new.items():
        report.notes.append(f"{_names(names)}: stuck, pending for {reason}: {fix}")


def _names(names: List[str]) -> str:
    if len(names) <= 3:
        return ", ".join(names)
    return f"{len(names)} configs ({names[0]} ... {names[-1]})"


def _partition_and_fits(session: Session, scheduler: str, rows: list):
    """The partition's shape and a fit verdict per task shape, only where a pending reason needs them: the shape
    cached with the limits, asked again (and cached) when older than the limits' hour."""
    if not any(row[2] == ConfigState.PENDING and needs_partition(scheduler, row[3]) for row in rows):
        return None, None
    from hpc_sweep.submit.queries import cached_shape, shape_now
    from hpc_sweep.submit.resources import session_ask

    shape: Optional[ClusterShape] = cached_shape(session) or shape_now(session)
    profile = session.profile
    partition = shape.partition(profile.partition or profile.queue) if shape.partitions else None
    walltime_default = session.spec.walltime_s or profile.walltime_s
    ask = functools.partial(session_ask, session)
    return partition, task_fits(shape, ask, session_packing(session), walltime_default)


def task_fits(shape: ClusterShape, ask: Callable[..., "Ask"], packing: Packing, walltime_default: int):
    """A verdict per pending config (its GPUs, shape and walltime): whether the task it waits in can ever be
    held here, judged by that task's own request, as the fit check judged it at submit: a packed task asks for
    its GPUs (a node's with pack = "node") and all its runs' CPUs and memory. ``ask(gpus, device_type,
    walltime_s, runs_per_gpu)`` builds the request. None where the shape has no partitions."""
    verdicts: Dict[tuple, bool] = {}

    def fits(gpus: int, config_shape: str, walltime_s: Optional[int]) -> Optional[bool]:
        if not shape.partitions:
            return None
        task_gpus, runs_per_gpu = task_request(gpus, packing)
        key = (task_gpus, config_shape.split(":")[0], walltime_s or walltime_default, runs_per_gpu)
        if key not in verdicts:
            verdicts[key] = check(ask(*key), shape).ok
        return verdicts[key]

    return fits
