"""PBS Pro / OpenPBS adapter: argv builders and pure parsers (no processes, no files).

Facts this module relies on (see shared/reference/schedulers.md and the OpenPBS 23.06 captures):

- ``qsub`` prints only the id: ``123[].server`` for an array, ``124.server`` for a plain job.
- One poll is ONE ``qstat -f -F json -x -t <ids...>``. ``-x`` adds finished jobs (job history), ``-t`` expands
  array subjobs. Queued subjobs are template copies of the parent: they carry no ``array_index``, so the index
  always comes from the id ``123[4].server``.
- The JSON can be broken by exported shell functions (``BASH_FUNC_*``) and by number-looking environment values
  (``"foo":005``) inside ``Variable_List``; we repair that, and fall back to a tolerant line reader.
- ``qstat -f`` text (79-column wrapping, TAB or 8-space continuation lines) is the fallback format.

What PBS Pro shares with Torque (job ids, ``qstat -f`` text, qsub/qdel/qselect results, error messages) is in
:mod:`hpc_sweep.schedulers.pbs_family`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from hpc_sweep.schedulers.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINAL_STATES,
    OOM,
    PENDING,
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
from hpc_sweep.schedulers.pbs_family import (
    JOB_ID_RE,
    Attrs,
    as_int,
    expand_indices,
    first_host,
    hms_to_seconds,
    is_array_parent,
    is_transient_message,
    listed_ids,
    message_of,
    parse_cancel_result,
    parse_qstat_f_text,
    parse_submitted_id,
    pbs_time_to_iso,
    pending_reason,
    qdel_argv,
    split_job_id,
    submission_id_of,
    submission_key,
    task_id_for,
)


# ---------------------------------------------------------------------------------------------------------
# qstat -F json attributes
# ---------------------------------------------------------------------------------------------------------


def flatten(d: Mapping[str, Any], prefix: str = "") -> Attrs:
    """Nested JSON attributes to the dotted names ``qstat -f`` text uses."""
    out: Attrs = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ---------------------------------------------------------------------------------------------------------
# State mapping
# ---------------------------------------------------------------------------------------------------------

PBS_PENDING = frozenset("QHWTSMU")   # queued, held, waiting, transit, suspended, moved, cycle-harvest suspended
PBS_RUNNING = frozenset("REB")       # running, exiting, array begun (parent only)
PBS_FINISHED = frozenset("XF")       # X: subjob of a live array finished; F: finished (history)

# PBS JOB_EXEC_KILL_* codes (OpenPBS job.h): -24 ncpus burst, -25 ncpus sum, -26 vmem, -27 mem, -28 cput,
# -29 walltime.
PBS_EXIT_TIMEOUT = frozenset({-29, -28})
PBS_EXIT_OOM = frozenset({-27, -26})


def pbs_exit_state(exit_status: Optional[int]) -> str:
    """Final state of a finished PBS job from its ``Exit_status``."""
    if exit_status is None:
        return CANCELLED  # finished without an exit status: deleted before it ran
    if exit_status == 0:
        return COMPLETED
    if exit_status in PBS_EXIT_TIMEOUT:
        return TIMEOUT
    if exit_status in PBS_EXIT_OOM:
        return OOM
    if exit_status > 256 or exit_status == 143:
        # 256+signal: killed by a signal (271 = SIGTERM from qdel, 265 = SIGKILL); 143 = the job shell
        # reporting its child's SIGTERM (seen for qdel'd subjobs).
        return CANCELLED
    return FAILED


def pbs_state(letter: str, exit_status: Optional[int] = None) -> str:
    letter = (letter or "").strip()[:1]
    if letter in PBS_PENDING:
        return PENDING
    if letter in PBS_RUNNING:
        return RUNNING
    if letter in PBS_FINISHED:
        return pbs_exit_state(exit_status)
    return UNKNOWN


# ---------------------------------------------------------------------------------------------------------
# qstat -F json, with repairs
# ---------------------------------------------------------------------------------------------------------

_VARIABLE_LIST_OPEN_RE = re.compile(r'^(\s*)"Variable_List"\s*:\s*\{\s*$')


def drop_variable_lists(text: str) -> str:
    """Remove every ``"Variable_List":{...}`` object, line by line.

    It is the part of a job that holds user-controlled text (exported shell functions with raw newlines and
    quotes, ``005``-style numbers), and the poller never needs it. Its closing brace sits on a line of its
    own with exactly the opening line's indentation, which garbage inside the object does not reproduce.
    """
    out: List[str] = []
    indent: Optional[str] = None
    for line in text.splitlines():
        if indent is None:
            m = _VARIABLE_LIST_OPEN_RE.match(line)
            if m:
                indent = m.group(1)
            else:
                out.append(line)
            continue
        closing = line.rstrip()
        if closing in (indent + "}", indent + "},"):
            if closing.endswith("}") and out:
                out[-1] = out[-1].rstrip().rstrip(",")  # it was the last key: drop the comma before it
            indent = None
    return "\n".join(out)


_JSON_OPEN_RE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*:\s*\{\s*$')
_JSON_PAIR_RE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*:\s*(.*?)\s*$')
_JSON_CLOSE_RE = re.compile(r"^\s*\}\s*,?\s*$")


def _tolerant_value(raw: str) -> Any:
    raw = raw.rstrip()
    if raw.endswith(","):
        raw = raw[:-1].rstrip()
    if raw.startswith('"'):
        inner = raw[1:-1] if raw.endswith('"') and len(raw) > 1 else raw[1:]
        return inner.replace('\\"', '"').replace("\\/", "/").replace("\\\\", "\\")
    number = as_int(raw)
    if number is not None and not re.match(r"^-?0\d", raw):
        return number
    return raw


def tolerant_json(text: str) -> Dict[str, Any]:
    """Read PBS's one-key-per-line JSON layout without a JSON parser: for documents json cannot load.

    Lines that fit none of ``"k":{``, ``"k":value`` or ``}`` (continuations of a broken value) are skipped.
    Raises ValueError for a document that stops before its braces close (qstat cut off).
    """
    root: Dict[str, Any] = {}
    stack: List[Dict[str, Any]] = [root]
    closed = False
    for line in text.splitlines():
        if _JSON_CLOSE_RE.match(line):
            if len(stack) > 1:
                stack.pop()
            else:
                closed = True  # the document's own closing brace
            continue
        opened = _JSON_OPEN_RE.match(line)
        if opened:
            child: Dict[str, Any] = {}
            stack[-1][opened.group(1)] = child
            stack.append(child)
            continue
        pair = _JSON_PAIR_RE.match(line)
        if pair:
            stack[-1][pair.group(1)] = _tolerant_value(pair.group(2))
    if len(stack) > 1 or not (closed or text.rstrip().endswith("}")):
        raise ValueError("qstat JSON ends before its braces close")
    return root


_JOB_KEY_LINE_RE = re.compile(r'^\s*"\d+(?:\[\d*\])?(?:\.[^"]*)?"\s*:\s*\{\s*$', re.MULTILINE)


def load_pbs_json(text: str) -> Dict[str, Any]:
    """The qstat JSON document in ``text`` (which may carry other lines around it), repaired if needed.

    Raises ValueError when even the tolerant reader finds fewer jobs than the document names: an answer
    missing jobs must not pass for one in which they left the queue.
    """
    start = re.search(r"^\s*\{", text, re.MULTILINE)
    body = text[start.start():] if start else text
    decoder = json.JSONDecoder(strict=False)  # strict=False: raw control characters inside strings
    for candidate in (body, drop_variable_lists(body)):
        try:
            doc, _end = decoder.raw_decode(candidate.lstrip())  # raw_decode: ignore trailing lines
            if isinstance(doc, dict):
                return doc
        except ValueError:
            pass
    cleaned = drop_variable_lists(body)
    doc = tolerant_json(cleaned)
    named = len(_JOB_KEY_LINE_RE.findall(cleaned))
    jobs = doc.get("Jobs") if isinstance(doc.get("Jobs"), dict) else {}
    found = [v for v in jobs.values() if isinstance(v, dict)]
    if len(found) < named:
        raise ValueError(f"qstat JSON unreadable: {named} jobs named, {len(found)} recovered")
    return doc


# ---------------------------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------------------------

_LIMIT_ENTRY_RE = re.compile(r"\[\s*([ugpo])\s*:\s*([^=\]\s]+)\s*=\s*(\d+)\s*\]")


def pbs_count_limit(value: Optional[str], user: Optional[str]) -> Optional[int]:
    """The cap a ``max_queued``-style value puts on ``user``.

    ``[u:<user>=N]`` beats ``[u:PBS_GENERIC=N]``; ``[o:PBS_ALL=N]`` (everyone together) also caps us, so the
    smaller applies. Group/project entries are ignored (we do not know the user's group).
    """
    if not value:
        return None
    entries = _LIMIT_ENTRY_RE.findall(str(value))
    named = [int(n) for kind, who, n in entries if kind == "u" and user and who == user]
    generic = [int(n) for kind, who, n in entries if kind == "u" and who == "PBS_GENERIC"]
    overall = [int(n) for kind, who, n in entries if kind == "o" and who == "PBS_ALL"]
    caps = (named or generic) + overall
    return min(caps) if caps else None


def _min_or_none(values: Iterable[Optional[int]]) -> Optional[int]:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def version_tuple(version: str) -> Tuple[int, ...]:
    nums = re.findall(r"\d+", version or "")
    return tuple(int(n) for n in nums[:2])


def throttle_supported(pbs_version: str) -> bool:
    """Whether ``qsub -J X-Y%N`` is accepted: OpenPBS >= 22.05 (older PBS Pro rejects ``%N``).

    Commercial PBS Professional numbers releases by year (``2021.1``, ``2024.1``); releases from 2022 on (the
    year of OpenPBS 22.05) are assumed to have it, which is a guess: probe once where it matters. Older or
    unparsable versions answer False, the safe side: an unsupported ``%N`` makes qsub fail, while a missing
    one only loses the throttle.
    """
    nums = version_tuple(pbs_version)
    if not nums:
        return False
    if nums[0] >= 2000:
        return nums[0] >= 2022
    return nums >= (22, 5)


_VERSION_RE = re.compile(r"pbs_version\s*[=:]\s*\"?([0-9][\w.\-]*)")


def parse_pbs_version(result: CommandResult) -> Optional[str]:
    """``pbs_version = 19.2.8.20200925072630`` (``qstat --version``, stdout or stderr) or a JSON header."""
    m = _VERSION_RE.search((result.stdout or "") + "\n" + (result.stderr or ""))
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------------------

# qstat stderr lines that concern single ids and do not make the whole answer wrong.
_IGNORABLE_QSTAT_RE = re.compile(r"Unknown Job Id|Job has finished, use -x or -H", re.IGNORECASE)
_NO_HISTORY_RE = re.compile(r"not configured to maintain job history", re.IGNORECASE)


class PbsProScheduler(Scheduler):
    """PBS Professional / OpenPBS.

    ``history=False`` for servers with ``job_history_enable`` off: polls then omit ``-x`` (finished jobs
    simply leave the answer, and job-written exit markers are the only record of how they ended).
    """

    name = "pbspro"
    index_env = "PBS_ARRAY_INDEX"
    task_id_env = "PBS_JOBID"
    submission_env = "PBS_ARRAY_ID"

    def __init__(self, history: bool = True):
        self.history = history
        self._limits_user: Optional[str] = None

    # -- submit ------------------------------------------------------------------------------------------
    def submit_argv(self, spec: SubmitSpec) -> List[str]:
        # Array (-J), name and resources are #PBS directives in the rendered script. Never -V: exported
        # shell functions break qstat's JSON and make the job depend on the submitting shell.
        return ["qsub", spec.script]

    def parse_submit(self, result: CommandResult) -> str:
        return parse_submitted_id(result)

    def uses_array(self, ntasks: int) -> bool:
        return ntasks > 1  # `-J 5` is refused: a one-config group is a plain job

    def array_spec(self, indices: Sequence[int], throttle: Optional[int]) -> str:
        """``X-Y[:Z][%N]``. PBS needs at least two indices in one arithmetic progression."""
        ordered = sorted(indices)
        if len(ordered) < 2:
            raise ValueError("a PBS array needs at least two indices (-J 5 is illegal): submit a plain job")
        if len(set(ordered)) != len(ordered) or ordered[0] < 0:
            raise ValueError(f"array indices must be distinct and non-negative: {list(indices)!r}")
        step = ordered[1] - ordered[0]
        if any(b - a != step for a, b in zip(ordered, ordered[1:])):
            raise ValueError("PBS -J takes one range X-Y[:Z]: split non-arithmetic index sets into several arrays")
        spec = f"{ordered[0]}-{ordered[-1]}" + (f":{step}" if step != 1 else "")
        if throttle is not None:
            if throttle < 1:
                raise ValueError("throttle must be >= 1 (%0 is accepted by PBS but never runs a subjob)")
            spec += f"%{throttle}"
        return spec

    # -- live queue --------------------------------------------------------------------------------------
    def live_argv(self, user: str, submission_ids: Sequence[str] = ()) -> List[str]:
        """ONE qstat for all our recorded submissions (``123[].server``; ``-t`` expands their subjobs).

        With none recorded there is nothing of ours to ask about, and a qstat without ids would list every
        job of every user (history included): ``qselect -u <user>`` then lists the user's unfinished jobs,
        ids only, so that the room left in the queue still counts them (see :meth:`parse_live`).
        """
        if not submission_ids:
            return ["qselect", "-u", user]
        flags = ["-f", "-F", "json"] + (["-x"] if self.history else []) + ["-t"]
        return ["qstat", *flags, *submission_ids]

    def lookup_argv(self, user: str, job_name: str, since: Optional[float] = None) -> List[str]:
        """The submissions named ``job_name``, history included (to reconcile an intent after a transient qsub:
        the live query only names recorded ids, so it cannot find an unrecorded one)."""
        return ["qselect"] + (["-x"] if self.history else []) + ["-u", user, "-N", job_name]

    def parse_lookup(self, result: CommandResult) -> List[str]:
        """Submission ids printed by :meth:`lookup_argv` (empty: no such job)."""
        self._raise_for_qstat_errors(result)
        ids = listed_ids(result.stdout or "")
        if ids is None:
            raise SchedulerError("transient", f"qselect output not understood: {message_of(result)[:200]!r}")
        return [submission_id_of(i) for i in ids]

    def live_argv_text(self, submission_ids: Sequence[str]) -> List[str]:
        """The same question in ``qstat -f`` text, for servers whose qstat has no ``-F json``."""
        if not submission_ids:
            raise ValueError("pass at least one submission id")
        return ["qstat", "-f"] + (["-x"] if self.history else []) + ["-t", *submission_ids]

    def parse_live(self, result: CommandResult) -> List[TaskRecord]:
        stdout, stderr = result.stdout or "", result.stderr or ""
        self._raise_for_qstat_errors(result)
        jobs = self.parse_jobs(stdout)
        if jobs is None:
            if not stdout.strip() and result.returncode != 0 and not stderr.strip():
                raise SchedulerError("transient", f"qstat exited with status {result.returncode} and printed nothing")
            if not stdout.strip():
                return []  # nothing printed, and stderr only named ids that are unknown/finished
            ids = listed_ids(stdout)
            if ids is not None:
                return [self._listed_record(jid) for jid in ids]
            first = stdout.strip().splitlines()[0]
            raise SchedulerError("transient", f"qstat output not understood (neither JSON nor -f text): {first!r}")
        self._raise_for_silent_omissions(result, jobs)
        return self.records_from_jobs(jobs)

    @staticmethod
    def _raise_for_silent_omissions(result: CommandResult, jobs: Mapping[str, Attrs]) -> None:
        """Every id we asked about must be answered or named in stderr (unknown, finished).

        Some OpenPBS builds answer ``qstat -f -F json a b`` with the first job only (openpbs#2672): jobs
        missing without a word must not read as jobs that left the queue.
        """
        asked = [a for a in result.argv[1:] if JOB_ID_RE.match(a)]
        answered = {submission_key(jid) for jid in jobs if JOB_ID_RE.match(jid)}
        answered |= {submission_key(submission_id_of(jid)) for jid in jobs if JOB_ID_RE.match(jid)}
        named = result.stderr or ""
        silent = [a for a in asked if submission_key(a) not in answered and a not in named]
        if silent:
            raise SchedulerError("transient", f"qstat answered nothing, not even an error, for {', '.join(silent)}")

    def _raise_for_qstat_errors(self, result: CommandResult) -> None:
        stderr = result.stderr or ""
        stdout_has_doc = bool(re.search(r"^\s*\{|^Job Id:", result.stdout or "", re.MULTILINE))
        if is_transient_message(stderr) or (not stdout_has_doc and is_transient_message(result.stdout or "")):
            raise SchedulerError("transient", message_of(result))
        if _NO_HISTORY_RE.search(stderr):
            raise SchedulerError(
                "rejected", f"{stderr.strip()} -- job history is off on this server: poll with history=False")
        unexpected = [ln for ln in stderr.splitlines() if ln.strip() and not _IGNORABLE_QSTAT_RE.search(ln)]
        if unexpected and result.returncode != 0:
            # Never guess job states from a query that failed for a reason we do not know.
            raise SchedulerError("transient", "; ".join(unexpected))

    @staticmethod
    def parse_jobs(stdout: str) -> Optional[Dict[str, Attrs]]:
        """``{job id: flat attributes}`` from JSON or ``-f`` text; None when stdout is neither.
        SchedulerError("transient") when the JSON is beyond repair."""
        # Text first: JSON never has a line starting "Job Id:", while wrapped text values may start with "{".
        if re.search(r"^Job Id:", stdout, re.MULTILINE):
            return dict(parse_qstat_f_text(stdout))
        if re.search(r"^\s*\{", stdout, re.MULTILINE):
            try:
                doc = load_pbs_json(stdout)
            except ValueError as exc:
                raise SchedulerError("transient", str(exc)) from exc
            jobs = doc.get("Jobs") or {}
            return {jid: flatten(attrs) for jid, attrs in jobs.items() if isinstance(attrs, Mapping)}
        return None

    def records_from_jobs(self, jobs: Mapping[str, Attrs]) -> List[TaskRecord]:
        """One record per subjob/plain job; an array parent only stands in for subjobs the answer lacks."""
        parents_with_subjobs = {submission_id_of(jid) for jid in jobs if not is_array_parent(jid)}
        records: List[TaskRecord] = []
        for jid, attrs in jobs.items():
            if not JOB_ID_RE.match(jid):
                continue
            if is_array_parent(jid):
                if jid not in parents_with_subjobs:
                    records.extend(self._records_from_parent(jid, attrs))
                continue
            records.append(self._task_record(jid, attrs))
        return records

    @staticmethod
    def _listed_record(jid: str) -> TaskRecord:
        """A job qselect listed: not finished, state not asked (an array counts once here)."""
        _seq, index, _server = split_job_id(jid)
        return TaskRecord(task_id=jid, submission_id=submission_id_of(jid), index=int(index) if index else None,
                          name=None, state=UNKNOWN, raw_state="", reason="listed by qselect; state not asked")

    def _task_record(self, jid: str, a: Attrs) -> TaskRecord:
        _seq, index, _server = split_job_id(jid)
        raw = str(a.get("job_state", "")).strip()
        exit_code = as_int(a.get("Exit_status"))
        state = pbs_state(raw, exit_code)
        # A subjob without array_index is a template copy of the parent: queued, or (in a deleted array)
        # "Subjob finished" with the PARENT's Exit_status. It never ran under its own record, so its exit
        # status says nothing about it: report it cancelled without an exit code.
        template = index is not None and "array_index" not in a
        reason = self._reason(state, a)
        if template and state in FINAL_STATES:
            state, exit_code = CANCELLED, None
            reason = f"{a.get('comment') or 'Subjob finished'} (array deleted; this subjob's own result is not kept)"
        ran = bool(a.get("exec_host")) and not template
        return TaskRecord(
            task_id=jid,
            submission_id=str(a.get("array_id") or submission_id_of(jid)),
            index=int(index) if index else None,
            name=a.get("Job_Name"),
            state=state,
            raw_state=raw,
            reason=reason,
            exit_code=exit_code if state in FINAL_STATES else None,
            elapsed_s=hms_to_seconds(a.get("resources_used.walltime")) if ran else None,
            start=pbs_time_to_iso(a.get("stime")) if ran else None,
            end=pbs_time_to_iso(a.get("obittime")) if state in FINAL_STATES else None,
            host=first_host(a.get("exec_host")) if ran else None,
        )

    @staticmethod
    def _reason(state: str, a: Attrs) -> Optional[str]:
        if state == PENDING:
            return pending_reason(a)
        # PBS comments on finished jobs say how they ended ("... and exceeded resource walltime").
        return str(a["comment"]).strip() if state in FINAL_STATES and a.get("comment") else None

    def _records_from_parent(self, jid: str, a: Attrs) -> List[TaskRecord]:
        """Subjob records an array parent vouches for when the answer holds no subjobs (asked without -t).

        Indices in ``array_indices_remaining`` are queued. A finished parent with Exit_status 0 means every
        subjob exited 0. Nothing else can be told per subjob, so nothing else is reported.
        """
        raw = str(a.get("job_state", "")).strip()
        parent_exit = as_int(a.get("Exit_status"))
        name, comment = a.get("Job_Name"), a.get("comment")
        if raw in PBS_FINISHED:
            if parent_exit != 0:
                return []
            indices, state, code = expand_indices(a.get("array_indices_submitted")), COMPLETED, 0
        else:
            indices, state, code = expand_indices(a.get("array_indices_remaining")), PENDING, None
        reason = pending_reason({"comment": comment}) if state == PENDING else None
        return [
            TaskRecord(task_id=task_id_for(jid, i), submission_id=jid, index=i, name=name, state=state,
                       raw_state=("F" if state == COMPLETED else "Q"), reason=reason, exit_code=code,
                       end=pbs_time_to_iso(a.get("obittime")) if state == COMPLETED else None)
            for i in indices
        ]

    # -- cancel ------------------------------------------------------------------------------------------
    def cancel_argv(self, task_or_submission_ids: Sequence[str]) -> List[str]:
        """``qdel`` with exact ids (``123[]`` deletes the whole array, ``123[4]`` one subjob)."""
        return qdel_argv(task_or_submission_ids)

    def parse_cancel(self, result: CommandResult) -> None:
        """Not in the base contract: OK for deleted or already-gone jobs, SchedulerError otherwise."""
        parse_cancel_result(result)

    # -- limits ------------------------------------------------------------------------------------------
    def limits_argvs(self, user: str, queue: Optional[str] = None) -> List[List[str]]:
        # Text, not JSON: JSON repeats the max_queued key once per entry (openpbs#2677).
        self._limits_user = user  # parse_limits has no user argument in the contract
        return [["qstat", "-Bf"]] + ([["qstat", "-Qf", queue]] if queue else [])

    def parse_limits(self, results: Sequence[CommandResult], user: Optional[str] = None) -> QueueLimits:
        who = user or self._limits_user
        queued: List[Optional[int]] = []
        array_sizes: List[Optional[int]] = []
        version: Optional[str] = None
        for result in results:
            for attrs in parse_qstat_f_text(result.stdout or "").values():
                queued.append(pbs_count_limit(attrs.get("max_queued"), who))
                queued.append(as_int(attrs.get("max_queuable")))  # old-style per-queue total
                array_sizes.append(as_int(attrs.get("max_array_size")))
                version = version or attrs.get("pbs_version")
        return QueueLimits(
            max_queued=_min_or_none(queued),
            max_array_size=_min_or_none(array_sizes),
            throttle_supported=throttle_supported(version) if version else True,
        )

    # -- version -----------------------------------------------------------------------------------------
    @staticmethod
    def version_argv() -> List[str]:
        return ["qstat", "--version"]

    @staticmethod
    def parse_version(result: CommandResult) -> Optional[str]:
        return parse_pbs_version(result)

    @staticmethod
    def throttle_supported(pbs_version: str) -> bool:
        return throttle_supported(pbs_version)
