"""The stand-in Slurm controller (22.05 behaviour and output formats, see tests/fixtures/slurm-22.05/).

It answers argv, as ``hpc_sweep.common.shell.stand_in`` hands it over: ``sbatch``, ``squeue``, ``sacct``, ``scancel``,
``scontrol show config|assoc_mgr`` and ``sacctmgr show qos``, with the options the Slurm adapter uses plus a few
a by-name lookup would (``--name``, ``-t all``, ``scancel --name``). Any other argv raises
:class:`UnknownCommand` and is recorded in :attr:`StandInSlurm.errors`.

What it models, and how the test drives it:

- Tasks start only when told (:meth:`start_pending`) and finish when told (:meth:`finish`): exit 0, exit 1,
  time limit (SIGTERM + the slurmstepd line in the output), node failure (SIGKILL: no exit marker).
- ``sbatch_mode``: ``ok``; ``accept_timeout`` (queued, then ``Socket timed out``, rc 1); ``accept_killed``
  (queued, then the command is killed at its time-out); ``lost_timeout`` (``Socket timed out``, nothing queued).
  The per-user cap (``MaxSubmitJobs``) refuses with the ``AssocMaxSubmitJobLimit`` text.
- ``squeue_mode``: ``ok``, ``fail`` (socket time-out, rc 1), ``hang`` (killed at the tool's time-out), ``flaky``
  (every second squeue fails: a lookup right after a query that answered).
- ``sacct_mode``: ``ok``, ``drop`` (answers, without rows: slurmdbd behind), ``fail``; ``accounting=False``: the
  site has none (``Slurm accounting storage is disabled``).
- :meth:`freeze` / :meth:`thaw`: while frozen every controller command times out; a task may still end on its
  node, the controller learns it at the thaw; an sbatch sent while frozen lands at the thaw (``lands=True``),
  before any later command is answered; sacct (slurmdbd) answers with what the controller last told it.
  ``freeze_at_sbatch = lands``: the controller freezes as the next sbatch arrives (kill -STOP slurmctld as
  sbatch starts, the reproduction of #12 item 2).
- ``hide_exit_markers``: an exit marker written from now on is kept out of sight until :meth:`reveal_markers`
  (NFS attribute caching).
- Finished tasks leave squeue at once (its default states are PENDING, RUNNING, COMPLETING) and the controller
  after MinJobAge (``squeue -t all`` shows them until then); the clock is :class:`Clock`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from hpc_sweep.schedulers.base import CommandResult

from standin.tasks import TaskProcess, Workspace

_real_time = time.time

NODE = "standin1"
PARTITION = "standin"  # its one partition, of the one node
NODE_CPUS, NODE_MEM_MB, NODE_GPUS = 16, 64000, 4
MIN_JOB_AGE_S = 300
MAX_ARRAY_SIZE = 1001
FIRST_JOB_ID = 1000
UID = 1001
SOCKET_TIMEOUT = "Socket timed out on send/recv operation"
LIMIT_ERR = ("sbatch: error: AssocMaxSubmitJobLimit\n"
             "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
             "(job submit limit, user's size and/or time limits)\n")
ACTIVE = ("PENDING", "RUNNING")
SQUEUE_CODES = set("iAFKjTrMlN")


class UnknownCommand(BaseException):
    """An argv the stand-in does not model. A BaseException: the tool must not take it for a scheduler error."""


class Clock:
    """Simulated time, standing still between explicit moves (so a schedule replays the same way, however long
    its steps take): starts at the real time, moves only by :meth:`advance`. The tasks read it through their
    ``date`` shim (``date +%s``) from ``now_file``."""

    def __init__(self, now_file: Path):
        self.now_file = now_file
        self._now = float(int(_real_time()))
        self.advance(0)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self.now_file.write_text(f"{int(self._now)}\n")


@dataclass
class Task:
    array: "ArrayJob"
    index: int
    config: Optional[str]
    attempt: Optional[int]
    state: str = "PENDING"               # what the controller knows
    own_id: Optional[str] = None         # SLURM_JOB_ID once started (the array's id for the last one to start)
    exit_code: str = "0:0"
    start: Optional[float] = None
    end: Optional[float] = None
    process: Optional[TaskProcess] = None
    ended_unseen: Optional[tuple] = None  # (state, exit code, end) that happened while the controller was frozen
    trainer_started: bool = False
    scancelled: bool = False
    exit_markers: List[Path] = field(default_factory=list)  # written by its job script as it ended

    @property
    def task_id(self) -> str:
        return f"{self.array.job_id}_{self.index}"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


@dataclass
class ArrayJob:
    job_id: str
    name: str
    script: str
    workdir: str
    output: str
    time_limit_s: Optional[int]
    throttle: Optional[int]
    submitted: float
    foreign: bool = False
    tasks: List[Task] = field(default_factory=list)


@dataclass
class Accepted:
    """One task the stand-in accepted, with the (config, attempt) its map line named at that moment."""

    job_id: str
    index: int
    name: str
    config: Optional[str]
    attempt: Optional[int]


class StandInSlurm:
    def __init__(self, workspace: Workspace, clock: Clock, user: str, cap: Optional[int] = None,
                 accounting: bool = True):
        self.ws, self.clock, self.user = workspace, clock, user
        self.cap, self.accounting = cap, accounting
        self.sbatch_mode, self.sacct_mode = "ok", "ok"
        self.squeue_mode = "ok"
        self.frozen = False
        self.frozen_sbatch_lands = False
        self.freeze_at_sbatch: Optional[bool] = None  # freeze when the next sbatch arrives (lands or not)
        self.hide_exit_markers = False
        self.arrays: Dict[str, ArrayJob] = {}
        self.accepted: List[Accepted] = []
        self.landing: List[tuple] = []       # sbatch argv sent while frozen, landing at the thaw
        self.calls: List[List[str]] = []
        self.errors: List[str] = []
        self.scancelled_ids: List[str] = []
        self.refused = 0  # sbatch refusals at the cap
        self._next_id = FIRST_JOB_ID

    @property
    def squeue_mode(self) -> str:
        return self._squeue_mode

    @squeue_mode.setter
    def squeue_mode(self, mode: str) -> None:
        self._squeue_mode, self._squeue_answers = mode, 0  # flaky: the first squeue from now on answers

    # -- the shell hook ---------------------------------------------------------------------------------------
    def __call__(self, argv: Sequence[str], cwd: Optional[str] = None, timeout: float = 120) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        handler = {"sbatch": self._sbatch, "squeue": self._squeue, "sacct": self._sacct, "scancel": self._scancel,
                   "scontrol": self._scontrol, "sacctmgr": self._sacctmgr,
                   "sinfo": self._sinfo}.get(os.path.basename(argv[0]))
        if handler is None:
            self._unknown(argv, "no such command here")
        return handler(argv, cwd)

    def _unknown(self, argv: Sequence[str], why: str):
        message = f"stand-in Slurm does not model {argv!r}: {why}"
        self.errors.append(message)
        raise UnknownCommand(message)

    @staticmethod
    def _result(argv, rc: int = 0, stdout: str = "", stderr: str = "") -> CommandResult:
        return CommandResult(argv=list(argv), returncode=rc, stdout=stdout, stderr=stderr)

    def _controller_timeout(self, argv, what: str) -> CommandResult:
        """What a client prints when slurmctld does not answer (slurm_perror: no program prefix)."""
        return self._result(argv, 1, stderr=f"{what}: {SOCKET_TIMEOUT}\n")

    # -- sbatch -----------------------------------------------------------------------------------------------
    def _sbatch(self, argv, cwd) -> CommandResult:
        options, script = self._sbatch_options(argv)
        text = Path(script).read_text()  # sbatch sends the script's text: the job runs this copy
        if self.freeze_at_sbatch is not None:
            self.freeze(self.freeze_at_sbatch)
            self.freeze_at_sbatch = None
        if self.frozen:
            if self.frozen_sbatch_lands:
                self.landing.append((options, script, text, cwd, _map_entries(script)))
            return self._result(argv, 1, stderr=f"sbatch: error: Batch job submission failed: {SOCKET_TIMEOUT}\n")
        if self.sbatch_mode == "lost_timeout":
            return self._result(argv, 1, stderr=f"sbatch: error: Batch job submission failed: {SOCKET_TIMEOUT}\n")
        job, refusal = self._accept(options, script, text, cwd)
        if refusal:
            return self._result(argv, 1, stderr=refusal)
        if self.sbatch_mode == "accept_timeout":
            return self._result(argv, 1, stderr=f"sbatch: error: Batch job submission failed: {SOCKET_TIMEOUT}\n")
        if self.sbatch_mode == "accept_killed":
            raise subprocess.TimeoutExpired(argv, 150)
        return self._result(argv, 0, stdout=f"{job.job_id}\n" if "--parsable" in options else
                            f"Submitted batch job {job.job_id}\n")

    def _sbatch_options(self, argv) -> tuple:
        options: Dict[str, str] = {}
        args = argv[1:]
        while args and args[0].startswith("-"):
            arg = args.pop(0)
            if arg == "--parsable":
                options[arg] = ""
            elif arg.startswith(("--chdir=", "--job-name=", "--array=")):
                key, _, value = arg.partition("=")
                options[key] = value
            elif arg in ("-D", "-J", "-a") and args:
                options[{"-D": "--chdir", "-J": "--job-name", "-a": "--array"}[arg]] = args.pop(0)
            else:
                self._unknown(argv, f"sbatch option {arg}")
        if len(args) != 1:
            self._unknown(argv, "sbatch needs exactly one script (options must come before it)")
        return options, args[0]

    def _accept(self, options: dict, script: str, text: str, cwd: Optional[str],
                entries: Optional[Dict[int, tuple]] = None) -> tuple:
        """Queue the script's array; (job, None), or (None, sbatch's refusal text) at the per-user cap. The
        (config, attempt) of each task: ``entries``, or the map beside the script as it is now."""
        directives = _directives(text)
        directives.update({k: v for k, v in options.items() if k != "--parsable"})
        indices, throttle = _array(directives.get("--array"))
        if self.cap is not None and self.active_count() + len(indices) > self.cap:
            self.refused += 1
            return None, LIMIT_ERR
        workdir = directives.get("--chdir") or cwd or os.getcwd()
        job_id = self._new_id()
        stored = self.ws.root / "spool" / f"job{job_id}.sh"  # slurmctld's copy of the script
        stored.parent.mkdir(exist_ok=True)
        stored.write_text(text)
        job = ArrayJob(job_id=job_id, name=directives.get("--job-name", Path(script).name), script=str(stored),
                       workdir=workdir, output=directives.get("--output", "slurm-%A_%a.out"),
                       time_limit_s=_duration(directives.get("--time")), throttle=throttle,
                       submitted=self.clock.now())
        entries = _map_entries(script) if entries is None else entries
        for index in indices:
            config, attempt = entries.get(index, (None, None))
            job.tasks.append(Task(job, index, config, attempt))
            self.accepted.append(Accepted(job.job_id, index, job.name, config, attempt))
        self.arrays[job.job_id] = job
        return job, None

    def add_foreign_job(self, name: str = "handmade") -> ArrayJob:
        """A plain job the user submitted by hand: pending for ever, counted against the cap, never ours."""
        job = ArrayJob(job_id=self._new_id(), name=name, script="", workdir="/", output="", time_limit_s=3600,
                       throttle=None, submitted=self.clock.now(), foreign=True)
        job.tasks.append(Task(job, -1, None, None))
        self.arrays[job.job_id] = job
        return job

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id - 1)

    # -- squeue -----------------------------------------------------------------------------------------------
    def _squeue(self, argv, cwd) -> CommandResult:
        opts = _parse(argv, flags={"--me", "-r", "--array", "-h", "--noheader"},
                      valued={"-o": "fmt", "--format": "fmt", "-u": "user", "--user": "user", "-n": "name",
                              "--name": "name", "-t": "states", "--states": "states", "-j": "jobs", "--jobs": "jobs"},
                      unknown=lambda why: self._unknown(argv, why))
        if not ({"-r", "--array"} & opts["flags"]) or not ({"-h", "--noheader"} & opts["flags"]):
            self._unknown(argv, "squeue without -r (folded pending arrays) or -h is not modelled")
        if "--me" not in opts["flags"] and opts.get("user") != self.user:
            self._unknown(argv, "squeue of anything but the user's own jobs")
        self._squeue_answers += 1
        flaky = self.squeue_mode == "flaky" and self._squeue_answers % 2 == 0
        if self.frozen or self.squeue_mode == "fail" or flaky:
            return self._controller_timeout(argv, "slurm_load_jobs error")
        if self.squeue_mode == "hang":
            raise subprocess.TimeoutExpired(argv, 120)
        codes = _squeue_codes(opts.get("fmt"), argv, self._unknown)
        states = opts.get("states", "")
        all_states = states.lower() == "all"
        if states and not all_states:
            self._unknown(argv, "squeue -t other than 'all'")
        names = set(opts["name"].split(",")) if "name" in opts else None
        jobs = set(opts["jobs"].split(",")) if "jobs" in opts else None
        held = self._tasks_in_controller()
        if jobs is not None and not any({t.array.job_id, t.task_id, t.own_id} & jobs for t in held):
            return self._result(argv, 1, stderr="slurm_load_jobs error: Invalid job id specified\n")
        lines = []
        for task in held:
            if not (task.active or all_states):
                continue
            if names is not None and task.array.name not in names:
                continue
            if jobs is not None and not ({task.array.job_id, task.task_id, task.own_id} & jobs):
                continue
            lines.append(self._squeue_line(task, codes))
        return self._result(argv, 0, stdout="".join(line + "\n" for line in lines))

    def _tasks_in_controller(self) -> List[Task]:
        """Every task the controller still holds: finished ones only until MinJobAge has passed."""
        now = self.clock.now()
        running = [t for job in self.arrays.values() for t in job.tasks if t.state == "RUNNING"]
        pending = [t for job in self.arrays.values() for t in job.tasks if t.state == "PENDING"]
        done = [t for job in self.arrays.values() for t in job.tasks
                if not t.active and t.end is not None and now - t.end < MIN_JOB_AGE_S]
        return pending + running + done  # squeue lists pending before running, as in squeue_pipe_r.txt

    def _squeue_line(self, task: Task, codes: List[tuple]) -> str:
        job, now = task.array, self.clock.now()
        plain = job.foreign
        values = {
            "i": job.job_id if plain else task.task_id,
            "A": task.own_id or job.job_id,
            "F": job.job_id,
            "K": "N/A" if plain else str(task.index),
            "j": job.name,
            "T": task.state,
            "r": self._pending_reason(task) if task.state == "PENDING" else "None",
            "M": _squeue_time(now - task.start if task.start is not None and task.state == "RUNNING" else
                              (task.end - task.start if task.start is not None and task.end is not None else 0)),
            "l": _squeue_time(job.time_limit_s) if job.time_limit_s else "UNLIMITED",
            "N": NODE if task.start is not None else "",
        }
        return "".join(literal + (values[code] if code else "") for literal, code in codes)

    def _pending_reason(self, task: Task) -> str:
        job = task.array
        if job.throttle is not None and sum(t.state == "RUNNING" for t in job.tasks) >= job.throttle:
            return "JobArrayTaskLimit"
        return "Priority"

    # -- sacct ------------------------------------------------------------------------------------------------
    def _sacct(self, argv, cwd) -> CommandResult:
        opts = _parse(argv, flags={"-X", "--allocations", "-n", "--noheader", "-P", "--parsable2", "-a",
                                   "--allusers"},
                      valued={"-j": "jobs", "--jobs": "jobs", "--format": "fmt", "-o": "fmt", "--name": "name",
                              "-S": "start", "--starttime": "start", "-E": "end", "--endtime": "end", "-u": "user",
                              "--user": "user"},
                      unknown=lambda why: self._unknown(argv, why))
        if not ({"-X", "--allocations"} & opts["flags"]) or not ({"-P", "--parsable2"} & opts["flags"]):
            self._unknown(argv, "sacct without -X and -P is not modelled")
        if "jobs" not in opts and "name" not in opts:
            self._unknown(argv, "sacct without -j or --name would list every job since midnight")
        if not self.accounting:
            return self._result(argv, 1, stderr="Slurm accounting storage is disabled\n")
        if self.sacct_mode == "fail":
            return self._result(argv, 1, stderr="sacct: error: Problem talking to the database: Connection refused\n")
        fields = [f.strip() for f in opts.get("fmt", "JobID,JobName,State,ExitCode").split(",")]
        for name in fields:
            if name.lower() not in _SACCT_FIELDS:
                self._unknown(argv, f"sacct field {name}")
        rows = [] if self.sacct_mode == "drop" else self._sacct_rows(opts, argv)
        header = [] if {"-n", "--noheader"} & opts["flags"] else ["|".join(fields)]
        lines = header + ["|".join(row[name.lower()] for name in fields) for row in rows]
        return self._result(argv, 0, stdout="".join(line + "\n" for line in lines))

    def _sacct_rows(self, opts: dict, argv) -> List[dict]:
        wanted = set(opts["jobs"].split(",")) if "jobs" in opts else None
        names = set(opts["name"].split(",")) if "name" in opts else None
        # Without -j, sacct lists jobs since -S, by default since midnight (options.c); with -j, no window.
        since = None if wanted is not None else _since(opts.get("start"), self.clock.now(), argv, self._unknown)
        rows = []
        for job in self.arrays.values():
            if names is not None and job.name not in names:
                continue
            if since is not None and job.submitted < since:
                continue
            chosen = [t for t in job.tasks if wanted is None or {job.job_id, t.task_id, t.own_id} & wanted]
            never_started = [t for t in chosen if t.state == "PENDING"]
            for task in chosen:
                if task.state != "PENDING":
                    rows.append(self._sacct_row(task, task.task_id if not job.foreign else job.job_id))
            if never_started:  # the array's meta record: its never-started tasks folded, as in sacct_X_P.txt
                spec = _fold([t.index for t in never_started])
                first = never_started[0]
                rows.append(self._sacct_row(first, f"{job.job_id}_[{spec}]" if not job.foreign else job.job_id,
                                            raw=job.job_id))
        return rows

    def _sacct_row(self, task: Task, job_id: str, raw: Optional[str] = None) -> dict:
        started = task.start is not None
        state = task.state if task.state != "CANCELLED" else f"CANCELLED by {UID}"
        end = task.end
        elapsed = (end if end is not None else self.clock.now()) - task.start if started else 0
        return {
            "jobid": job_id, "jobidraw": raw or task.own_id or task.array.job_id, "jobname": task.array.name,
            "state": state, "exitcode": task.exit_code, "elapsed": _sacct_time(elapsed),
            "start": _iso(task.start) if started else ("None" if end is not None else "Unknown"),
            "end": _iso(end) if end is not None else "Unknown",
            "alloctres": "billing=1,cpu=1,mem=50M,node=1" if started else "",
            "nodelist": NODE if started else "None assigned",
            "user": self.user, "submit": _iso(task.array.submitted),
        }

    # -- scancel ----------------------------------------------------------------------------------------------
    def _scancel(self, argv, cwd) -> CommandResult:
        opts = _parse(argv, flags={"--me", "-Q", "--quiet"},
                      valued={"-n": "name", "--name": "name", "-u": "user", "--user": "user"},
                      unknown=lambda why: self._unknown(argv, why), positional=True)
        ids = opts["positional"]
        if not ids and "name" not in opts:
            self._unknown(argv, "scancel without ids or --name")
        if "name" in opts and not ("--me" in opts["flags"] or opts.get("user") == self.user):
            self._unknown(argv, "scancel --name without --me or -u <user> would reach other users' jobs")
        if self.frozen:
            return self._result(argv, 1, stderr="".join(f"scancel: error: Kill job error on job id {i}: "
                                                         f"{SOCKET_TIMEOUT}\n" for i in ids or ["(name)"]))
        self.scancelled_ids += ids
        errors = []
        targets: List[Task] = []
        for job_id in ids:
            found = self._tasks_of_id(job_id)
            if not found:
                errors.append(f"scancel: error: Kill job error on job id {job_id}: Invalid job id specified")
            elif not any(t.active for t in found):
                errors.append(f"scancel: error: Kill job error on job id {job_id}: "
                              "Job/step already completing or completed")
            targets += found
        if "name" in opts:
            targets += [t for job in self.arrays.values() if job.name in opts["name"].split(",") for t in job.tasks]
        for task in targets:
            if task.active:
                before = self._exit_markers(task)
                self._cancel_task(task)
                self._note_exit_markers(task, before)
        return self._result(argv, 1 if errors else 0, stderr="".join(e + "\n" for e in errors))

    def _tasks_of_id(self, job_id: str) -> List[Task]:
        if not re.fullmatch(r"\d+(_\d+)?", job_id):
            self._unknown(["scancel", job_id], "a job id that is neither 123 nor 123_4")
        job = self.arrays.get(job_id)
        if job is not None:
            return list(job.tasks)
        return [t for j in self.arrays.values() for t in j.tasks if job_id in (t.task_id, t.own_id)]

    def _cancel_task(self, task: Task) -> None:
        task.scancelled = True
        if task.state == "PENDING":
            self._end(task, "CANCELLED", "0:0", started=False)
            return
        if task.process is not None and task.process.alive():
            self._write_output(task, f"slurmstepd: error: *** JOB {task.own_id} ON {NODE} CANCELLED AT "
                                     f"{_iso(self.clock.now())} ***\n")
            self._stop(task, signal.SIGTERM)
        self._end(task, "CANCELLED", "0:15")

    # -- scontrol / sacctmgr ----------------------------------------------------------------------------------
    def _scontrol(self, argv, cwd) -> CommandResult:
        if argv[1:3] == ["show", "config"] and len(argv) == 3:
            if self.frozen:
                return self._controller_timeout(argv, "slurm_load_ctl_conf error")
            return self._result(argv, 0, stdout=(
                f"Configuration data as of {_iso(self.clock.now())}\n"
                f"MaxArraySize            = {MAX_ARRAY_SIZE}\nMaxJobCount             = 10000\n"
                f"MinJobAge               = {MIN_JOB_AGE_S} sec\n"))
        if argv[1:3] == ["show", "assoc_mgr"] and f"users={self.user}" in argv[3:] and \
                set(argv[3:]) <= {f"users={self.user}", "flags=assoc"}:
            if self.frozen:
                return self._controller_timeout(argv, "slurm_load_assoc_mgr_info error")
            limit = "" if self.cap is None else f"{self.cap}({self.active_count()})"
            return self._result(argv, 0, stdout=(
                "Current Association Manager state\n\nAssociation Records\n\n"
                f"ClusterName=standin Account=research UserName={self.user}({UID}) Partition= Priority=0 ID=5\n"
                "    GrpJobs=N(0) GrpJobsAccrue=N(0)\n    GrpSubmitJobs=N(0) GrpWall=N(0.00)\n"
                f"    MaxJobs= MaxJobsAccrue= MaxSubmitJobs={limit} MaxWallPJ=\n"))
        if argv[1:] == ["show", "partition"]:
            return self._show_partition(argv)
        self._unknown(argv, "scontrol subcommand")

    def _sacctmgr(self, argv, cwd) -> CommandResult:
        if argv[1:] == ["-n", "-P", "show", "qos", "format=Name,MaxSubmitPU"]:
            return self._result(argv, 0, stdout="normal|\n")
        if argv[1:] == ["-n", "-P", "show", "qos", "format=Name,MaxWall,MaxTRES,MaxTRESPerNode,MaxSubmitPU,Flags"]:
            return self._result(argv, 0, stdout="normal|||||\n")  # as sacctmgr_qos_shape.txt, without limits
        if argv[1:] == ["-n", "-P", "show", "assoc", "where", f"user={self.user}",
                        "format=Cluster,Account,User,Partition,QOS,DefaultQOS,MaxWall,MaxTRES"]:
            return self._result(argv, 0, stdout=f"standin|research|{self.user}||normal|||\n")  # sacctmgr_assoc_shape.txt
        self._unknown(argv, "sacctmgr query")

    # -- the cluster's shape (the fit check's queries): one partition of one node, as sinfo_shape.txt and
    # scontrol_show_partition.txt say it -------------------------------------------------------------------------
    def _sinfo(self, argv, cwd) -> CommandResult:
        if argv[1:] != ["-h", "-e", "-o", "%P|%a|%l|%D|%c|%m|%G|%T|%f"]:
            self._unknown(argv, "sinfo query")
        if self.frozen:
            return self._controller_timeout(argv, "slurm_load_partitions error")
        return self._result(argv, 0, stdout=f"{PARTITION}*|up|infinite|1|{NODE_CPUS}|{NODE_MEM_MB}|gpu:{NODE_GPUS}|"
                                            "idle|(null)\n")

    def _show_partition(self, argv) -> CommandResult:
        if self.frozen:
            return self._controller_timeout(argv, "slurm_load_partitions error")
        return self._result(argv, 0, stdout=(
            f"PartitionName={PARTITION}\n   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL\n"
            "   AllocNodes=ALL Default=YES QoS=N/A\n   DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0\n"
            "   MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED\n"
            f"   Nodes={NODE}\n   State=UP TotalCPUs={NODE_CPUS} TotalNodes=1 SelectTypeParameters=NONE\n"
            "   JobDefaults=(null)\n   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED\n"
            f"   TRES=cpu={NODE_CPUS},mem={NODE_MEM_MB}M,node=1,billing={NODE_CPUS},gres/gpu={NODE_GPUS}\n\n"))

    # -- driving the cluster (the test's side) ----------------------------------------------------------------
    def active_count(self) -> int:
        return sum(t.active for job in self.arrays.values() for t in job.tasks)

    def tasks(self, foreign: bool = False) -> List[Task]:
        return [t for job in self.arrays.values() if job.foreign == foreign for t in job.tasks]

    def running(self) -> List[Task]:
        return [t for t in self.tasks() if t.state == "RUNNING" and t.process is not None and t.process.alive()]

    def start_pending(self, limit: Optional[int] = None) -> List[Task]:
        """Start up to ``limit`` pending tasks (all by default), oldest first, within each array's throttle; wait
        until each has started its trainer or ended. Nothing starts while the controller is frozen."""
        if self.frozen:
            return []
        started = []
        for task in self.tasks():
            if limit is not None and len(started) >= limit:
                break
            job = task.array
            if task.state != "PENDING" or (job.throttle is not None and
                                           sum(t.state == "RUNNING" for t in job.tasks) >= job.throttle):
                continue
            self._launch(task)
            started.append(task)
        return started

    def _launch(self, task: Task) -> None:
        job = task.array
        unstarted = [t for t in job.tasks if t.state == "PENDING" and t.own_id is None]
        task.own_id = job.job_id if unstarted == [task] else self._new_id()
        task.state, task.start = "RUNNING", self.clock.now()
        env = {"PATH": f"{self.ws.bin}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
               "LANG": "C.UTF-8", "USER": self.user, "SLURM_JOB_ID": task.own_id, "SLURM_ARRAY_JOB_ID": job.job_id,
               "SLURM_ARRAY_TASK_ID": str(task.index), "SLURM_JOB_NAME": job.name, "SLURM_SUBMIT_DIR": job.workdir,
               "SLURMD_NODENAME": NODE, "SLURM_CLUSTER_NAME": "standin"}
        task.process = TaskProcess(self.ws, job.script, job.workdir, self._output_path(task), env, task.own_id)
        task.trainer_started = task.process.wait_started()
        if not task.trainer_started:  # the script ended by itself (no config for its index, a claim refused ...)
            code = task.process.wait()
            self._end(task, "COMPLETED" if code == 0 else "FAILED", f"{code}:0")

    def finish(self, task: Task, outcome: str) -> None:
        """End a running task: ``exit0``, ``exit1``, ``timeout`` (the controller's time limit: not while frozen)
        or ``node_fail``. While frozen the controller learns the end at the thaw."""
        before = self._exit_markers(task)
        self._finish(task, outcome)
        self._note_exit_markers(task, before)

    def _finish(self, task: Task, outcome: str) -> None:
        if outcome in ("exit0", "exit1"):
            code = task.process.release(0 if outcome == "exit0" else 1)
            self._end(task, "COMPLETED" if code == 0 else "FAILED", f"{code}:0")
        elif outcome == "timeout":
            assert not self.frozen, "a frozen controller enforces no time limit"
            self._write_output(task, f"slurmstepd: error: *** JOB {task.own_id} ON {NODE} CANCELLED AT "
                                     f"{_iso(self.clock.now())} DUE TO TIME LIMIT ***\n")
            self._stop(task, signal.SIGTERM)
            self._end(task, "TIMEOUT", "0:0")
        elif outcome == "node_fail":
            task.process.kill()
            self._end(task, "NODE_FAIL", "0:0")
        else:
            raise ValueError(outcome)

    def _note_exit_markers(self, task: Task, before: set) -> None:
        task.exit_markers = sorted(self._exit_markers(task) - before)
        if self.hide_exit_markers:
            self._hide(task)

    def _end(self, task: Task, state: str, exit_code: str, started: bool = True) -> None:
        end = self.clock.now()
        if task.process is not None:
            task.process.remove_gate()
        if self.frozen and started:
            task.ended_unseen = (state, exit_code, end)
            return
        task.state, task.exit_code, task.end = state, exit_code, end

    def _stop(self, task: Task, sig: int) -> None:
        task.process.signal(sig)
        task.process.wait(timeout=10)  # then SIGKILL, as slurmstepd after KillWait

    def freeze(self, lands: bool) -> None:
        self.frozen, self.frozen_sbatch_lands = True, lands

    def thaw(self) -> None:
        """The controller answers again: first the submissions sent meanwhile land, then the ends it missed."""
        self.frozen = False
        for options, script, text, cwd, entries in self.landing:
            self._accept(options, script, text, cwd, entries)  # refused at the cap: lost, as sbatch already gave up
        self.landing = []
        for task in self.tasks():
            if task.ended_unseen is not None:
                task.state, task.exit_code, task.end = task.ended_unseen
                task.ended_unseen = None

    def reveal_markers(self) -> None:
        for hidden in sorted(self.ws.hidden.iterdir()):
            target = Path(hidden.read_text().splitlines()[0]) if hidden.suffix == ".where" else None
            if target is not None:
                os.replace(hidden.with_suffix(""), target)
                hidden.unlink()

    def _exit_markers(self, task: Task) -> set:
        folder = Path(task.array.workdir) / ".hpc_sweep" / "markers"
        return {p for p in folder.glob("*.exit")} if folder.is_dir() else set()

    def visible_exit_marker(self, task: Task) -> bool:
        return any(marker.exists() for marker in task.exit_markers)

    def _hide(self, task: Task) -> None:
        for marker in task.exit_markers:
            kept = self.ws.hidden / f"{task.own_id}.{marker.name}"
            os.replace(marker, kept)
            kept.with_name(kept.name + ".where").write_text(f"{marker}\n")

    def _output_path(self, task: Task) -> Path:
        job = task.array
        path = re.sub(r"%(.)", lambda m: {"x": job.name, "a": str(task.index), "A": job.job_id,
                                          "j": task.own_id or job.job_id, "%": "%"}.get(m.group(1), m.group(0)),
                      job.output)
        return Path(path) if os.path.isabs(path) else Path(job.workdir) / path

    def _write_output(self, task: Task, text: str) -> None:
        with open(self._output_path(task), "a", encoding="utf-8") as handle:
            handle.write(text)

    def cleanup(self) -> None:
        """SIGKILL every task process group still alive (each by the pid the stand-in started) and reap it."""
        for task in self.tasks():
            if task.process is not None:
                task.process.kill()
                task.process.remove_gate()


# ------------------------------------------------------------------------------------------------------------
# argv and script reading

_SACCT_FIELDS = {"jobid", "jobidraw", "jobname", "state", "exitcode", "elapsed", "start", "end", "alloctres",
                 "nodelist", "user", "submit"}


def _parse(argv, flags: set, valued: Dict[str, str], unknown, positional: bool = False) -> dict:
    """Options of a query: flags, ``-x VALUE`` / ``--long=VALUE`` / ``--long VALUE``; anything else is unknown."""
    out: dict = {"flags": set(), "positional": []}
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        key, eq, value = arg.partition("=")
        if arg in flags:
            out["flags"].add(arg)
        elif eq and key in valued and key.startswith("--"):
            out[valued[key]] = value
        elif arg in valued and args:
            out[valued[arg]] = args.pop(0)
        elif positional and not arg.startswith("-"):
            out["positional"].append(arg)
        else:
            unknown(f"option {arg}")
    return out


def _squeue_codes(fmt: Optional[str], argv, unknown) -> List[tuple]:
    """``%i|%A`` -> [("", "i"), ("|", "A")]; widths (``%.18i``) are not modelled."""
    if not fmt:
        unknown(argv, "squeue without -o")
    pieces = re.findall(r"([^%]*)%([A-Za-z])", fmt)
    rest = re.sub(r"[^%]*%[A-Za-z]", "", fmt)
    if rest or any(code not in SQUEUE_CODES for _, code in pieces):
        unknown(argv, f"squeue format {fmt!r}")
    return pieces


def _directives(text: str) -> Dict[str, str]:
    out = {}
    for line in text.splitlines():
        match = re.match(r"#SBATCH\s+(--[\w-]+)(?:=(.*))?$", line.strip())
        if match:
            out[match.group(1)] = (match.group(2) or "").strip()
    return out


def _array(spec: Optional[str]) -> tuple:
    """``0-4%2`` -> ([0, 1, 2, 3, 4], 2); no --array: one task, index 0 (a plain job is not modelled)."""
    if spec is None:
        return [0], None
    body, _, throttle = spec.partition("%")
    indices = set()
    for part in body.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not match:
            raise ValueError(f"stand-in: bad --array {spec!r}")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        indices.update(range(first, last + 1, int(match.group(3) or 1)))
    return sorted(indices), int(throttle) if throttle else None


def _map_entries(script: str) -> Dict[int, tuple]:
    """index -> (config, attempt) from the map the script reads: ``<job>.map`` beside ``<job>.sh`` (the README's
    job-script contract: tab-separated index, config, attempt, ...)."""
    path = Path(script).with_suffix(".map")
    if not path.exists():
        return {}
    entries = {}
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[0].isdigit():
            entries[int(fields[0])] = (fields[1], int(fields[2]))
    return entries


def _since(text: Optional[str], now: float, argv, unknown) -> float:
    """sacct -S: ``2026-11-23``, ``2026-11-23T12:00[:00]``, ``now-2days`` (or hours, minutes, seconds);
    none: midnight of today."""
    if text is None:
        return time.mktime(time.localtime(now)[:3] + (0, 0, 0, 0, 0, -1))
    match = re.fullmatch(r"now-(\d+)(days|hours|minutes|seconds)", text)
    if match:
        unit = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}[match.group(2)]
        return now - int(match.group(1)) * unit
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return time.mktime(time.strptime(text, fmt))
        except ValueError:
            continue
    unknown(argv, f"sacct -S {text!r}")


def _duration(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return ((int(days or 0) * 24 + parts[0]) * 60 + parts[1]) * 60 + parts[2]


def _squeue_time(seconds: float) -> str:
    """squeue's %M/%l: ``0:00``, ``1:02:03``, ``1-00:00:00``."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def _sacct_time(seconds: float) -> str:
    """sacct's Elapsed: ``00:00:02``, ``1-00:00:00``."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stamp))


def _fold(indices: List[int]) -> str:
    """[0, 1, 2, 5] -> ``0-2,5``."""
    parts, run = [], []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
        else:
            if run:
                parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = [i]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)
