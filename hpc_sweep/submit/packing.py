"""Packing runs into allocations (issue #16): which configs share one array task, how the task's GPUs are split
into lanes, and what the packed job script (job_templates/packed.sh.j2) is told. Pure: no state, no files.

A *task* is one array element, one allocation: what the queue cap counts. A packed task holds several configs of
one shape (the map's lines with its index, in the order they start) and runs them on *lanes*; a lane runs one
config at a time, on the GPUs it was given:

- ``runs_per_gpu = K``: the task asks for the GPUs of one config (g) and has K lanes, all sharing those GPUs.
- ``pack = "node"`` with ``gpus_per_node = G``: the task asks for G GPUs, cut into G // g groups of g; each group
  has K lanes (K = runs_per_gpu, 1 unless set), so one config per group, or K sharing it. Lanes take groups in
  turn (lane l -> group l mod groups): fewer configs than lanes spread over the GPUs first.

A task may hold more configs than lanes (up to ``waves`` per lane, :func:`waves_for`): when a lane frees, the
task's next config starts on it if it can still end before the walltime (the rule is in packed.sh.j2). CPU configs
are never packed. The map format is unchanged: a packed task is several lines with the same index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from hpc_sweep.common.errors import UserError

if TYPE_CHECKING:
    from hpc_sweep.session import Session

PACK_MODES = ("node",)
RESERVE_S = 120   # a config started later must leave this much of the walltime spare (its TERM, a checkpoint);
                  # a tenth of the walltime where that is less (a short test or debug queue)
LATER_FACTOR = 1.1  # ... and 1.1 x the longest run seen (packed.sh.j2 says the same rule)
NODE_WAVES_UNSEEN = 2  # pack = "node" without pack_waves, no run of the shape seen yet: the walltime rule guards
NODE_WAVES_MAX = 4     # pack = "node" without pack_waves: never more per lane than this, whatever the runs seen
                       # (a task that dies takes at most this many configs per GPU; the next submit plans again)
GRACE_S = 60      # a run stopped on request gets this long after its TERM before its process group is killed
TICK_S = 1        # how often the task's launcher looks at its runs and their stop requests


@dataclass(frozen=True)
class Packing:
    """How a sweep packs its configs (site profile or [sweep]); the default packs nothing."""

    runs_per_gpu: int = 1
    node: bool = False          # pack = "node"
    gpus_per_node: int = 0
    waves: Optional[int] = None  # at most this many configs per lane in one task (pack_waves); None: the
                                 # default, see :func:`waves_for`

    @property
    def enabled(self) -> bool:
        return self.node or self.runs_per_gpu > 1


def packing_from(values: Mapping, file: object = None, where: Optional[Mapping[str, tuple]] = None) -> Packing:
    """The packing keys of a profile or [sweep] table, checked: ``runs_per_gpu``, ``pack``, ``gpus_per_node``,
    ``pack_waves``. Absent keys keep the defaults. ``where``: key -> (file, key as written there), for keys merged
    from several files; others are named as in ``file``."""
    def source(key: str) -> dict:
        found = (where or {}).get(key)
        return {"file": found[0], "key": found[1]} if found else {"file": file, "key": key}

    runs = _positive(values, "runs_per_gpu", 1, source)
    mode = values.get("pack")
    if mode not in (None, "") and mode not in PACK_MODES:
        raise UserError(f"'{mode}' is not a packing mode", **source("pack"),
                        fix='write pack = "node" (one task per node, one run per GPU), or leave it out')
    node = mode == "node"
    gpus_per_node = _positive(values, "gpus_per_node", 0, source)
    if node and not gpus_per_node:
        beside = source("pack")  # named in the file that asks for it
        raise UserError('pack = "node" needs the number of GPUs of a node', file=beside["file"],
                        key=beside["key"].replace("pack", "gpus_per_node"),
                        fix="add gpus_per_node = 8 (or what the partition's nodes have)")
    if gpus_per_node and not node:
        raise UserError('gpus_per_node is used only with pack = "node"', **source("gpus_per_node"),
                        fix='add pack = "node", or remove gpus_per_node')
    return Packing(runs, node, gpus_per_node, _positive(values, "pack_waves", None, source))


def _positive(values: Mapping, key: str, default: Optional[int], source) -> Optional[int]:
    if values.get(key) is None:
        return default
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{value!r} is not a whole number of at least 1", **source(key),
                        fix=f"write {key} = 2 (or another whole number), or leave it out")
    return value


def session_packing(session: Session) -> Packing:
    """How this sweep packs: the site profile's keys, each overridden by [sweep]'s. The local backend packs
    nothing here (its runner shares GPUs by its own runs_per_gpu)."""
    profile, spec = session.profile, session.spec
    if profile.scheduler == "local":
        return Packing()
    values: dict = {}
    where: dict = {}
    mine = str(profile.path) if profile.path else f"site profile {profile.name}"
    for key in ("runs_per_gpu", "pack", "gpus_per_node", "pack_waves"):
        value = getattr(profile, key, None)
        if value is not None and not (key == "runs_per_gpu" and value == 1):
            values[key], where[key] = value, (mine, key)
    for key, value in spec.packing.items():
        values[key], where[key] = value, (str(spec.path), f"sweep.{key}")
    return packing_from(values, where=where)


def packs(gpus: int, packing: Packing) -> bool:
    """Whether configs of this many GPUs are packed (CPU configs never are)."""
    return gpus > 0 and packing.enabled


def lanes(gpus: int, packing: Packing) -> list[str]:
    """Each lane's GPUs, as comma-separated positions within the task's allocation ('' = all of them, shared).
    Empty when configs of this many GPUs are not packed."""
    if not packs(gpus, packing):
        return []
    if not packing.node:
        return [""] * packing.runs_per_gpu
    if gpus > packing.gpus_per_node:
        raise UserError(f"a config needs {gpus} GPUs but a node has {packing.gpus_per_node}", key="gpus_per_node",
                        fix="give those configs fewer GPUs, or do not pack them")
    groups = packing.gpus_per_node // gpus
    return [",".join(str((lane % groups) * gpus + i) for i in range(gpus))
            for lane in range(groups * packing.runs_per_gpu)]


def allocation_gpus(gpus: int, packing: Packing) -> int:
    """GPUs one task asks for: a whole node's when packing by node, one config's otherwise."""
    return packing.gpus_per_node if packs(gpus, packing) and packing.node else gpus


def task_request(gpus: int, packing: Packing) -> tuple[int, int]:
    """(GPUs, runs per GPU) one task of configs of this many GPUs asks for: a packed task's whole shape, as
    submitted (:class:`hpc_sweep.submit.planning.Chunk`) and judged by the fit check."""
    if not packs(gpus, packing):
        return gpus, 1
    return allocation_gpus(gpus, packing), packing.runs_per_gpu


def runs_at_once(gpus: int, packing: Packing) -> int:
    """Runs one task holds at a time: its CPUs and memory are this many configs' (each run keeps its own data
    loader workers and host memory; only GPUs are shared)."""
    return max(1, len(lanes(gpus, packing)))


def plan_tasks(count: int, lane_count: int, room: Optional[int], waves: int = 1) -> list[int]:
    """How many configs each task of a chunk holds, in order. One task per ``lane_count`` configs while the queue
    has room (``room``: tasks that may still be queued; None = no cap); where it has not, the tasks it allows
    hold up to ``waves`` configs per lane. Configs are spread evenly, so every task allowed is used; configs
    beyond what fits wait. With a cap of 10 and 3 lanes, 30 configs run at once."""
    if count <= 0 or lane_count <= 0:
        return []
    tasks = -(-count // lane_count)
    if room is not None:
        tasks = min(tasks, room)
    if tasks <= 0:
        return []
    placed = min(count, tasks * lane_count * waves)
    base, extra = divmod(placed, tasks)
    return [base + (1 if task < extra else 0) for task in range(tasks)]


def reserve_for(walltime_s: Optional[int]) -> int:
    """What a config started later must leave of the walltime: :data:`RESERVE_S`, or a tenth of the walltime where
    that is less."""
    return min(RESERVE_S, walltime_s // 10) if walltime_s else RESERVE_S


def waves_for(packing: Packing, walltime_s: int, longest_s: Optional[float]) -> int:
    """Configs per lane a task of this packing may hold. ``pack_waves`` where set; otherwise 1 for
    ``runs_per_gpu``, and for ``pack = "node"`` as many as the walltime holds by the task's own rule for a later
    start (time left >= 1.1 x the longest run + the reserve), the runs lasting ``longest_s`` (the longest run of
    the shape seen: ended whole, timed out or still running); :data:`NODE_WAVES_UNSEEN` when none was seen, at
    least 1 and at most :data:`NODE_WAVES_MAX`. A GPU that frees then starts the task's next config; one that
    could not end in time is left unstarted by the task and queued again."""
    if packing.waves:
        return packing.waves
    if not packing.node:
        return 1
    if not longest_s or longest_s <= 0:
        return NODE_WAVES_UNSEEN
    need = LATER_FACTOR * longest_s + reserve_for(walltime_s)
    waves = 1
    while waves < NODE_WAVES_MAX and walltime_s - waves * longest_s >= need:  # wave k + 1 starts k runs in
        waves += 1
    return waves


def task_indices(sizes: Sequence[int]) -> list[int]:
    """The array index of each config placed by :func:`plan_tasks`, in order."""
    return [task for task, size in enumerate(sizes) for _ in range(size)]


def tasks_of(entries: Sequence) -> dict:
    """Map entries grouped by array index (one group per task), each group in its start order."""
    found: dict = {}
    for entry in entries:
        found.setdefault(entry.index, []).append(entry)
    return found


def task_count(entries: Sequence) -> int:
    """Tasks of a map: its distinct indices (a packed map has fewer tasks than lines)."""
    return len({entry.index for entry in entries})


def device_env(device_type: str) -> str:
    """The variable a lane's GPUs are set in: NVIDIA's, or ROCm's lowest layer for AMD GPUs and DCUs (HIP's and
    CUDA's numberings would then count within it, so the launcher unsets them for that run)."""
    return "ROCR_VISIBLE_DEVICES" if device_type in ("rocm", "dcu") else "CUDA_VISIBLE_DEVICES"


def template_context(gpus: int, device_type: str, packing: Packing, per_task: int, reserve_s: Optional[int] = None,
                     grace_s: int = GRACE_S, tick_s: float = TICK_S, walltime_s: Optional[int] = None) -> dict:
    """What packed.sh.j2 needs beyond the one-config script context (whose walltime_s it also reads).
    ``per_task``: the most configs a task of this submission holds (each run's port is set from it);
    ``reserve_s``: by default :data:`RESERVE_S`, or a tenth of ``walltime_s`` where that is less."""
    layout = lanes(gpus, packing)
    if not layout:
        return {"packed": False}
    if reserve_s is None:
        reserve_s = reserve_for(walltime_s)
    return {"packed": True, "pack_lanes": len(layout), "pack_lane_devices": layout, "pack_per_task": per_task,
            "pack_device_env": device_env(device_type), "pack_reserve_s": reserve_s, "pack_grace_s": grace_s,
            "pack_tick_s": tick_s}
