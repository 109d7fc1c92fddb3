"""Torque (with or without Moab) adapter: argv builders and pure parsers (no processes, no files).

Facts this module relies on (shared/reference/schedulers.md and the captures under
shared/fixtures/captured-elsewhere/torque):

- ``qsub -t 0-99%5`` / ``-t 1,10,50-100`` (lists allowed, no step) as a ``#PBS -t`` directive; env
  ``PBS_ARRAYID``; ids ``123[].server`` / ``123[4].server``; subjob names are ``<name>-<index>``.
- ``qstat -x`` is XML in Torque (not history); ``-t`` lists subjobs. ``<Variable_List>`` holds the job's whole
  environment unescaped, so it is cut out before XML parsing. Torque 6.1 puts ``<?xml version="1.0"?>`` on a
  line of its own.
- Completed jobs (state C) stay only ``keep_completed`` seconds (default 0): most finished tasks simply vanish,
  and the job-written exit markers are the only record of how they ended.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence

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
from hpc_sweep.schedulers import pbs_family as pbs  # what PBS Pro and Torque share
from hpc_sweep.schedulers.pbs_family import Attrs

TORQUE_PENDING = frozenset("QHWTS")  # queued, held (also: over the %N slot limit), waiting, transit, suspended
TORQUE_RUNNING = frozenset("RE")     # running, exiting

# Torque JOB_EXEC_OVERLIMIT_* codes: -10 memory, -11 walltime, -12 cput (other meanings in PBS Pro!).
TORQUE_EXIT_TIMEOUT = frozenset({-11, -12})
TORQUE_EXIT_OOM = frozenset({-10})


def torque_exit_state(exit_status: Optional[int]) -> str:
    if exit_status is None:
        return CANCELLED  # completed without an exit status: deleted before it ran
    if exit_status == 0:
        return COMPLETED
    if exit_status in TORQUE_EXIT_TIMEOUT:
        return TIMEOUT
    if exit_status in TORQUE_EXIT_OOM:
        return OOM
    if exit_status > 256 or exit_status == 143:
        return CANCELLED  # 256+signal (271 = SIGTERM from qdel); 143 = the shell reporting SIGTERM
    return FAILED


def torque_state(letter: str, exit_status: Optional[int] = None) -> str:
    letter = (letter or "").strip()[:1]
    if letter in TORQUE_PENDING:
        return PENDING
    if letter in TORQUE_RUNNING:
        return RUNNING
    if letter == "C":
        return torque_exit_state(exit_status)
    return UNKNOWN


def submission_name(name: Optional[str], index: Optional[int]) -> Optional[str]:
    """Torque names subjob ``i`` of job ``foo`` ``foo-i``: give back ``foo`` (for reconciling by name)."""
    if name is None or index is None:
        return name
    suffix = f"-{index}"
    return name[: -len(suffix)] if name.endswith(suffix) else name


# ---------------------------------------------------------------------------------------------------------
# qstat -x (XML)
# ---------------------------------------------------------------------------------------------------------

_VARIABLE_LIST_RE = re.compile(r"<Variable_List>.*?</Variable_List>", re.DOTALL)
_XML_DECL_RE = re.compile(r"<\?xml[^>]*\?>")
_JOB_RE = re.compile(r"<Job>(.*?)</Job>", re.DOTALL)
_SIMPLE_TAG_RE = re.compile(r"<([A-Za-z_][\w.]*)>([^<]*)</\1>")
_NESTED_TAG_RE = re.compile(r"<(resources_used|Resource_List|Walltime)>(.*?)</\1>", re.DOTALL)


def _flatten_element(elem: ET.Element, prefix: str = "") -> Attrs:
    out: Attrs = {}
    for child in elem:
        key = prefix + child.tag
        if len(child):
            out.update(_flatten_element(child, key + "."))
        else:
            out[key] = (child.text or "").strip()
    return out


def _jobs_by_regex(xml: str) -> Dict[str, Attrs]:
    """Fallback when the XML does not parse (an unescaped value elsewhere): read the tags we need."""
    jobs: Dict[str, Attrs] = {}
    for body in _JOB_RE.findall(xml):
        attrs: Attrs = {}
        for tag, inner in _NESTED_TAG_RE.findall(body):
            for sub, value in _SIMPLE_TAG_RE.findall(inner):
                attrs[f"{tag}.{sub}"] = html.unescape(value).strip()
        flat_body = _NESTED_TAG_RE.sub("", body)
        for tag, value in _SIMPLE_TAG_RE.findall(flat_body):
            attrs.setdefault(tag, html.unescape(value).strip())
        if "Job_Id" in attrs:
            jobs[str(attrs["Job_Id"])] = attrs
    return jobs


def parse_qstat_xml(text: str) -> Dict[str, Attrs]:
    """``{job id: flat attributes}`` from Torque ``qstat -x`` output (empty output -> {})."""
    xml = _XML_DECL_RE.sub("", _VARIABLE_LIST_RE.sub("", text)).strip()
    if not xml:
        return {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return _jobs_by_regex(xml)
    jobs: Dict[str, Attrs] = {}
    for job in root.iter("Job"):
        attrs = _flatten_element(job)
        if attrs.get("Job_Id"):
            jobs[str(attrs["Job_Id"])] = attrs
    return jobs


# ---------------------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------------------

_UNKNOWN_JOB_RE = re.compile(r"Unknown Job Id", re.IGNORECASE)


class TorqueScheduler(Scheduler):
    name = "torque"
    index_env = "PBS_ARRAYID"
    task_id_env = "PBS_JOBID"

    # -- submit ------------------------------------------------------------------------------------------
    def submit_argv(self, spec: SubmitSpec) -> List[str]:
        # -t, -N and resources are #PBS directives in the rendered script; never -V.
        return ["qsub", spec.script]

    def parse_submit(self, result: CommandResult) -> str:
        return pbs.parse_submitted_id(result)

    def array_spec(self, indices: Sequence[int], throttle: Optional[int]) -> str:
        """``-t`` syntax: ranges and lists (``1,10,50-100``), no step; ``%N`` caps running subjobs."""
        ordered = sorted(indices)
        if not ordered:
            raise ValueError("an array needs at least one index")
        if len(set(ordered)) != len(ordered) or ordered[0] < 0:
            raise ValueError(f"array indices must be distinct and non-negative: {list(indices)!r}")
        spec = ",".join(_ranges(ordered))
        if throttle is not None:
            if throttle < 1:
                raise ValueError("throttle must be >= 1")
            spec += f"%{throttle}"
        return spec

    # -- live queue --------------------------------------------------------------------------------------
    live_lists_names = True  # every job the user can see, with its name (subjobs as <name>-<index>)

    def live_argv(self, user: str, submission_ids: Sequence[str] = ()) -> List[str]:
        """ALL jobs the user can see, as XML with subjobs; the caller keeps ours by submission id
        (compare with :func:`hpc_sweep.schedulers.pbs_family.submission_key`: server spellings vary)."""
        return ["qstat", "-x", "-t"]

    def parse_live(self, result: CommandResult) -> List[TaskRecord]:
        stdout, stderr = result.stdout or "", result.stderr or ""
        if pbs.is_transient_message(stderr) or (not stdout.strip() and pbs.is_transient_message(stdout)):
            raise SchedulerError("transient", pbs.message_of(result))
        unexpected = [ln for ln in stderr.splitlines() if ln.strip() and not _UNKNOWN_JOB_RE.search(ln)]
        if unexpected and result.returncode != 0:
            raise SchedulerError("transient", "; ".join(unexpected))
        if not stdout.strip():
            if result.returncode != 0 and not stderr.strip():
                raise SchedulerError("transient", f"qstat exited with status {result.returncode} and printed nothing")
            return []  # no jobs at all, or only purged ids named
        jobs = self.parse_jobs(stdout)
        if jobs is None:
            first = stdout.strip().splitlines()[0]
            raise SchedulerError("transient", f"qstat output not understood (neither XML nor -f text): {first!r}")
        return self.records_from_jobs(jobs)

    @staticmethod
    def parse_jobs(stdout: str) -> Optional[Dict[str, Attrs]]:
        """XML (``qstat -x``) or ``qstat -f`` text; None when stdout is neither."""
        if "<Data>" in stdout or "<Job>" in stdout:
            return parse_qstat_xml(stdout)
        if re.search(r"^Job Id:", stdout, re.MULTILINE):
            return dict(pbs.parse_qstat_f_text(stdout))
        return None

    def records_from_jobs(self, jobs: Dict[str, Attrs]) -> List[TaskRecord]:
        """One record per subjob or plain job. Array parents are skipped: they say nothing per index."""
        records = []
        for jid, attrs in jobs.items():
            if pbs.JOB_ID_RE.match(jid) and not pbs.is_array_parent(jid):
                records.append(self._task_record(jid, attrs))
        return records

    def _task_record(self, jid: str, a: Attrs) -> TaskRecord:
        _seq, id_index, _server = pbs.split_job_id(jid)
        index = pbs.as_int(a.get("job_array_id"))
        if index is None and id_index:
            index = int(id_index)
        raw = str(a.get("job_state", "")).strip()
        exit_code = pbs.as_int(a.get("exit_status"))
        state = torque_state(raw, exit_code)
        ran = bool(a.get("exec_host")) or a.get("start_time") is not None
        elapsed = pbs.hms_to_seconds(a.get("resources_used.walltime"))
        return TaskRecord(
            task_id=jid,
            submission_id=pbs.submission_id_of(jid),
            index=index,
            # Torque names subjob i "<name>-i"; report the submission's name so reconciling by name works.
            name=submission_name(a.get("Job_Name"), index if id_index else None),
            state=state,
            raw_state=raw,
            reason=pbs.pending_reason(a) if state == PENDING else None,  # Torque comments on others are chatter
            # A running job may still carry the exit status of an earlier, requeued run (-3 = retry).
            exit_code=exit_code if state in FINAL_STATES else None,
            elapsed_s=elapsed if elapsed is not None else _float(a.get("total_runtime")),
            start=pbs.pbs_time_to_iso(a.get("start_time")) if ran else None,
            end=pbs.pbs_time_to_iso(a.get("comp_time")) if state in FINAL_STATES else None,
            host=pbs.first_host(a.get("exec_host")),
        )

    # -- cancel ------------------------------------------------------------------------------------------
    def cancel_argv(self, task_or_submission_ids: Sequence[str]) -> List[str]:
        """``qdel`` with exact ids only: Torque's ``qdel all`` would delete every job the user may delete."""
        return pbs.qdel_argv(task_or_submission_ids)

    def parse_cancel(self, result: CommandResult) -> None:
        """Not in the base contract: OK for deleted or already-gone jobs, SchedulerError otherwise."""
        pbs.parse_cancel_result(result)

    # -- limits ------------------------------------------------------------------------------------------
    def limits_argvs(self, user: str, queue: Optional[str] = None) -> List[List[str]]:
        return [["qmgr", "-c", "list server"]] + ([["qstat", "-Qf", queue]] if queue else [])

    def parse_limits(self, results: Sequence[CommandResult]) -> QueueLimits:
        """``max_user_queuable`` (per user) and ``max_queuable`` (everyone) from server and queue: the
        smallest wins; ``max_job_array_size`` bounds the subjob count."""
        queued: List[int] = []
        array_sizes: List[int] = []
        for result in results:
            for key, value in _limit_lines(result.stdout or ""):
                number = pbs.as_int(value)
                if number is None:
                    continue
                if key in ("max_user_queuable", "max_queuable"):
                    queued.append(number)
                elif key == "max_job_array_size":
                    array_sizes.append(number)
        return QueueLimits(
            max_queued=min(queued) if queued else None,
            max_array_size=min(array_sizes) if array_sizes else None,
        )

    @staticmethod
    def version_argv() -> List[str]:
        return ["qstat", "--version"]


def _ranges(ordered: Sequence[int]) -> List[str]:
    """[1, 10, 50, 51, 52] -> ["1", "10", "50-52"]."""
    parts: List[str] = []
    start = prev = ordered[0]
    for i in list(ordered[1:]) + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return parts


_LIMIT_LINE_RE = re.compile(r"^\s*(?:set server\s+|set queue\s+\S+\s+)?(max_\w+)\s*=\s*(\S+)\s*$")


def _limit_lines(text: str) -> List[tuple]:
    """``key = value`` pairs from ``qmgr -c 'list server'`` (TAB-indented), ``qstat -Qf`` or
    ``qmgr -c 'print server'`` output."""
    return [m.groups() for m in map(_LIMIT_LINE_RE.match, text.splitlines()) if m]


def _float(value: object) -> Optional[float]:
    try:
        return float(value) if value is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
