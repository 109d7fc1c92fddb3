"""Why a task died, read from the tail of its stdout/stderr.

Scheduler kill messages come first (a job killed at its time limit often prints a traceback too, but the limit is
the cause), then out-of-memory messages (CUDA's appears inside a traceback), then the trainer's own exception.
Messages matched (as printed by the tools):

- Slurm: ``slurmstepd: error: *** JOB 46 ON vm CANCELLED AT 2026-11-23T12:50:53 DUE TO TIME LIMIT ***``
  (also ``DUE TO PREEMPTION``, ``DUE TO NODE FAILURE``; no reason = cancelled), ``Detected 1 oom-kill event(s)``
  / ``oom_kill event``, ``srun: error: node: task 0: Out Of Memory``.
- PBS Pro / Torque: ``=>> PBS: job killed: walltime 3620 exceeded limit 3600``,
  ``=>> PBS: job killed: mem 38427376kb exceeded limit 33554432kb`` (also vmem/pmem), ``Job exceeded a memory
  resource limit``.
- PyTorch: ``torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB ...``; JAX/XLA:
  ``XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 7406166528 bytes.``
- PyTorch >= 2.6: ``_pickle.UnpicklingError: Weights only load failed ... Unsupported global: GLOBAL
  omegaconf.dictconfig.DictConfig`` (``torch.load`` of a checkpoint that pickles more than tensors).
- The trainer's own exception: under torchrun the rank's ``[rank0]: <Exception>: message`` line, otherwise the
  last Python exception line. The output is read from its tail, which may have cut off the ``Traceback`` header:
  a line shaped like ``[module.]NameError: message`` counts too.
- torchrun: ``torch.distributed.elastic.multiprocessing.errors.ChildFailedError`` with its "Root Cause" block,
  only when nothing names the trainer's own exception (its summary says no more than "rank 0 failed").
- A shell's ``... Killed   python train.py`` line (SIGKILL, usually the kernel's OOM killer).
"""

from __future__ import annotations

import re
from typing import Optional

MAX_REASON = 300

_SLURM_KILL = re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))? \*\*\*")
_SLURM_CAUSES = {"TIME LIMIT": ("timeout", "time limit"), "PREEMPTION": ("preempted", "preempted"),
                 "NODE FAILURE": ("node_fail", "node failure")}
_PBS_WALLTIME = re.compile(r"PBS: job killed: walltime \d+ exceeded limit \d+")
_PBS_MEMORY = re.compile(r"PBS: job killed: ((?:p?v?mem|mem)\b.*?exceeded limit \S+)")
_CUDA_OOM = re.compile(r"(?:CUDA|HIP) out of memory\.?\s*(Tried to allocate [\d.]+ ?[KMGT]?i?B)?")
_XLA_OOM = re.compile(r"RESOURCE_EXHAUSTED: Out of memory(?: while trying to allocate| allocating)? ?(\d+ bytes)?")
_HOST_OOM = re.compile(r"oom[-_]kill|task \d+: Out Of Memory|Job exceeded a memory resource limit")
_KILLED = re.compile(r"^(?:.*line \d+: +\d+ )?Killed\b", re.MULTILINE)
_RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d*\]:\s?")
_CHILD_FAILED = "ChildFailedError"
# An exception line: a dotted name ending like Python's exception classes, alone or followed by ": message".
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)(?::|$)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_WEIGHTS_ONLY = re.compile(r"Weights only load failed")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
WEIGHTS_ONLY_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def failure_reason(text: str) -> Optional[str]:
    """A short reason such as "time limit", "out of memory (CUDA: Tried to allocate 2.00 GiB)" or the last line
    of a Python traceback; None when the text shows nothing recognisable."""
    found = diagnose(text)
    return found[1] if found else None


def diagnose(text: str) -> Optional[tuple[str, str]]:
    """(kind, reason). kind is a state name: timeout, preempted, node_fail, cancelled, oom, or failed."""
    if not text:
        return None
    for check in (_scheduler_kill, _out_of_memory, _weights_only, _python_error, _torchrun_root_cause, _sigkill):
        found = check(text)
        if found:
            return found[0], found[1][:MAX_REASON]
    return None


def _scheduler_kill(text: str) -> Optional[tuple[str, str]]:
    kills = _SLURM_KILL.findall(text)
    if kills:
        cause = kills[-1].strip()
        if not cause:
            return "cancelled", "cancelled"
        return _SLURM_CAUSES.get(cause, ("failed", cause.lower()))
    if _PBS_WALLTIME.search(text):
        return "timeout", "walltime exceeded"
    return None


def _out_of_memory(text: str) -> Optional[tuple[str, str]]:
    match = _PBS_MEMORY.search(text)
    if match:
        return "oom", f"out of memory (PBS: {match.group(1)})"
    match = _CUDA_OOM.search(text)
    if match:
        detail = f": {match.group(1)}" if match.group(1) else ""
        return "oom", f"out of memory (GPU{detail})"
    match = _XLA_OOM.search(text)
    if match:
        detail = f": allocating {match.group(1)}" if match.group(1) else ""
        return "oom", f"out of memory (GPU, XLA{detail})"
    if _HOST_OOM.search(text):
        return "oom", "out of memory (host memory: killed by the OOM killer)"
    return None


def _weights_only(text: str) -> Optional[tuple[str, str]]:
    if not _WEIGHTS_ONLY.search(text):
        return None
    found = _UNSUPPORTED_GLOBAL.search(text)
    what = f"; it holds {found.group(1)}" if found else ""
    return "failed", (f"torch.load refused the checkpoint (PyTorch >= 2.6 weights_only{what}): resubmit (resumes "
                      f"from this sweep's checkpoints get {WEIGHTS_ONLY_ENV}=1); for another checkpoint you trust, "
                      f"export {WEIGHTS_ONLY_ENV}=1 in the site's setup")


def _python_error(text: str) -> Optional[tuple[str, str]]:
    """The trainer's exception: a rank's own (torchrun prefixes its workers' lines with ``[rankN]:``) before any
    other; otherwise the last exception line of the output. torchrun's ChildFailedError names no cause."""
    ranked, plain = [], []
    for line in _ANSI.sub("", text).splitlines():
        prefix = _RANK_PREFIX.match(line)
        (ranked if prefix else plain).append(line[prefix.end():] if prefix else line)
    last = _last_exception(ranked) or _last_exception(ranked + plain)
    return ("failed", last) if last else None


def _last_exception(lines: list) -> Optional[str]:
    """The last exception line: the first unindented line after a ``Traceback`` header, or (the header may be
    cut off) a line shaped like an exception."""
    last = None
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if not line.strip() or line[0].isspace():
            continue
        if (in_traceback or _EXCEPTION_LINE.match(line)) and _CHILD_FAILED not in line:
            last = line.strip()
        in_traceback = False
    return last


def _torchrun_root_cause(text: str) -> Optional[tuple[str, str]]:
    if _CHILD_FAILED not in text:
        return None
    block = text[text.rfind("Root Cause"):] if "Root Cause" in text else ""
    fields = dict(re.findall(r"^\s*(rank|exitcode|traceback)\s*:\s*(.*?)\s*$", block, re.MULTILINE))
    if not fields:
        return "failed", "torchrun: a worker failed (ChildFailedError)"
    exitcode = re.sub(r"\s*\(pid:.*", "", fields.get("exitcode", "?"))
    reason = f"torchrun: rank {fields.get('rank', '?')} failed, exitcode {exitcode}"
    traceback = fields.get("traceback", "")
    if traceback and not traceback.startswith("To enable traceback"):
        reason += f" ({traceback})"
    return "failed", reason


def _sigkill(text: str) -> Optional[tuple[str, str]]:
    if _KILLED.search(text):
        return "failed", "killed by SIGKILL (often the kernel's OOM killer)"
    return None
