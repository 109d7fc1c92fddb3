"""Stand-in PBS Pro / Torque commands for tests (``qsub``, ``qstat``, ``qdel``, ``qselect``, ``qmgr``, ``pbsnodes``
here).

Put this folder first on PATH (see :func:`environ`). The commands:

- append their argv as a JSON line to ``$FAKE_PBS_LOG`` (argv[0] is the bare command name);
- keep a tiny job table in the JSON file ``$FAKE_PBS_STATE``;
- print output SHAPED like the real captures in tests/fixtures (OpenPBS 23.06 ``qstat -f -F json``, Torque 6
  ``qstat -x``): same keys in the same order, same id spellings, same error texts and exit codes.

``$FAKE_PBS_FLAVOR`` is ``pbspro`` (default) or ``torque``. Jobs never run by themselves: a test moves them
with :func:`set_state`. Switches for error paths: ``FAKE_PBS_DOWN=1`` (server unreachable),
``FAKE_PBS_MAX_QUEUED=N`` (qsub refuses when unfinished tasks would exceed N, and ``qstat -Bf`` shows it),
``FAKE_TORQUE_KEEP_COMPLETED=0`` (Torque forgets completed jobs at once, its default on real sites).

Internal task states: ``Q``, ``H``, ``R``, ``E`` and ``done`` (rendered ``X``/``F`` by PBS, ``C`` by Torque).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

FAKES_DIR = Path(__file__).resolve().parent
PBS_VERSION = "23.06.06"
Output = Tuple[str, str, int]  # stdout, stderr, exit status

_DONE_ALIASES = {"done", "F", "X", "C", "finished", "completed", "exited"}
_STATE_ALIASES = {"pending": "Q", "queued": "Q", "held": "H", "running": "R", "exiting": "E"}


# ---------------------------------------------------------------------------------------------------------
# Environment and the job table
# ---------------------------------------------------------------------------------------------------------


def environ(tmp_dir: os.PathLike, flavor: str = "pbspro", base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """An environment for subprocesses: the fakes first on PATH, state and log files in ``tmp_dir``."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = str(FAKES_DIR) + os.pathsep + env.get("PATH", "")
    env["FAKE_PBS_STATE"] = str(Path(tmp_dir) / "fake_pbs_state.json")
    env["FAKE_PBS_LOG"] = str(Path(tmp_dir) / "fake_pbs_log.jsonl")
    env["FAKE_PBS_FLAVOR"] = flavor
    return env


def _state_path(path: Optional[os.PathLike] = None) -> Path:
    found = path or os.environ.get("FAKE_PBS_STATE")
    if not found:
        raise RuntimeError("FAKE_PBS_STATE is not set (use fakepbs.environ())")
    return Path(found)


def flavor() -> str:
    return os.environ.get("FAKE_PBS_FLAVOR", "pbspro")


def load(path: Optional[os.PathLike] = None) -> Dict[str, Any]:
    p = _state_path(path)
    if not p.exists():
        return {"next_seq": 0, "jobs": {}}
    return json.loads(p.read_text())


def save(table: Dict[str, Any], path: Optional[os.PathLike] = None) -> None:
    p = _state_path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, p)  # readers never see half a table


def log_call(argv: Sequence[str]) -> None:
    log = os.environ.get("FAKE_PBS_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps({"argv": [os.path.basename(argv[0])] + list(argv[1:]), "time": time.time()}) + "\n")


def calls(log: Optional[os.PathLike] = None) -> List[List[str]]:
    """Every argv the fakes were called with, in order."""
    p = Path(log or os.environ["FAKE_PBS_LOG"])
    if not p.exists():
        return []
    return [json.loads(line)["argv"] for line in p.read_text().splitlines() if line.strip()]


def _server() -> str:
    return os.environ.get("FAKE_PBS_SERVER", "vm")


def _user() -> str:
    return os.environ.get("FAKE_PBS_USER") or os.environ.get("USER") or "bob"


def _seq_of(job: Any) -> str:
    """3, "3", "3[].vm", "3.vm", "3[4].vm" -> "3"."""
    text = str(job)
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    if not digits:
        raise KeyError(f"not a job id: {job!r}")
    return digits


def set_state(job: Any, index: Optional[int], state: str, exit_status: Optional[int] = None,
              path: Optional[os.PathLike] = None) -> None:
    """Move task ``index`` of ``job`` (None for a plain job) to ``state``.

    ``state``: Q/H/R/E, or any of done/F/X/C (finished, with ``exit_status``; None = ended without one).
    """
    table = load(path)
    job_rec = table["jobs"][_seq_of(job)]
    key = "" if index is None else str(index)
    task = job_rec["tasks"][key]
    new = "done" if state in _DONE_ALIASES else _STATE_ALIASES.get(state, state)
    if new not in ("Q", "H", "R", "E", "done"):
        raise ValueError(f"unknown state {state!r}")
    now = time.time()
    if task.get("start") is None and (new in ("R", "E") or (new == "done" and exit_status is not None)):
        task["start"] = now  # an exit status means it ran; "done" without one means it never started
    if new == "done":
        task["end"] = now
        task["exit_status"] = exit_status
    else:
        task["end"], task["exit_status"] = None, None
    task["state"] = new
    save(table, path)


def jobs(path: Optional[os.PathLike] = None) -> Dict[str, Any]:
    return load(path)["jobs"]


# ---------------------------------------------------------------------------------------------------------
# qsub
# ---------------------------------------------------------------------------------------------------------


def _directives(script: str) -> List[str]:
    """``#PBS`` option words up to the first command line, as PBS reads them."""
    words: List[str] = []
    for line in Path(script).read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#PBS"):
            words += shlex.split(stripped[4:], comments=True)
        elif stripped and not stripped.startswith("#"):
            break
    return words


def _options(words: Sequence[str]) -> Dict[str, List[str]]:
    opts: Dict[str, List[str]] = {}
    it = iter(words)
    for word in it:
        if word.startswith("-") and len(word) == 2:
            opts.setdefault(word[1], []).append(next(it, ""))
    return opts


def _expand(spec: str) -> Tuple[List[int], Optional[int]]:
    """``0-9:2%3`` / ``1,10,50-52%2`` -> indices and throttle."""
    throttle = None
    if "%" in spec:
        spec, thr = spec.split("%", 1)
        throttle = int(thr)  # ValueError for "%abc", as qsub refuses it
    out: List[int] = []
    for part in spec.split(","):
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return out, throttle


def _usage_error(letter: str) -> Output:
    return "", f"qsub: invalid option -- '{letter}'\nusage: qsub [options] script\n", 2


def _parse_array(opts: Dict[str, List[str]], kind: str) -> Tuple[Optional[List[int]], Optional[int], Optional[Output]]:
    letter, other = ("J", "t") if kind == "pbspro" else ("t", "J")
    if other in opts:
        return None, None, _usage_error(other)
    if letter not in opts:
        return None, None, None
    spec = opts[letter][-1]
    try:
        indices, throttle = _expand(spec)
    except ValueError:
        return None, None, ("", "qsub: Error (15014) submitting job\n", 166)
    if kind == "pbspro" and (len(indices) < 2 or "," in spec):
        return None, None, ("", "qsub: illegal -J value\n", 2)
    return indices, throttle, None


def _unfinished_tasks(table: Dict[str, Any]) -> int:
    return sum(1 for j in table["jobs"].values() for t in j["tasks"].values() if t["state"] != "done")


def _limit_refusal(kind: str) -> Output:
    if kind == "pbspro":
        return "", "qsub: would exceed complex's per-user limit\n", 38
    return "", (f"qsub: submit error (Maximum number of jobs already in queue for user MSG=total number of jobs in "
                f"queue exceeds the queue limit: user {_user()}@{_server()}, queue batch)\n"), 1


def _down(cmd: str, kind: str) -> Output:
    if kind == "torque":
        return "", f"{cmd}: cannot connect to server {_server()} (errno=111) Connection refused\n", 1
    if cmd == "qsub":
        return "", f"Communication failure.\nqsub: cannot connect to server {_server()} (errno=15031)\n", 183
    return "", f"No route to host\n{cmd}: cannot connect to server {_server()} (errno=15010)\n", 255


def qsub(args: Sequence[str]) -> Output:
    kind = flavor()
    if os.environ.get("FAKE_PBS_DOWN"):
        return _down("qsub", kind)
    if not args:
        return "", "usage: qsub [options] script\n", 2
    script = args[-1]
    opts = _options(_directives(script) + list(args[:-1]))
    table = load()
    seq = str(table["next_seq"])
    table["next_seq"] += 1  # a refused qsub still uses up a sequence number
    indices, throttle, refusal = _parse_array(opts, kind)
    limit = os.environ.get("FAKE_PBS_MAX_QUEUED")
    count = len(indices) if indices else 1
    if refusal is None and limit and _unfinished_tasks(table) + count > int(limit):
        refusal = _limit_refusal(kind)
    if refusal is not None:
        save(table)
        return refusal
    now = time.time()
    resources = dict(kv.split("=", 1) for spec in opts.get("l", []) for kv in _split_resources(spec))
    table["jobs"][seq] = {
        "name": (opts.get("N") or [Path(script).name])[-1],
        "queue": (opts.get("q") or ["workq" if kind == "pbspro" else "batch"])[-1],
        "script": str(Path(script).resolve()),
        "submit_args": " ".join(list(args[:-1]) + [Path(script).name]),
        "resources": resources,
        "indices": indices,
        "throttle": throttle,
        "created": now,
        "deleted": False,
        "tasks": {("" if indices is None else str(i)): _new_task() for i in (indices or [None])},
    }
    save(table)
    suffix = "[]" if indices is not None else ""
    return f"{seq}{suffix}.{_server()}\n", "", 0


def _split_resources(spec: str) -> List[str]:
    # "select=1:ncpus=8:ngpus=1" is one resource; "nodes=1:ppn=8,walltime=1:00:00" are two.
    return [kv for kv in spec.split(",") if "=" in kv]


def _new_task() -> Dict[str, Any]:
    return {"state": "Q", "exit_status": None, "start": None, "end": None, "template": False}


# ---------------------------------------------------------------------------------------------------------
# Shared rendering helpers
# ---------------------------------------------------------------------------------------------------------


def _ctime(t: Optional[float]) -> str:
    return time.ctime(t if t is not None else time.time())


def _at(t: float) -> str:
    return time.strftime("%a %b %d at %H:%M", time.localtime(t))


def _hms(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _elapsed(task: Dict[str, Any]) -> float:
    if task.get("start") is None:
        return 0.0
    return (task.get("end") or time.time()) - task["start"]


def _compress(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (PBS/Torque index-list style)."""
    runs: List[List[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _parent_letter(job: Dict[str, Any], kind: str) -> str:
    states = [t["state"] for t in job["tasks"].values()]
    if all(s == "done" for s in states):
        return "F" if kind == "pbspro" else "C"
    if all(s in ("Q", "H") for s in states):
        return "Q"
    return "B" if kind == "pbspro" else "R"


def _array_exit(job: Dict[str, Any]) -> Optional[int]:
    """PBS parent Exit_status: 1 deleted, 2 some subjob failed, 0 all fine; absent before any subjob ended."""
    done = [t for t in job["tasks"].values() if t["state"] == "done"]
    if not done:
        return None
    if job["deleted"]:
        return 1
    return 2 if any(t["exit_status"] not in (0, None) for t in done) else 0


def _variable_list(job: Dict[str, Any]) -> Dict[str, str]:
    home = os.environ.get("HOME", f"/home/{_user()}")
    return {
        "PBS_O_HOME": home, "PBS_O_LANG": "C.UTF-8", "PBS_O_LOGNAME": _user(),
        "PBS_O_PATH": "/usr/local/bin:/usr/bin:/bin", "PBS_O_MAIL": f"/var/mail/{_user()}",
        "PBS_O_SHELL": "/bin/bash", "PBS_O_WORKDIR": str(Path(job["script"]).parent), "PBS_O_SYSTEM": "Linux",
        "PBS_O_QUEUE": job["queue"], "PBS_O_HOST": _server(),
    }


# ---------------------------------------------------------------------------------------------------------
# PBS Pro: qstat -f -F json [-x] [-t] ids  (key order as in tests/fixtures/openpbs-23.06)
# ---------------------------------------------------------------------------------------------------------


def _pbs_resource_list(job: Dict[str, Any]) -> Dict[str, Any]:
    res = job["resources"]
    out: Dict[str, Any] = {"ncpus": 1, "nodect": 1, "place": "free", "select": res.get("select", "1:ncpus=1")}
    if "walltime" in res:
        out["walltime"] = res["walltime"]
    return out


def _pbs_template(jid: str, job: Dict[str, Any], letter: str, task: Optional[Dict[str, Any]],
                  parent: bool) -> Dict[str, Any]:
    """The attribute set of an array parent, a queued subjob (a template copy of it, no array_index), a
    subjob deleted with its array ("Subjob finished"), or a plain job that never ran."""
    seq, server, began = _seq_of(jid), _server(), _began(job)
    finished = letter in ("F", "X")
    rec: Dict[str, Any] = {
        "Job_Name": job["name"], "Job_Owner": f"{_user()}@{server}", "job_state": letter, "queue": job["queue"],
        "server": server, "Checkpoint": "u", "ctime": _ctime(job["created"]),
        "Error_Path": f"{server}:{Path(job['script']).parent}/{job['name']}.e{seq}"
                      + (".^array_index^" if job["indices"] is not None else ""),
        "Hold_Types": "n", "Join_Path": "n", "Keep_Files": "n", "Mail_Points": "a",
        "mtime": _ctime(_last_change(job)),
        "Output_Path": f"{server}:{Path(job['script']).parent}/{job['name']}.o{seq}"
                       + (".^array_index^" if job["indices"] is not None else ""),
        "Priority": 0, "qtime": _ctime(job["created"]), "Rerunable": "True",
        "Resource_List": _pbs_resource_list(job), "schedselect": _pbs_resource_list(job)["select"],
    }
    if began is not None:
        rec["stime"] = _ctime(began)
    if finished:
        rec["obittime"] = _ctime(_last_change(job))
    rec["substate"] = {"Q": 10, "H": 20, "B": 70, "F": 91 if job["deleted"] else 92, "X": 91}.get(letter, 10)
    rec["Variable_List"] = _variable_list(job)
    rec.update({"euser": _user(), "egroup": _user(), "queue_rank": int(job["created"] * 1e6), "queue_type": "E"})
    rec["comment"] = _pbs_template_comment(job, letter, parent, began)
    rec["etime"] = _ctime(job["created"])
    exit_status = _array_exit(job) if job["indices"] is not None else (task or {}).get("exit_status")
    if exit_status is not None and (parent or finished):
        rec.update({"Stageout_status": 1, "Exit_status": exit_status})
    rec["Submit_arguments"] = job["submit_args"]
    if parent:
        rec.update(_pbs_array_attrs(job, letter))
    return rec


def _pbs_template_comment(job: Dict[str, Any], letter: str, parent: bool, began: Optional[float]) -> str:
    if not parent and letter in ("F", "X"):
        # A subjob that ends without its own run record; for a plain job deleted while queued the real
        # wording was not captured, so this is a guess.
        return "Subjob finished" if job["indices"] is not None else "Job deleted"
    if began is None:
        if job.get("throttle") == 0:
            return "Not Running: Number of concurrent running subjobs limit reached"
        return "Not Running: Insufficient amount of resource: ncpus (R: 1 A: 0 T: 0)"
    text = f"Job Array Began at {_at(began)}"
    if letter == "F":
        text += " and terminated" if job["deleted"] else (" and failed" if _array_exit(job) == 2 else " and finished")
    return text


def _pbs_array_attrs(job: Dict[str, Any], letter: str) -> Dict[str, Any]:
    tasks = job["tasks"]
    queued = [int(i) for i, t in tasks.items() if t["state"] in ("Q", "H")]
    running = sum(1 for t in tasks.values() if t["state"] in ("R", "E"))
    expired = sum(1 for t in tasks.values() if t["state"] == "done") if letter != "F" else 0
    if job["deleted"] and letter == "F":
        expired = sum(1 for t in tasks.values() if t.get("start") is not None)
    remaining: Any = _compress(queued) if queued else "-"
    if len(queued) == 1:
        remaining = queued[0]  # PBS prints a lone remaining index as a JSON number
    out: Dict[str, Any] = {
        "array": "True",
        "array_state_count": f"Queued:{len(queued)} Running:{running} Exiting:0 Expired:{expired}",
        "array_indices_submitted": _compress(job["indices"]),
        "array_indices_remaining": remaining,
    }
    if letter == "F":
        out["history_timestamp"] = int(_last_change(job))
    out.update({"project": "_pbs_project_default", "Submit_Host": _server()})
    if job.get("throttle") is not None:
        out["max_run_subjobs"] = job["throttle"]
    return out


def _pbs_ran(jid: str, job: Dict[str, Any], task: Dict[str, Any], letter: str) -> Dict[str, Any]:
    """The attribute set of a subjob (or plain job) that started: its own record with array_index."""
    seq, server = _seq_of(jid), _server()
    index = None if job["indices"] is None else int(jid[jid.index("[") + 1: jid.index("]")])
    suffix = "" if index is None else f".{index}"
    finished = letter in ("F", "X")
    rec: Dict[str, Any] = {
        "Job_Name": job["name"], "Job_Owner": f"{_user()}@{server}",
        "resources_used": {"cpupercent": 0, "cput": "00:00:00", "mem": "7220kb", "ncpus": 1, "vmem": "10380kb",
                           "walltime": _hms(_elapsed(task))},
        "job_state": letter, "queue": job["queue"], "server": server, "ctime": _ctime(job["created"]),
        "Error_Path": f"{server}:{Path(job['script']).parent}/{job['name']}.e{seq}{suffix}",
        "exec_host": f"{server}/0", "exec_vnode": f"({server}:ncpus=1)",
        "Join_Path": "n", "Keep_Files": "n", "Mail_Points": "a", "mtime": _ctime(task.get("end") or task["start"]),
        "Output_Path": f"{server}:{Path(job['script']).parent}/{job['name']}.o{seq}{suffix}",
        "Priority": 0, "qtime": _ctime(job["created"]), "Rerunable": "True",
        "Resource_List": _pbs_resource_list(job), "schedselect": _pbs_resource_list(job)["select"],
        "stime": _ctime(task["start"]),
    }
    if finished:
        rec["obittime"] = _ctime(task["end"])
    code = task["exit_status"]
    rec.update({"session_id": 17513, "jobdir": os.environ.get("HOME", "/home/" + _user()),
                "substate": 42 if not finished else (92 if code == 0 else (91 if _killed(code) else 93)),
                "Variable_List": _variable_list(job), "euser": _user(), "egroup": _user(), "hashname": jid,
                "queue_rank": int(job["created"] * 1e6), "queue_type": "E",
                "comment": _pbs_run_comment(task, letter), "etime": _ctime(job["created"]), "run_count": 1})
    if finished and code is not None:
        rec.update({"Stageout_status": 1, "Exit_status": code})
    if index is not None:
        rec.update({"array_id": f"{seq}[].{server}", "array_index": index})
    if finished:
        rec["history_timestamp"] = int(task["end"])
    rec.update({"project": "_pbs_project_default", "run_version": 1, "Submit_Host": server})
    return rec


def _killed(code: Optional[int]) -> bool:
    return code is not None and (code > 256 or code == 143)


def _pbs_run_comment(task: Dict[str, Any], letter: str) -> str:
    text = f"Job run at {_at(task['start'])} on ({_server()}:ncpus=1)"
    if letter not in ("F", "X"):
        return text
    code = task["exit_status"]
    if code == 0:
        return text + " and finished"
    if code == -29:
        return text + " and exceeded resource walltime"
    if _killed(code):
        return text + f" and terminated by {_user()}@{_server()}"
    return text + " and failed"


def _began(job: Dict[str, Any]) -> Optional[float]:
    starts = [t["start"] for t in job["tasks"].values() if t.get("start") is not None]
    return min(starts) if starts else None


def _last_change(job: Dict[str, Any]) -> float:
    stamps = [job["created"]] + [v for t in job["tasks"].values() for v in (t.get("start"), t.get("end")) if v]
    return max(stamps)


def _pbs_task_record(jid: str, job: Dict[str, Any], task: Dict[str, Any], parent_letter: str) -> Dict[str, Any]:
    state = task["state"]
    is_sub = job["indices"] is not None
    if state == "done":
        letter = "F" if (not is_sub or parent_letter == "F") else "X"
    else:
        letter = state
    if task.get("start") is None or task.get("template"):
        return _pbs_template(jid, job, letter, task, parent=False)
    return _pbs_ran(jid, job, task, letter)


def _pbs_select(table: Dict[str, Any], ids: Sequence[str], expand: bool,
                history: bool) -> Tuple[Dict[str, Any], str, int]:
    out: Dict[str, Any] = {}
    errors, rc = "", 0
    wanted = list(ids) or [f"{s}[].{_server()}" if j["indices"] is not None else f"{s}.{_server()}"
                           for s, j in table["jobs"].items()]
    for jid in wanted:
        seq = _seq_of(jid)
        job = table["jobs"].get(seq)
        sub = jid[jid.index("[") + 1: jid.index("]")] if "[" in jid else None
        if job is None or (sub and sub not in job["tasks"]):
            errors += f"qstat: Unknown Job Id {jid}\n"
            rc = 153
            continue
        parent_letter = _parent_letter(job, "pbspro")
        full = f"{seq}[].{_server()}" if job["indices"] is not None else f"{seq}.{_server()}"
        if not history and parent_letter == "F":  # subjobs of a live array (X) stay visible
            errors += f"qstat: {full} Job has finished, use -x or -H to obtain historical job information\n"
            rc = rc or 35
            continue
        if job["indices"] is None:
            out[full] = _pbs_task_record(full, job, job["tasks"][""], parent_letter)
        elif sub:
            tid = f"{seq}[{sub}].{_server()}"
            out[tid] = _pbs_task_record(tid, job, job["tasks"][sub], parent_letter)
        else:
            out[full] = _pbs_template(full, job, parent_letter, None, parent=True)
            if expand:
                for i in job["indices"]:
                    tid = f"{seq}[{i}].{_server()}"
                    out[tid] = _pbs_task_record(tid, job, job["tasks"][str(i)], parent_letter)
    return out, errors, rc


def _pbs_limits_text(flag: str, args: Sequence[str]) -> Output:
    limit = os.environ.get("FAKE_PBS_MAX_QUEUED")
    if flag == "-Bf":
        lines = [f"Server: {_server()}", "    server_state = Active", "    scheduling = True"]
        if limit:
            lines.append(f"    max_queued = [u:PBS_GENERIC={limit}]")
        lines += ["    max_array_size = 10000", f"    pbs_version = {PBS_VERSION}"]
    else:
        lines = [f"Queue: {args[-1] if args else 'workq'}", "    queue_type = Execution", "    enabled = True"]
    return "\n".join(lines) + "\n\n", "", 0


def qstat_pbspro(args: Sequence[str]) -> Output:
    if "--version" in args:
        return f"pbs_version = {PBS_VERSION}\n", "", 0
    if os.environ.get("FAKE_PBS_DOWN"):
        return _down("qstat", "pbspro")
    for flag in ("-Bf", "-Qf"):
        if flag in args:
            return _pbs_limits_text(flag, [a for a in args if not a.startswith("-")])
    if "-F" not in args:
        return "", "fake qstat: only 'qstat -f -F json [-x] [-t] ids' is implemented\n", 2
    ids = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] != "-F")]
    found, errors, rc = _pbs_select(load(), ids, expand="-t" in args, history="-x" in args)
    doc: Dict[str, Any] = {"timestamp": int(time.time()), "pbs_version": PBS_VERSION, "pbs_server": _server()}
    if found:
        doc["Jobs"] = found
    text = json.dumps(doc, indent=4, separators=(",", ":"))
    # Real qstat ends the document with a newline only when it listed jobs (h_weird_json.txt has none).
    return text + ("\n" if found else ""), errors, rc


# ---------------------------------------------------------------------------------------------------------
# Torque: qstat -x -t [ids]  (element order as in the Torque 6 captures)
# ---------------------------------------------------------------------------------------------------------


def _xml(tag: str, value: Any) -> str:
    if isinstance(value, dict):
        return f"<{tag}>" + "".join(_xml(k, v) for k, v in value.items()) + f"</{tag}>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _torque_variable_list(job: Dict[str, Any]) -> str:
    # Real Torque does not escape this element: keep it raw, as the adapter must cope with that.
    env = _variable_list(job)
    env["PBS_O_SERVER"] = _server()
    return "<Variable_List>" + ",".join(f"{k}={v}" for k, v in env.items()) + "</Variable_List>"


def _torque_letters(job: Dict[str, Any]) -> Dict[str, str]:
    """Torque shows subjobs over the %N slot limit as H (ucsf_tipcc_qstat_t_array_Q_H_altformat.txt)."""
    letters = {i: ("C" if t["state"] == "done" else t["state"]) for i, t in job["tasks"].items()}
    throttle = job.get("throttle")
    if throttle is not None:
        free = throttle - sum(1 for s in letters.values() if s in ("R", "E"))
        for i in sorted((i for i, s in letters.items() if s == "Q"), key=lambda k: int(k or 0)):
            if free > 0:
                free -= 1
            else:
                letters[i] = "H"
    return letters


def _torque_job(jid: str, job: Dict[str, Any], letter: str, task: Optional[Dict[str, Any]],
                index: Optional[str]) -> str:
    server, seq = _server(), _seq_of(jid)
    name = job["name"] if index in (None, "") else f"{job['name']}-{index}"
    suffix = "" if index in (None, "") else f"-{index}"
    ran = task is not None and task.get("start") is not None
    parts = [_xml("Job_Id", jid), _xml("Job_Name", name), _xml("Job_Owner", f"{_user()}@{server}")]
    if ran:
        parts.append(_xml("resources_used", {"cput": "00:00:00", "energy_used": 0, "mem": "2888kb",
                                             "vmem": "13988kb", "walltime": _hms(_elapsed(task))}))
    parts += [_xml("job_state", letter), _xml("queue", job["queue"]), _xml("server", server),
              _xml("Checkpoint", "u"), _xml("ctime", int(job["created"])),
              _xml("Error_Path", f"{server}:{Path(job['script']).parent}/{job['name']}.e{seq}{suffix}")]
    if ran:
        parts.append(_xml("exec_host", "node01/0"))
    if index in (None, ""):
        parts.append(_xml("Hold_Types", "n"))  # subjobs do not carry it (fyrd capture)
    parts += [_xml("Join_Path", "n"), _xml("Keep_Files", "n"), _xml("Mail_Points", "a"),
              _xml("mtime", int(_last_change(job))),
              _xml("Output_Path", f"{server}:{Path(job['script']).parent}/{job['name']}.o{seq}{suffix}"),
              _xml("Priority", 0), _xml("qtime", int(job["created"])), _xml("Rerunable", "True"),
              _xml("Resource_List", {k: v for k, v in job["resources"].items()} or {"nodect": 1})]
    if ran:
        parts.append(_xml("session_id", 2229))
    parts += [_torque_variable_list(job), _xml("euser", _user()), _xml("egroup", _user()), _xml("queue_type", "E"),
              _xml("etime", int(job["created"]))]
    if task is not None and letter == "C" and task["exit_status"] is not None:
        parts.append(_xml("exit_status", task["exit_status"]))
    parts.append(_xml("submit_args", job["submit_args"]))
    if index == "" and job["indices"] is not None:
        parts.append(_xml("job_array_request", _compress(job["indices"])))
    elif index not in (None, ""):
        parts.append(_xml("job_array_id", index))
    if ran:
        parts += [_xml("start_time", int(task["start"])), _xml("start_count", 1)]
    parts += [_xml("fault_tolerant", "False")]
    if ran and letter == "C":
        parts.append(_xml("comp_time", int(task["end"])))
    parts.append(_xml("job_radix", 0))
    if ran and letter == "C":
        parts.append(_xml("total_runtime", f"{_elapsed(task):.6f}"))
    parts += [_xml("submit_host", server), _xml("request_version", 1)]
    return "<Job>" + "".join(parts) + "</Job>"


def _torque_select(table: Dict[str, Any], ids: Sequence[str]) -> Tuple[List[str], str, int]:
    keep_completed = os.environ.get("FAKE_TORQUE_KEEP_COMPLETED") != "0"
    wanted = {_seq_of(i) for i in ids}
    out: List[str] = []
    errors, rc = "", 0
    for jid in ids:
        if _seq_of(jid) not in table["jobs"]:
            errors += f"qstat: Unknown Job Id Error {jid}\n"
            rc = 153
    for seq, job in table["jobs"].items():
        if wanted and seq not in wanted:
            continue
        letters = _torque_letters(job)
        if job["indices"] is None:
            if letters[""] != "C" or keep_completed:
                out.append(_torque_job(f"{seq}.{_server()}", job, letters[""], job["tasks"][""], None))
            continue
        parent = _parent_letter(job, "torque")
        if parent != "C" or keep_completed:
            out.append(_torque_job(f"{seq}[].{_server()}", job, parent, None, ""))
        for i in job["indices"]:
            if letters[str(i)] != "C" or keep_completed:
                out.append(_torque_job(f"{seq}[{i}].{_server()}", job, letters[str(i)], job["tasks"][str(i)], str(i)))
    return out, errors, rc


def qstat_torque(args: Sequence[str]) -> Output:
    if "--version" in args:
        return "Version: 6.1.3\n", "", 0
    if os.environ.get("FAKE_PBS_DOWN"):
        return _down("qstat", "torque")
    if "-x" not in args:
        return "", "fake qstat: only 'qstat -x [-t] [ids]' is implemented\n", 2
    found, errors, rc = _torque_select(load(), [a for a in args if not a.startswith("-")])
    if not found:
        return "", errors, rc  # Torque prints nothing at all when there is no job
    return '<?xml version="1.0"?>\n<Data>' + "".join(found) + "</Data>\n", errors, rc


def qstat(args: Sequence[str]) -> Output:
    return qstat_torque(args) if flavor() == "torque" else qstat_pbspro(args)


# ---------------------------------------------------------------------------------------------------------
# qdel
# ---------------------------------------------------------------------------------------------------------


def _delete_task(task: Dict[str, Any], whole_array: bool, now: float) -> None:
    if task["state"] in ("R", "E"):
        task.update(state="done", exit_status=271, end=now)  # 256 + SIGTERM
        return
    if task["state"] != "done":
        task.update(state="done", exit_status=None, end=now, template=True)
    elif whole_array:
        task["template"] = True  # PBS replaces already-ended subjobs by "Subjob finished" copies too


def qdel(args: Sequence[str]) -> Output:
    kind = flavor()
    if os.environ.get("FAKE_PBS_DOWN"):
        return _down("qdel", kind)
    table = load()
    errors, rc, now = "", 0, time.time()
    for jid in args:
        job = table["jobs"].get(_seq_of(jid)) if jid[:1].isdigit() else None
        sub = jid[jid.index("[") + 1: jid.index("]")] if "[" in jid else None
        if job is None or (sub and sub not in job["tasks"]):
            errors += (f"qdel: Unknown Job Id {jid}\n" if kind == "pbspro" else f"qdel: Unknown Job Id Error {jid}\n")
            rc = 153
            continue
        targets = [job["tasks"][sub]] if sub else list(job["tasks"].values())
        if all(t["state"] == "done" for t in targets):
            errors += f"qdel: Job has finished {jid}\n"
            rc = rc or 35
            continue
        if not sub:
            job["deleted"] = True
        for task in targets:
            _delete_task(task, whole_array=not sub and job["indices"] is not None, now=now)
    save(table)
    return "", errors, rc


# ---------------------------------------------------------------------------------------------------------
# qselect [-x] [-u user] [-N name]: full ids, one a line (array parents, not subjobs)
# ---------------------------------------------------------------------------------------------------------


def qselect(args: Sequence[str]) -> Output:
    if os.environ.get("FAKE_PBS_DOWN"):
        return _down("qselect", flavor())
    opts = _options([a for a in args if a != "-x"])
    table, lines = load(), []
    for seq, job in table["jobs"].items():
        finished = _parent_letter(job, "pbspro") == "F"
        if finished and "-x" not in args:
            continue
        if "N" in opts and job["name"] != opts["N"][-1]:
            continue
        if "u" in opts and opts["u"][-1] != _user():
            continue
        lines.append(f"{seq}[].{_server()}" if job["indices"] is not None else f"{seq}.{_server()}")
    return "".join(line + "\n" for line in lines), "", 0


# ---------------------------------------------------------------------------------------------------------
# qmgr -c 'list server': Torque's server attributes (the Torque adapter's limit query)
# ---------------------------------------------------------------------------------------------------------


def qmgr(args: Sequence[str]) -> Output:
    """``Server <name>`` and TAB-indented ``key = value`` lines, as Torque's qmgr lists them;
    ``FAKE_PBS_MAX_QUEUED`` shows as ``max_user_queuable``."""
    if os.environ.get("FAKE_PBS_DOWN"):
        return _down("qmgr", flavor())
    if list(args) != ["-c", "list server"]:
        return "", "fake qmgr: only \"qmgr -c 'list server'\" is implemented\n", 2
    lines = [f"Server {_server()}", "\tserver_state = Active", "\tscheduling = True", "\ttotal_jobs = 0"]
    limit = os.environ.get("FAKE_PBS_MAX_QUEUED")
    if limit:
        lines.append(f"\tmax_user_queuable = {limit}")
    lines += ["\tdefault_queue = batch", "\tpbs_version = 6.1.3"]
    return "\n".join(lines) + "\n", "", 0


# ---------------------------------------------------------------------------------------------------------
# pbsnodes: the stand-in keeps no nodes, so the cluster's shape stays unread (fit checks: tests/test_fit.py on the
# captures of tests/fixtures)
# ---------------------------------------------------------------------------------------------------------


def pbsnodes(args: Sequence[str]) -> Output:
    return "", "pbsnodes: Server has no node list\n", 1


def main(command: str) -> int:
    """Entry point of the ``qsub``/``qstat``/``qdel``/``qselect``/``qmgr`` scripts in this folder."""
    log_call(sys.argv)
    handler = {"qsub": qsub, "qstat": qstat, "qdel": qdel, "qselect": qselect, "qmgr": qmgr,
               "pbsnodes": pbsnodes}[command]
    stdout, stderr, rc = handler(sys.argv[1:])
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return rc
