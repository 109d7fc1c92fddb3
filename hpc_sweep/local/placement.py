"""Where the local backend starts a run: GPU status from ``nvidia-smi --query-gpu``, which GPUs can take one more
run, and the placement of a queued task on a GPU or CPU slot (:func:`place`, with the runner's :class:`Settings`).

:func:`parse_nvidia_smi` is pure and tolerant: values nvidia-smi cannot give (``[N/A]``, ``N/A``,
``[Not Supported]``, ``[Unknown Error]``...) become None, blank lines and lines that are not rows of the asked
fields (warnings, "No devices were found") are skipped. It takes the field list because a site may ask for more
(or other) fields; the fields it knows are mapped onto :class:`GpuStatus` and the rest ignored. A ``csv`` header
line and unit suffixes (``MiB``, ``%``) are tolerated too, so output captured without ``noheader,nounits`` parses.

:func:`query_gpus` is the only function here that runs a process.
"""

from __future__ import annotations

import re
import subprocess
import os
import shlex
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

DEFAULT_FIELDS: tuple[str, ...] = ("index", "memory.used", "memory.total", "utilization.gpu")

NVIDIA_SMI_ARGV = ["nvidia-smi", "--query-gpu=" + ",".join(DEFAULT_FIELDS), "--format=csv,noheader,nounits"]

# nvidia-smi's spellings of "no value": bracketed in newer drivers, bare "N/A" in older ones.
_MISSING = re.compile(r"^\[?(n/a|not supported|unknown error|insufficient permissions|gpu is lost|"
                      r"gpu requires reset|not found)\]?$", re.IGNORECASE)
# A number optionally followed by a unit, as printed without "nounits" ("1234 MiB", "45 %", "250.00 W").
_NUMBER = re.compile(r"^([-+]?[0-9]+(?:\.[0-9]*)?)(?:\s*(?:MiB|MB|GiB|%|W|MHz|C))?$")
# nvidia-smi accepts both spellings of the name field (``--help-query-gpu``); we map both onto ``name``.
_ALIASES = {"gpu_name": "name"}


@dataclass(frozen=True)
class GpuStatus:
    """One GPU as nvidia-smi reported it. Numbers nvidia-smi could not give are None."""

    index: int
    memory_used_mb: Optional[int]
    memory_total_mb: Optional[int]
    utilization_pct: Optional[int]
    name: Optional[str] = None
    memory_free_reported_mb: Optional[int] = None  # only when the query asked for memory.free

    @property
    def memory_free_mb(self) -> Optional[int]:
        """Free memory: nvidia-smi's own figure when asked for, else total - used, else None."""
        if self.memory_free_reported_mb is not None:
            return self.memory_free_reported_mb
        if self.memory_used_mb is None or self.memory_total_mb is None:
            return None
        return self.memory_total_mb - self.memory_used_mb


def nvidia_smi_argv(fields: Sequence[str] = DEFAULT_FIELDS) -> list[str]:
    """The command line for a query of ``fields`` (the default gives :data:`NVIDIA_SMI_ARGV`)."""
    return ["nvidia-smi", "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"]


def parse_nvidia_smi(stdout: str, fields: Sequence[str] = DEFAULT_FIELDS) -> list[GpuStatus]:
    """GPUs in the order printed. Without an ``index`` field a GPU's index is its row number (nvidia-smi
    prints GPUs in index order)."""
    gpus = []
    for row_number, row in enumerate(parse_rows(stdout, fields)):
        gpus.append(_status(row, row_number))
    return gpus


def parse_rows(stdout: str, fields: Sequence[str]) -> list[dict[str, Optional[str]]]:
    """Rows of ``fields`` -> raw string values (None where nvidia-smi has none); non-rows skipped."""
    asked = [f.strip() for f in fields]
    names = [_ALIASES.get(f, f) for f in asked]
    rows = []
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(names) or _is_header(cells, asked, names):
            continue  # blank line, warning, error text, or a csv header
        row = {name: _value(cell) for name, cell in zip(names, cells)}
        if "index" in row and _integer(row["index"]) is None:
            continue  # a one-field query would otherwise take "No devices were found" for a GPU
        rows.append(row)
    return rows


def _is_header(cells: list[str], asked: list[str], names: list[str]) -> bool:
    # A csv header repeats the field names, units in brackets: "memory.used [MiB]".
    return all(cell.split(" [")[0] in (a, n) for cell, a, n in zip(cells, asked, names))


def _value(cell: str) -> Optional[str]:
    if not cell or _MISSING.match(cell):
        return None
    return cell


def _status(row: Mapping[str, Optional[str]], row_number: int) -> GpuStatus:
    index = _integer(row.get("index"))
    return GpuStatus(
        index=row_number if index is None else index,
        memory_used_mb=_integer(row.get("memory.used")),
        memory_total_mb=_integer(row.get("memory.total")),
        utilization_pct=_integer(row.get("utilization.gpu")),
        name=row.get("name"),
        memory_free_reported_mb=_integer(row.get("memory.free")),
    )


def _integer(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    match = _NUMBER.match(value)
    return int(float(match.group(1))) if match else None


def free_slots(gpus: Iterable[GpuStatus], min_free_mb: int, runs_per_gpu: int,
               running_per_gpu: Mapping[int, int], only: Optional[Iterable[int]] = None) -> list[int]:
    """Indices of the GPUs that can take one more run now, best first.

    A GPU qualifies when fewer than ``runs_per_gpu`` of our runs are on it and it has at least ``min_free_mb``
    free. Where nvidia-smi gives no memory figures (``[N/A]``, e.g. unified-memory boards) only the run count
    decides: refusing forever would stall the sweep, and the run cap still bounds the load. ``only`` restricts
    the choice to a config's own device ids. Best first = fewest of our runs, then most free memory, then index,
    so runs spread over idle GPUs before doubling up.
    """
    allowed = None if only is None else set(only)
    ranked = []
    for gpu in gpus:
        if allowed is not None and gpu.index not in allowed:
            continue
        running = running_per_gpu.get(gpu.index, 0)
        free = gpu.memory_free_mb
        if running >= runs_per_gpu or (free is not None and free < min_free_mb):
            continue
        ranked.append((running, -(free if free is not None else 0), gpu.index))
    return [index for _, _, index in sorted(ranked)]


def query_gpus(argv: Sequence[str] = NVIDIA_SMI_ARGV, fields: Sequence[str] = DEFAULT_FIELDS,
               run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
               timeout: float = 15.0) -> Optional[list[GpuStatus]]:
    """Ask nvidia-smi (``argv``, printing ``fields``); None when there is no usable nvidia-smi (not installed,
    failed, hung), so the caller falls back to CPU slots. An empty list means nvidia-smi ran and listed no GPU."""
    try:
        done = run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                   check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return parse_nvidia_smi(done.stdout, fields)


# -- the runner's slots: settings and placement ----------------------------------------------------------------------
@dataclass
class Settings:
    cpu_slots: int
    runs_per_gpu: int = 1
    gpu_min_free_mb: int = 2000
    walltime_s: Optional[int] = None
    tick_s: float = 1.0
    idle_s: float = 10.0
    grace_s: float = 10.0
    gpu_query_s: float = 5.0
    nvidia_smi: list = field(default_factory=list)
    nvidia_fields: tuple = ()


def nvidia_smi_command() -> tuple[list, tuple]:
    """The nvidia-smi argv and the fields it prints: ``HPC_SWEEP_NVIDIA_SMI`` may name another program (a
    wrapper, a test's fake) and, with its own ``--query-gpu=``, other fields."""
    text = os.environ.get("HPC_SWEEP_NVIDIA_SMI", "").strip()
    argv = shlex.split(text) if text else [NVIDIA_SMI_ARGV[0]]
    query = [a for a in argv if a.startswith("--query-gpu=")]
    if not query:
        return argv + NVIDIA_SMI_ARGV[1:], tuple(DEFAULT_FIELDS)
    return argv, tuple(f.strip() for f in query[-1].split("=", 1)[1].split(","))


@dataclass
class Placement:
    slot: str                         # "cpu" or "gpu"
    gpu_ids: list                     # real GPU indices the run occupies
    visible: Optional[str] = None     # CUDA_VISIBLE_DEVICES to set; None = leave it unrestricted


def place(task: dict, gpus: Optional[list], settings: Settings, per_gpu: dict, cpu_used: int):
    """A Placement, None (no room yet) or a string (can never run here: the reason)."""
    from hpc_sweep.sweep.device import DeviceError, parse_device

    need = int(task.get("gpus") or 0)
    if need == 0 or not gpus:
        # CPU configs, and every config on a machine without GPUs, take CPU slots.
        return Placement("cpu", []) if cpu_used < settings.cpu_slots else None
    try:
        ids = parse_device(task.get("device") or "gpu").ids
    except DeviceError as exc:
        return str(exc)
    present = sorted(g.index for g in gpus)
    if ids is not None:
        missing = [i for i in ids if i not in present]
        if missing:
            return f"GPU id(s) {','.join(map(str, missing))} of device {task['device']} are not on this machine " \
                   f"(nvidia-smi lists {','.join(map(str, present))})"
        free = free_slots(gpus, settings.gpu_min_free_mb, settings.runs_per_gpu, per_gpu, only=ids)
        # Explicit ids are real indices the trainer selects itself: CUDA_VISIBLE_DEVICES must not renumber them.
        return Placement("gpu", list(ids)) if set(ids) <= set(free) else None
    if need > len(present):
        return f"needs {need} GPUs; this machine has {len(present)}"
    free = free_slots(gpus, settings.gpu_min_free_mb, settings.runs_per_gpu, per_gpu)
    if len(free) < need:
        return None
    chosen = sorted(free[:need])
    return Placement("gpu", chosen, ",".join(map(str, chosen)))


def _wait_reason(task: dict, gpus: Optional[list], settings: Settings) -> str:
    need = int(task.get("gpus") or 0)
    if need == 0 or not gpus:
        return f"waiting for a CPU slot ({settings.cpu_slots} in use)"
    which = f"GPU(s) of {task.get('device')}" if ":" in str(task.get("device")) else f"{need} free GPU(s)"
    return f"waiting for {which}: at most {settings.runs_per_gpu} run(s) per GPU, " \
           f">= {settings.gpu_min_free_mb} MiB free"
