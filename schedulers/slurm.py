"""Slurm adapter: argv builders and pure parsers for sbatch, squeue, sacct, scancel, scontrol and sacctmgr.

Nothing here runs a process (:mod:`hpc_sweep.common.shell` does) or touches a file. Each parser reads the column
list back from the argv it is handed (``-o``/``--format=``/``format=``), so output captured with another column set,
such as the fixtures, parses the same way as output of the argv built here.

Facts the parsers rely on (Slurm 22.05 captures and Slurm's own source):

- ``squeue -o %i`` prints ``42_3`` for a task, ``747`` for a plain job and ``43_[0-3]`` (or ``1234_[5-9%2]``) for
  pending tasks folded into one line when ``-r`` is missing; ``%A`` of a started task is its own job id (46), so
  the array id comes from ``%F``.
- A folded list can be cut short by Slurm: squeue's ``%i`` stops at 31 characters (closing bracket lost), and
  squeue's ``%K`` and sacct's ``JobID`` end a list longer than ``SLURM_BITSTR_LEN`` (64 by default) with ``...``.
  Such a list is expanded only as far as it can be read; the tasks it hides get no record.
- ``squeue -r`` (22.05) leaves out the last task of a pending range it would show as ``0-60:2``: a task missing
  from squeue is not proof that it left the queue.
- sacct keeps no start-time window when ``-j`` is given (``options.c``: the midnight default applies only without a
  job list), so ``accounting_argv`` needs no ``-S``.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Dict, List, Optional, Sequence, Tuple

from hpc_sweep.schedulers.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINAL_STATES,
    NODE_FAIL,
    OOM,
    PENDING,
    PREEMPTED,
    RUNNING,
    TIMEOUT,
    UNKNOWN,
    CommandResult,
    QueueLimits,
    Scheduler,
    SchedulerError,
    SubmitSpec,
    TaskRecord,
)
from hpc_sweep.schedulers.arrays import compress_indices, expand_array_spec

# squeue columns: task id, own job id, array job id, array index, name, state, reason, elapsed, time limit, nodes.
LIVE_FORMAT = "%i|%A|%F|%K|%j|%T|%r|%M|%l|%N"
ACCOUNTING_FIELDS = ("JobID", "JobIDRaw", "JobName", "State", "ExitCode", "Elapsed", "Start", "End", "AllocTRES",
                     "NodeList")
ASSOC_FIELDS = ("Cluster", "Account", "User", "Partition", "MaxSubmit", "MaxJobs", "GrpSubmit", "QOS", "DefaultQOS")
QOS_FIELDS = ("Name", "MaxSubmitPU")
ME_SINCE = (20, 11)  # squeue --me first appeared in Slurm 20.11

_STATES = {
    "PENDING": PENDING, "CONFIGURING": PENDING, "REQUEUED": PENDING, "REQUEUE_HOLD": PENDING,
    "REQUEUE_FED": PENDING, "RESV_DEL_HOLD": PENDING, "SUSPENDED": PENDING, "STOPPED": PENDING,
    "POWER_UP_NODE": PENDING,
    "RUNNING": RUNNING, "COMPLETING": RUNNING, "RESIZING": RUNNING, "SIGNALING": RUNNING, "STAGE_OUT": RUNNING,
    "COMPLETED": COMPLETED, "FAILED": FAILED, "TIMEOUT": TIMEOUT, "DEADLINE": TIMEOUT, "CANCELLED": CANCELLED,
    "OUT_OF_MEMORY": OOM, "NODE_FAIL": NODE_FAIL, "BOOT_FAIL": NODE_FAIL, "PREEMPTED": PREEMPTED,
}
_NO_VALUE = {"", "none", "unknown", "n/a", "(null)", "none assigned", "invalid", "unlimited", "not_set"}

# Classifying sbatch failures. Order matters: a named submit-count limit wins over the generic policy line, which
# sbatch also prints for per-job limits (wall time, TRES) that no retry will fix.
_TRANSIENT = re.compile(
    r"socket timed out|unable to contact slurm controller|connection refused|connection timed out|"
    r"zero bytes were transmitted|communication connection failure|transport endpoint|in standby mode|"
    r"timed out after", re.I)
_LIMIT = re.compile(
    r"MaxSubmitJob|GrpSubmitJob|MaxJobCount|temporarily unable to accept job|job queue full|"
    r"resource temporarily unavailable", re.I)
_PER_JOB_POLICY = re.compile(r"MaxWall|MaxTRES|MinTRES|MaxCpu|MaxNode|MaxGRES|MinGRES|PerJob", re.I)
_POLICY = re.compile(r"violates accounting/QOS policy", re.I)
_NO_ME = re.compile(r"unrecognized option '--me'|unrecognized option.*\bme\b|invalid option.*--me", re.I)
_KILLED_RCS = {124, 137, 143}  # timeout(1) and shell.run's time-out, SIGKILL, SIGTERM

_ID = re.compile(r"\d+(?:_(?:\d+|\[\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*\]))?")
_USER = re.compile(r"[\w.@-]+")
_FOLDED = re.compile(r"(\d+)_\[([^\]]*)(\]?)")
_TASK = re.compile(r"(\d+)_(\d+)")
_DURATION = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.\d+)?")
_EXIT = re.compile(r"(-?\d+):(\d+)")
_STEP = re.compile(r"\.(?:batch|extern|interactive|\d+)$")  # not the "..." of a cut list


class SlurmScheduler(Scheduler):
    """Slurm through sbatch/squeue/sacct/scancel; ``version`` (major, minor) only matters below 20.11."""

    name = "slurm"
    index_env = "SLURM_ARRAY_TASK_ID"
    # The task's OWN job id (46 for task 42_2): markers should also record SLURM_ARRAY_JOB_ID and the index.
    task_id_env = "SLURM_JOB_ID"
    submission_env = "SLURM_ARRAY_JOB_ID"

    def __init__(self, version: Optional[Tuple[int, ...]] = None, me_refused: bool = False):
        self.version = tuple(version) if version else None
        self.me_refused = me_refused  # squeue refused --me although the version was not known to be older

    # -- submit ---------------------------------------------------------------------------------------------------
    def submit_argv(self, spec: SubmitSpec) -> List[str]:
        # Options must come before the script: sbatch hands everything after it to the script as arguments.
        return ["sbatch", "--parsable", f"--chdir={spec.workdir}", spec.script]

    def parse_submit(self, result: CommandResult) -> str:
        if result.returncode == 0:
            job_id = _submitted_id(result.stdout)
            if job_id is not None:
                return job_id
            raise SchedulerError("transient", f"sbatch printed no job id (stdout {result.stdout.strip()!r}); "
                                              "the job may exist: look it up by name")
        raise SchedulerError(_classify_submit_failure(result), _error_summary(result, "sbatch"))

    # -- live queue -----------------------------------------------------------------------------------------------
    def live_argv(self, user: str, submission_ids: Sequence[str] = ()) -> List[str]:
        # Every job of the user, never by id: squeue errors on ids that already left the queue, and the room under
        # the per-user cap counts jobs submitted by hand too.
        who = ["--me"] if self.supports_me else ["-u", _checked_user(user)]
        return ["squeue", *who, "-r", "-h", "-o", LIVE_FORMAT]

    @property
    def supports_me(self) -> bool:
        return not self.me_refused and (self.version is None or self.version[:2] >= ME_SINCE)

    def parse_live(self, result: CommandResult) -> List[TaskRecord]:
        if result.returncode != 0 and "--me" in result.argv and _NO_ME.search(result.stderr + result.stdout):
            # Slurm before 20.11: a refusal, not an unreachable controller (asking again would fail the same way).
            raise SchedulerError("rejected", "squeue does not know --me (Slurm before 20.11): "
                                             + _error_summary(result, "squeue"))
        if result.returncode != 0 or _TRANSIENT.search(result.stderr):
            raise SchedulerError("transient", _error_summary(result, "squeue"))
        codes = _squeue_codes(_option_value(result.argv, "-o", "--format=") or LIVE_FORMAT)
        records: List[TaskRecord] = []
        for line in result.stdout.splitlines():
            if not line.strip() or line.split("|", 1)[0].split()[0].upper() == "JOBID":
                continue  # blank, or a header (plain squeue prints one even for an empty queue)
            fields = _split_row(line, len(codes), codes.index("j") if "j" in codes else None)
            if fields is None:
                raise SchedulerError("transient", f"squeue line does not match its format {codes}: {line!r}")
            records.extend(_live_records(dict(zip(codes, fields))))
        return records

    # -- lookup by name: squeue --me lists every job with its name; accounting knows the ones that left ----------
    live_lists_names = True

    def lookup_argv(self, user: str, job_name: str, since: Optional[float] = None) -> Optional[List[str]]:
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 3600)) if since else "now-7days"
        return ["sacct", "-X", "-n", "-P", "-u", _checked_user(user), "-S", start, f"--name={_checked_name(job_name)}",
                "--format=JobID,JobName,State"]

    def parse_lookup(self, result: CommandResult) -> List[str]:
        if "accounting storage is disabled" in (result.stderr + result.stdout).lower():
            return []  # no history kept: the live queue and the job-written markers are the whole truth
        if result.returncode != 0:
            raise SchedulerError("transient", _error_summary(result, "sacct"))
        ids = []
        for line in result.stdout.splitlines():
            job_id = line.split("|", 1)[0].strip()
            if job_id:
                ids.append(re.split(r"[_.+]", job_id, maxsplit=1)[0])
        return list(dict.fromkeys(ids))

    def cancel_by_name_argv(self, user: str, job_name: str) -> Optional[List[str]]:
        return ["scancel", "-u", _checked_user(user), f"--name={_checked_name(job_name)}"]

    # -- accounting -----------------------------------------------------------------------------------------------
    def accounting_argv(self, submission_ids: Sequence[str]) -> Optional[List[str]]:
        # With a header (no -n): the parser then reads the columns from the output itself.
        ids = _checked_ids(submission_ids, "sacct")
        return ["sacct", "-X", "-P", "-j", ",".join(ids), "--format=" + ",".join(ACCOUNTING_FIELDS)]

    def parse_accounting(self, result: CommandResult) -> List[TaskRecord]:
        if "accounting storage is disabled" in (result.stderr + result.stdout).lower():
            return []  # no sacct on this cluster: the job-written markers decide
        if result.returncode != 0:
            raise SchedulerError("transient", _error_summary(result, "sacct"))
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        fields = _field_list(result.argv, ACCOUNTING_FIELDS)
        if lines and lines[0].split("|", 1)[0].strip().lower() == "jobid":
            fields, lines = [f.strip().lower() for f in lines[0].split("|")], lines[1:]
        free = fields.index("jobname") if "jobname" in fields else None
        explicit: List[TaskRecord] = []
        folded: List[TaskRecord] = []
        for line in lines:
            values = _split_row(line, len(fields), free)
            if values is None:
                raise SchedulerError("transient", f"sacct line does not match its format {fields}: {line!r}")
            row = dict(zip(fields, values))
            (folded if "[" in row.get("jobid", "") else explicit).extend(_accounting_records(row))
        # The folded row of an array's never-started tasks can still list a task that has its own row (seen on
        # Slurm 22.05 after cancelling an array with one task running): the task's own row wins.
        own = {record.task_id for record in explicit}
        return explicit + [record for record in folded if record.task_id not in own]

    # -- cancel ---------------------------------------------------------------------------------------------------
    def cancel_argv(self, task_or_submission_ids: Sequence[str]) -> List[str]:
        return ["scancel", *_checked_ids(task_or_submission_ids, "scancel")]

    # -- limits ---------------------------------------------------------------------------------------------------
    def limits_argvs(self, user: str, queue: Optional[str] = None) -> List[List[str]]:
        # queue is not used: every association of the user counts, per-partition ones included (conservative).
        user = _checked_user(user)
        # The user's associations from slurmctld's cache (scontrol, ~5 ms) rather than slurmdbd (sacctmgr, ~300 ms
        # through MariaDB); QOS limits only sacctmgr shows.
        return [
            ["scontrol", "show", "config"],
            ["scontrol", "show", "assoc_mgr", f"users={user}", "flags=assoc"],
            ["sacctmgr", "-n", "-P", "show", "qos", "format=" + ",".join(QOS_FIELDS)],
        ]

    def parse_limits(self, results: Sequence[CommandResult]) -> QueueLimits:
        """MaxArraySize/MaxJobCount from ``scontrol show config``; the per-user cap is the smallest MaxSubmit or
        GrpSubmit of the user's associations and MaxSubmitPU of the QOS those use (``scontrol show assoc_mgr``
        output is read too). Any command that failed leaves its limits None."""
        config: Dict[str, str] = {}
        assoc_rows: Optional[List[Dict[str, str]]] = None
        qos_rows: List[Dict[str, str]] = []
        caps: List[int] = []
        for result in results:
            kind = query_kind(result.argv)
            if result.returncode != 0 or kind not in ("config", "assoc", "qos", "assoc_mgr"):
                continue
            if kind == "config":
                config = _key_values(result.stdout)
            elif kind == "assoc":
                assoc_rows = _pipe_rows(result.stdout, _field_list(result.argv, ASSOC_FIELDS))
            elif kind == "qos":
                qos_rows = _pipe_rows(result.stdout, _field_list(result.argv, QOS_FIELDS))
            else:
                caps.extend(_assoc_mgr_caps(result.stdout, _option_value(result.argv, None, "users=")))
        caps.extend(_assoc_caps(assoc_rows or []))
        caps.extend(_qos_caps(assoc_rows, qos_rows))
        return QueueLimits(max_queued=min(caps) if caps else None,
                           max_array_size=_leading_int(config.get("maxarraysize")),
                           max_job_count=_leading_int(config.get("maxjobcount")))

    # -- helpers --------------------------------------------------------------------------------------------------
    def array_spec(self, indices: Sequence[int], throttle: Optional[int]) -> str:
        spec = compress_indices(indices)
        if throttle is not None:
            if throttle < 1:
                raise ValueError(f"array throttle must be at least 1, got {throttle}")
            spec += f"%{throttle}"
        return spec


# ----------------------------------------------------------------------------------------------------------------
# array syntax (compress_indices, expand_array_spec: hpc_sweep.schedulers.arrays)


def _folded_indices(body: str, closed: bool = True) -> List[int]:
    """Indices of a folded list as Slurm printed it, possibly cut short ('...' or no closing bracket): the element
    at a cut may be partial, so it is dropped; what came before is certain."""
    body = body.split("%", 1)[0]
    if closed and "..." not in body:
        return expand_array_spec(body)
    parts = body.split("...", 1)[0].split(",")[:-1]
    readable = [p for p in parts if p.strip()]
    return expand_array_spec(",".join(readable)) if readable else []


def split_task_id(task_id: str, folded_indices: Optional[str] = None) -> Tuple[str, List[Optional[int]]]:
    """``"42_3"`` -> ``("42", [3])``; ``"43_[0-3]"`` -> ``("43", [0, 1, 2, 3])``; ``"747"`` -> ``("747", [None])``.

    ``folded_indices`` (squeue ``%K``) is preferred for a folded id: ``%i`` is cut at 32 characters."""
    task_id = task_id.strip()
    if not folded_indices or folded_indices.strip() in ("", "N/A"):
        read = _read_with_submitit(task_id)
        if read is not None:
            return read
    match = _TASK.fullmatch(task_id)
    if match:
        return match.group(1), [int(match.group(2))]
    match = _FOLDED.match(task_id)
    if match:
        if folded_indices and folded_indices.strip() not in ("", "N/A"):
            return match.group(1), list(_folded_indices(folded_indices.strip()))
        return match.group(1), list(_folded_indices(match.group(2), closed=bool(match.group(3))))
    return task_id, [None]


# ----------------------------------------------------------------------------------------------------------------
# value parsers


def _read_with_submitit(task_id: str) -> Optional[Tuple[str, List[Optional[int]]]]:
    """submitit's Slurm job-id reader for the spellings it knows (``42_3``, ``43_[0-3,7%2]``, ``747``); None where
    it cannot read one (stepped ranges ``0-60:2``, lists Slurm cut short with ``...``), which we read ourselves."""
    import warnings

    from submitit.slurm.slurm import read_job_id

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts = read_job_id(task_id)
    except (ValueError, IndexError):
        return None
    main = parts[0][0]
    if not main.isdigit() or any(p[0] != main for p in parts):
        return None
    if len(parts) == 1 and len(parts[0]) == 1:
        return (main, [None]) if task_id == main else None
    indices: List[Optional[int]] = []
    for part in parts:
        first = int(part[1])
        last = int(part[2]) if len(part) > 2 else first
        indices.extend(range(first, last + 1))
    return main, indices


@functools.lru_cache(maxsize=1024)  # squeue of 10,000 tasks repeats a handful of state words
def normalise_state(raw: str) -> str:
    """Slurm's state word -> one of base.STATES. Takes the first word (``CANCELLED by 1000``) and resolves names
    sacct's fixed-width output cut with ``+`` (``CANCELLED+``, ``OUT_OF_ME+``) when the prefix is unambiguous."""
    words = raw.split()
    if not words:
        return UNKNOWN
    word = words[0].upper()
    if word.endswith("+"):
        states = {state for name, state in _STATES.items() if name.startswith(word[:-1])}
        return states.pop() if len(states) == 1 else UNKNOWN
    return _STATES.get(word, UNKNOWN)


@functools.lru_cache(maxsize=4096)  # and many equal times
def parse_duration(text: Optional[str]) -> Optional[float]:
    """Seconds of ``0:03``, ``1:02:03``, ``2-01:02:03``, ``00:01:23``; None for INVALID, UNLIMITED, empty."""
    match = _DURATION.fullmatch((text or "").strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def parse_exit_code(text: Optional[str]) -> Optional[int]:
    """``code:signal`` -> code, or 128+signal when the code is 0 and a signal ended the job (``0:15`` -> 143)."""
    match = _EXIT.fullmatch((text or "").strip())
    if not match:
        return None
    code, signal = int(match.group(1)), int(match.group(2))
    return 128 + signal if code == 0 and signal else code


def _value(text: Optional[str]) -> Optional[str]:
    text = (text or "").strip()
    return None if text.lower() in _NO_VALUE else text


def _name(text: Optional[str]) -> Optional[str]:
    return (text or "").strip() or None  # a job may well be called "none"


# ----------------------------------------------------------------------------------------------------------------
# squeue / sacct rows


def _live_records(row: Dict[str, str]) -> List[TaskRecord]:
    submission, indices = split_task_id(row.get("i", ""), row.get("K"))
    raw = row.get("T", "").strip()
    common = dict(submission_id=submission, name=_name(row.get("j")), state=normalise_state(raw), raw_state=raw,
                  reason=_value(row.get("r")), elapsed_s=parse_duration(row.get("M")), host=_value(row.get("N")))
    return [TaskRecord(task_id=_task_id(submission, index), index=index, **common) for index in indices]


def _accounting_records(row: Dict[str, str]) -> List[TaskRecord]:
    job_id = row.get("jobid", "").strip()
    if not job_id or _STEP.search(job_id):
        return []  # a step (42_2.batch): -X leaves none, a capture without -X has them
    submission, indices = split_task_id(job_id)
    raw = row.get("state", "").strip()
    state = normalise_state(raw)
    start = _value(row.get("start"))
    common = dict(submission_id=submission, name=_name(row.get("jobname")), state=state, raw_state=raw,
                  exit_code=_final_exit_code(state, start, row.get("exitcode")),
                  elapsed_s=parse_duration(row.get("elapsed")), start=start, end=_value(row.get("end")),
                  host=_value(row.get("nodelist")))
    return [TaskRecord(task_id=_task_id(submission, index), index=index, **common) for index in indices]


def _final_exit_code(state: str, start: Optional[str], text: Optional[str]) -> Optional[int]:
    # sacct prints 0:0 for jobs that never ran and for jobs Slurm killed (TIMEOUT keeps 0:0 at job level; its
    # .batch step has 0:15): a 0 then means "no status", not success. Only COMPLETED makes 0 a real exit code.
    code = parse_exit_code(text)
    if state not in FINAL_STATES or start is None or code is None:
        return None
    return code if code != 0 or state == COMPLETED else None


def _task_id(submission: str, index: Optional[int]) -> str:
    return submission if index is None else f"{submission}_{index}"


def _split_row(line: str, count: int, free: Optional[int]) -> Optional[List[str]]:
    """Split a '|' row into ``count`` fields; extra '|' are taken to belong to the free-text column (job name)."""
    parts = line.split("|")
    if len(parts) == count:
        return parts
    if len(parts) < count or free is None:
        return None
    extra = len(parts) - count
    return parts[:free] + ["|".join(parts[free:free + extra + 1])] + parts[free + extra + 1:]


def _squeue_codes(fmt: str) -> List[str]:
    codes = []
    for piece in fmt.split("|"):
        match = re.search(r"%\.?\d*([A-Za-z])", piece)
        codes.append(match.group(1) if match else "")
    return codes


# ----------------------------------------------------------------------------------------------------------------
# argv inspection and checks


def _option_value(argv: Sequence[str], short: Optional[str], long_prefix: str) -> Optional[str]:
    """The value of ``-o VALUE`` / ``--format=VALUE`` (or ``users=alice``) in argv, if present."""
    args = list(argv)
    for i, arg in enumerate(args):
        if short and arg == short and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(long_prefix):
            return arg[len(long_prefix):]
        if long_prefix.startswith("--") and arg == long_prefix.rstrip("=") and i + 1 < len(args):
            return args[i + 1]
    return None


def _field_list(argv: Sequence[str], default: Sequence[str]) -> List[str]:
    value = (_option_value(argv, "-o", "--format=") or _option_value(argv, None, "format=")
             or ",".join(default))
    return [f.strip().lower() for f in value.split(",")]


def _checked_ids(ids: Sequence[str], command: str) -> List[str]:
    # Exact ids only: an empty list would make scancel/sacct act on everything, a flag would change the command.
    unique = list(dict.fromkeys(str(i).strip() for i in ids))
    if not unique:
        raise ValueError(f"{command} needs at least one job id")
    bad = [i for i in unique if not _ID.fullmatch(i)]
    if bad:
        raise ValueError(f"not Slurm job ids: {bad}")
    return unique


def _checked_name(name: str) -> str:
    """Our job names (prefix-shape-seq) are plain words; anything else would be a bug, never passed to Slurm."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"unexpected job name {name!r}")
    return name


def _checked_user(user: str) -> str:
    if not _USER.fullmatch(user or ""):
        raise ValueError(f"not a user name: {user!r}")
    return user


# ----------------------------------------------------------------------------------------------------------------
# sbatch results


def _submitted_id(stdout: str) -> Optional[str]:
    for line in reversed(stdout.strip().splitlines()):
        match = re.fullmatch(r"(\d+)(?:;\S+)?", line.strip()) or re.search(r"Submitted batch job (\d+)", line)
        if match:
            return match.group(1)
    return None


def _classify_submit_failure(result: CommandResult) -> str:
    text = result.stderr + "\n" + result.stdout
    if result.returncode < 0 or result.returncode in _KILLED_RCS or _TRANSIENT.search(text):
        return "transient"
    if _LIMIT.search(text):
        return "limit"
    if _PER_JOB_POLICY.search(text):
        return "rejected"
    if _POLICY.search(text):
        return "limit"
    if not text.strip():
        return "transient"  # no word at all: the outcome is unknown
    return "rejected"


def _error_summary(result: CommandResult, command: str) -> str:
    """One line: the ``error:`` payloads joined, else the last line said, else the exit status."""
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    errors = [re.sub(r"^\S+:\s*error:\s*", "", line) for line in lines if "error" in line.lower()]
    errors = [re.sub(r"^Batch job submission failed:\s*", "", e) for e in errors]
    said = "; ".join(dict.fromkeys(errors)) or (lines[-1] if lines else "")
    return f"{command} failed (rc={result.returncode}): {said}" if said else f"{command} failed (rc={result.returncode})"


# ----------------------------------------------------------------------------------------------------------------
# limits


def query_kind(argv: Sequence[str]) -> Optional[str]:
    """Which Slurm query an argv is (the limit and shape parsers are handed answers in any order): sinfo,
    partition, config, assoc_mgr (scontrol), assoc or qos (sacctmgr); None for anything else."""
    words = [a.lower() for a in argv]
    if words[:1] == ["sinfo"]:
        return "sinfo"
    if words[:1] == ["scontrol"]:
        return next((kind for kind in ("partition", "config", "assoc_mgr") if kind in words), None)
    if words[:1] == ["sacctmgr"] and ("assoc" in words or "association" in words):
        return "assoc"
    if words[:1] == ["sacctmgr"] and "qos" in words:
        return "qos"
    return None


def _key_values(text: str) -> Dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def _pipe_rows(text: str, fields: Sequence[str]) -> List[Dict[str, str]]:
    return [dict(zip(fields, (v.strip() for v in line.split("|")))) for line in text.splitlines() if line.strip()]


def _leading_int(text: Optional[str]) -> Optional[int]:
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def _assoc_caps(rows: Sequence[Dict[str, str]]) -> List[int]:
    # Both count every array task; on a user's own association GrpSubmit is a per-user cap as well.
    caps = [_leading_int(row.get(key)) for row in rows for key in ("maxsubmit", "grpsubmit")]
    return [c for c in caps if c is not None]


def _qos_caps(assoc_rows: Optional[Sequence[Dict[str, str]]], qos_rows: Sequence[Dict[str, str]]) -> List[int]:
    """MaxSubmitPU of the QOS a job gets without --qos: the association's default QOS, else its only QOS, else
    'normal' (slurmctld's own fallback); with several and no default, every allowed QOS counts (conservative)."""
    if not qos_rows:
        return []
    per_qos = {row.get("name", ""): _leading_int(row.get("maxsubmitpu")) for row in qos_rows}
    if assoc_rows is None:  # associations read from assoc_mgr, which lists no QOS: slurmctld's default one
        return [c for c in (per_qos.get("normal"),) if c is not None]
    used = set()
    for row in assoc_rows:
        allowed = [q for q in row.get("qos", "").split(",") if q]
        default = row.get("defaultqos", "")
        if default:
            used.add(default)
        elif len(allowed) == 1 or not allowed:
            used.update(allowed or ["normal"])
        else:
            used.update(["normal"] if "normal" in allowed else allowed)
    caps = [per_qos.get(name) for name in used]
    return [c for c in caps if c is not None]


def _assoc_mgr_caps(text: str, users: Optional[str]) -> List[int]:
    """MaxSubmitJobs/GrpSubmitJobs limits (``5(0)``: limit 5, 0 in use; ``N``: none) of user associations."""
    wanted = set(users.split(",")) if users else None
    caps = []
    for block in re.split(r"(?m)^(?=ClusterName=)", text):
        user = re.search(r"\bUserName=(\S*)", block)
        name = user.group(1).split("(", 1)[0] if user else ""
        if not name or (wanted is not None and name not in wanted):
            continue  # account-level records hold shared (Grp) or inherited limits
        for key in ("MaxSubmitJobs", "GrpSubmitJobs"):
            match = re.search(rf"\b{key}=(\d+)", block)
            if match:
                caps.append(int(match.group(1)))
    return caps
