"""What PBS Pro / OpenPBS and Torque share, for :mod:`hpc_sweep.schedulers.pbspro` and
:mod:`hpc_sweep.schedulers.torque`: the job id spelling (``123[].server``, ``123[4].server``), index range lists,
``qstat -f`` text blocks, the values in them (walltimes, times, hosts), what ``qsub``, ``qdel`` and ``qselect``
answer, and how their client messages are classified (transient, limit, rejected). Pure: no processes, no files.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hpc_sweep.schedulers.base import CommandResult, SchedulerError


# ---------------------------------------------------------------------------------------------------------
# Job ids
# ---------------------------------------------------------------------------------------------------------

Attrs = Dict[str, Any]  # one job's attributes, nested dicts flattened to "resources_used.walltime"


# "123", "123.server", "123[]", "123[].server", "123[4].server" (server names may contain dots and dashes).
JOB_ID_RE = re.compile(r"^(?P<seq>\d+)(?:\[(?P<index>\d*)\])?(?:\.(?P<server>[A-Za-z0-9][\w.\-]*))?$")


def split_job_id(job_id: str) -> Tuple[str, Optional[str], Optional[str]]:
    """``"123[4].vm"`` -> ``("123", "4", "vm")``; ``"123[].vm"`` -> ``("123", "", "vm")``; plain -> index None."""
    m = JOB_ID_RE.match(job_id.strip())
    if not m:
        raise ValueError(f"not a PBS job id: {job_id!r}")
    return m.group("seq"), m.group("index"), m.group("server")


def is_array_parent(job_id: str) -> bool:
    return "[]" in job_id


def submission_id_of(task_id: str) -> str:
    """The id qsub printed for the submission this task belongs to: ``123[4].vm`` -> ``123[].vm``."""
    return re.sub(r"\[\d+\]", "[]", task_id, count=1)


def submission_key(job_id: str) -> str:
    """A server-independent key (``"123[]"`` or ``"124"``) for matching ids.

    Sites print the server part differently (short vs full host name, and anonymised captures even differ
    between parent and subjob), so callers should compare submissions by this key, not by the full string.
    """
    seq, index, _server = split_job_id(job_id)
    return f"{seq}[]" if index is not None else seq


def task_id_for(submission_id: str, index: int) -> str:
    """``123[].vm`` + 4 -> ``123[4].vm``."""
    return submission_id.replace("[]", f"[{index}]", 1)


# ---------------------------------------------------------------------------------------------------------
# Index ranges ("0-5", "1,3,5-7", "0-10:2", "-", or a bare int as the JSON sometimes gives)
# ---------------------------------------------------------------------------------------------------------


def expand_indices(spec: Any) -> List[int]:
    """Expand a PBS/Torque index range list. ``"-"`` and empty mean none."""
    if spec is None:
        return []
    if isinstance(spec, int):
        return [spec]
    out: List[int] = []
    for part in str(spec).replace(" ", "").split(","):
        if part in ("", "-"):
            continue
        m = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?(?:%\d+)?$", part)
        if not m:
            raise ValueError(f"bad index range {spec!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        step = int(m.group(3)) if m.group(3) else 1
        out.extend(range(lo, hi + 1, step))
    return out


# ---------------------------------------------------------------------------------------------------------
# Small value helpers
# ---------------------------------------------------------------------------------------------------------


def as_int(value: Any) -> Optional[int]:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    m = re.match(r"^\s*(-?\d+)\s*$", str(value))
    return int(m.group(1)) if m else None


def hms_to_seconds(value: Any) -> Optional[float]:
    """``"64:26:16"`` -> 231976.0 (PBS walltimes count hours past 24); also ``"MM:SS"`` and ``"SS"``."""
    if value is None:
        return None
    total = 0.0
    for part in str(value).strip().split(":"):
        try:
            total = total * 60 + float(part)
        except ValueError:
            return None
    return total


def pbs_time_to_iso(value: Any) -> Optional[str]:
    """``"Mon Nov 23 12:43:15 2026"`` (server local time, no zone) -> ``"2026-11-23T12:43:15"``;
    an epoch (Torque XML) -> an aware UTC ISO string."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    if re.match(r"^\d{9,}$", text):
        return datetime.fromtimestamp(int(text), tz=timezone.utc).isoformat()
    try:
        return datetime.strptime(text, "%a %b %d %H:%M:%S %Y").isoformat()
    except ValueError:
        return None


def first_host(exec_host: Any) -> Optional[str]:
    """``"b141/0*16+b142/0*16"`` -> ``"b141"``."""
    if not exec_host:
        return None
    return str(exec_host).split("+")[0].split("/")[0] or None


# ---------------------------------------------------------------------------------------------------------
# Error classification (messages are shared between PBS Pro and Torque clients)
# ---------------------------------------------------------------------------------------------------------

_TRANSIENT_RE = re.compile(
    r"Communication failure|Connection refused|No route to host|cannot connect to server|"
    r"Cannot connect to default server|Unable to communicate with|could not connect to trqauthd|"
    r"socket_connect_unix failed|Connection timed out|timed out|Network is unreachable|"
    r"End of File|pbs_iff|Server could not connect to MOM|Premature end of message|errno=15010|errno=15031",
    re.IGNORECASE,
)


# Refusals that say a request can never fit (walltime/mem above the queue maximum, array too big): not "limit",
# because retrying later cannot help; checked before _LIMIT_RE since both mention "limit".
_REJECT_FIRST_RE = re.compile(
    r"exceeds queue resource limits|violates queue and/or server resource limits|cannot satisfy queue max|"
    r"Array job exceeds server or queue size limit|exceeds .*max_job_array_size|illegal -J value",
    re.IGNORECASE,
)


_LIMIT_RE = re.compile(
    r"would exceed|Maximum number of jobs|per-user limit|"
    r"exceeds queue limit|exceeds the queue limit|exceeds server limit|too many jobs|job limit",
    re.IGNORECASE,
)


# A message naming a job-count limit attribute is about counts whatever its headline says.
_COUNT_LIMIT_NAME_RE = re.compile(r"\bmax_(?:user_)?queu(?:ed|able)\b", re.IGNORECASE)


def is_transient_message(text: str) -> bool:
    return bool(_TRANSIENT_RE.search(text or ""))


def classify_failure(text: str) -> str:
    """``"transient"``, ``"limit"`` or ``"rejected"`` for a failed command's message."""
    if is_transient_message(text):
        return "transient"
    if _COUNT_LIMIT_NAME_RE.search(text or ""):
        return "limit"
    if _REJECT_FIRST_RE.search(text or ""):
        return "rejected"
    if _LIMIT_RE.search(text or ""):
        return "limit"
    return "rejected"


def message_of(result: CommandResult) -> str:
    text = (result.stderr or "").strip() or (result.stdout or "").strip()
    return text or f"{' '.join(result.argv)} exited with status {result.returncode} and printed nothing"


def parse_submitted_id(result: CommandResult) -> str:
    """The id line of a successful qsub, or SchedulerError. Shared by PBS Pro and Torque (same id shape)."""
    ids = [ln.strip() for ln in (result.stdout or "").splitlines() if JOB_ID_RE.match(ln.strip())]
    if result.returncode == 0 and ids:
        return ids[-1]  # the id is the last line; site wrappers may print notices before it
    if result.returncode == 0:
        # qsub said OK but printed no id: the job may exist, so the caller must reconcile by name.
        raise SchedulerError("transient", f"qsub succeeded but printed no job id: {message_of(result)!r}")
    msg = message_of(result)
    raise SchedulerError(classify_failure(msg), msg)


def qdel_argv(ids: Sequence[str]) -> List[str]:
    """``qdel`` with exact job ids only: no options, no ``all`` (Torque's ``qdel all`` deletes every job)."""
    ids = list(ids)
    if not ids:
        raise ValueError("nothing to cancel")
    bad = [i for i in ids if not JOB_ID_RE.match(i)]
    if bad:
        raise ValueError(f"refusing to qdel things that are not job ids: {bad!r}")
    return ["qdel", *ids]


def pending_reason(attrs: Mapping[str, Any]) -> Optional[str]:
    """Why a queued job waits: its comment (``Not Running: ...``), or its hold types when held."""
    comment = str(attrs.get("comment") or "").strip()
    if comment and not comment.startswith("Job Array Began"):  # template copies repeat the parent's
        return comment
    if str(attrs.get("job_state", "")).strip() == "H":
        return f"held (Hold_Types={attrs.get('Hold_Types', '?')})"
    return None


def parse_cancel_result(result: CommandResult) -> None:
    """Raise SchedulerError unless qdel did its job. Jobs already gone (finished/unknown) are not an error."""
    if result.returncode == 0:
        return
    lines = [ln for ln in (result.stderr or "").splitlines() if ln.strip()]
    gone = re.compile(r"Unknown Job Id|Job has finished|Request invalid for state of job", re.IGNORECASE)
    if lines and all(gone.search(ln) for ln in lines):
        return
    msg = message_of(result)
    raise SchedulerError("transient" if is_transient_message(msg) else "rejected", msg)


# ---------------------------------------------------------------------------------------------------------
# qstat -f TEXT (also qstat -Bf / -Qf), and qselect's id list
# ---------------------------------------------------------------------------------------------------------

_BLOCK_HEADER_RE = re.compile(r"^(?:Job Id|Server|Queue):\s*(\S.*?)\s*$")


_ATTR_RE = re.compile(r"^ {4}(?=\S)([^\s=]+) =(?: (.*))?$")


_CONT_RE = re.compile(r"^(?:\t| {8})(.*)$")  # TAB (real PBS) or 8 spaces (editor-converted captures)


def parse_qstat_f_text(text: str) -> Dict[str, Dict[str, str]]:
    """Blocks of ``qstat -f`` / ``-Bf`` / ``-Qf`` text: ``{id: {"attr.name": "value"}}``.

    Wrapped values are re-joined (the wrap can fall mid-word, so continuation text is appended without a
    separator). Lines that are neither attributes nor continuations (unindented lines of a multi-line
    ``sched_hint``) are kept with a newline. Blank lines are skipped: they separate jobs, but also appear
    inside values and after a value that fills the 79-column line exactly.
    """
    blocks: Dict[str, Dict[str, str]] = {}
    current: Optional[Dict[str, str]] = None
    key: Optional[str] = None
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        header = _BLOCK_HEADER_RE.match(line)
        if header:
            current, key = blocks.setdefault(header.group(1), {}), None
            continue
        if current is None or not line.strip():
            continue
        attr = _ATTR_RE.match(line)
        if attr:
            key = attr.group(1)
            current[key] = attr.group(2) or ""
            continue
        if key is None:
            continue
        cont = _CONT_RE.match(line)
        current[key] += cont.group(1) if cont else "\n" + line
    return blocks


def listed_ids(stdout: str) -> Optional[List[str]]:
    """The ids of ``qselect`` output (one full id a line), or None when stdout is something else."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if lines and all(JOB_ID_RE.match(ln) for ln in lines):
        return lines
    return None if lines else []
