"""The local backend's runner: a detached process that starts queued runs as GPU or CPU slots free up.

Commands (what :class:`hpc_sweep.schedulers.local.LocalScheduler` builds)::

    python -m hpc_sweep.local.runner submit --sweep DIR --name JOB SCRIPT INDICES   # queue, print "local-<n>"
    python -m hpc_sweep.local.runner status --sweep DIR                             # JSON of every task
    python -m hpc_sweep.local.runner cancel --sweep DIR ID...                       # submissions or tasks
    python -m hpc_sweep.local.runner run    --sweep DIR                             # the runner itself

The spool and its files: :mod:`hpc_sweep.local.spool`; process identity and signalling:
:mod:`hpc_sweep.local.processes`; GPU and CPU slots: :mod:`hpc_sweep.local.placement`.

Crash safety: a run's launch is written to the spool (with a random launch token placed in its environment)
before the process exists, and its pid and process start time right after. A runner restarted after ``kill -9``
adopts runs whose (pid, start time) still match, finds a run launched but not yet recorded by its token, and reads
the exit code of runs that ended meanwhile from the job script's exit marker. No run is ever started twice.

Each run is ``bash SCRIPT`` in its own session (process group = its pid) with ``HPC_SWEEP_INDEX`` and
``HPC_SWEEP_TASK_ID`` set; the job script reads its config from the map and writes the markers. Walltime and
cancel: SIGTERM to the script (which forwards it to the command), SIGKILL to the whole group after a grace.

Knobs (environment, read by the runner process): ``HPC_SWEEP_NVIDIA_SMI`` (the nvidia-smi command line; a
``--query-gpu=`` in it says which fields it prints), ``HPC_SWEEP_RUNNER_TICK`` (s, 1), ``HPC_SWEEP_RUNNER_IDLE``
(s a runner with nothing to do waits before exiting, 10), ``HPC_SWEEP_RUNNER_GRACE`` (s between SIGTERM and
SIGKILL, 10), ``HPC_SWEEP_GPU_QUERY_S`` (s between nvidia-smi queries, 5).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from hpc_sweep.common.durations import iso_time
from hpc_sweep.local.placement import Placement, Settings, _wait_reason, nvidia_smi_command, place, query_gpus
from hpc_sweep.local.processes import LAUNCH_ENV, find_launched, is_alive, proc_start, session_members, signal_run
from hpc_sweep.local.spool import Spool, ensure_runner, exit_marker_code, has_work, outcome, public, start_runner

WALLTIME_HEADER = re.compile(r"^# hpc-sweep-walltime:\s*(\d+)\s*$", re.MULTILINE)
INDEX_ENV, TASK_ID_ENV = "HPC_SWEEP_INDEX", "HPC_SWEEP_TASK_ID"
NO_EXIT_MARKER = "ended while no runner watched it and left no exit marker (killed, or the machine restarted)"


# -- helpers ---------------------------------------------------------------------------------------------------------


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def log(message: str) -> None:
    """The runner's stderr is runner.log."""
    sys.stderr.write(f"{iso_time(time.time())} [{os.getpid()}] {message}\n")
    sys.stderr.flush()


def read_walltime(script: Path) -> Optional[int]:
    """The ``# hpc-sweep-walltime: SECONDS`` line the local template writes into the script's header."""
    try:
        head = script.read_text(encoding="utf-8", errors="replace")[:8192]
    except OSError:
        return None
    match = WALLTIME_HEADER.search(head)
    return int(match.group(1)) if match else None


# -- settings --------------------------------------------------------------------------------------------------------


def load_settings(sweep: Path) -> Settings:
    """The sweep's site profile decides the slots; a profile that cannot be read leaves the defaults."""
    profile = None
    try:
        from hpc_sweep.session import Session

        session = Session.open(sweep)
        try:
            profile = session.profile
        finally:
            session.close()
    except Exception as exc:  # the runner must keep running the queue even if sweep.toml was broken since
        log(f"could not read the site profile ({exc}); using defaults")
    argv, fields = nvidia_smi_command()
    settings = Settings(cpu_slots=max(1, (os.cpu_count() or 2) // 2), nvidia_smi=argv, nvidia_fields=fields,
                        tick_s=_env_float("HPC_SWEEP_RUNNER_TICK", 1.0), idle_s=_env_float("HPC_SWEEP_RUNNER_IDLE", 10),
                        grace_s=_env_float("HPC_SWEEP_RUNNER_GRACE", 10),
                        gpu_query_s=_env_float("HPC_SWEEP_GPU_QUERY_S", 5))
    if profile is not None:
        settings.cpu_slots = profile.cpu_slots or settings.cpu_slots
        settings.runs_per_gpu = profile.runs_per_gpu
        settings.gpu_min_free_mb = profile.gpu_min_free_mb
        settings.walltime_s = profile.walltime_s
    return settings


# -- the runner ------------------------------------------------------------------------------------------------------
def _take_runner_lock(spool: Spool, patience_s: float = 3.0):
    """The open, locked runner.lock, or None when another runner holds it. A status checking whether a runner
    is alive holds the lock for an instant: retry a little so that check never turns a new runner away."""
    spool.dir.mkdir(parents=True, exist_ok=True)
    lock = open(spool.runner_lock, "a+")
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except OSError:
            if time.monotonic() >= deadline:
                lock.close()
                return None
            time.sleep(0.05)


class Runner:
    def __init__(self, spool: Spool, settings: Settings):
        self.spool = spool
        self.settings = settings
        self.children: dict = {}            # task id -> Popen of runs this process started
        self.data: dict = {}
        self.signature: Optional[tuple] = None
        self.gpus: Optional[list] = None
        self.gpus_at = 0.0
        self.host = socket.gethostname()

    # -- main loop ----------------------------------------------------------------------------------------------
    def run(self) -> int:
        self.spool.dir.mkdir(parents=True, exist_ok=True)
        lock = _take_runner_lock(self.spool)
        if lock is None:
            return 0  # another runner serves this sweep
        from hpc_sweep.common.atomicio import write_atomic

        write_atomic(self.spool.pid_file, json.dumps({"pid": os.getpid(), "start": proc_start(os.getpid())}),
                     fsync=False)
        log(f"runner started for {self.spool.sweep} (cpu slots {self.settings.cpu_slots}, "
            f"{self.settings.runs_per_gpu} run(s) per GPU, >= {self.settings.gpu_min_free_mb} MiB free)")
        with self.spool.locked():
            self.refresh()
        for task in self.data["tasks"].values():
            if task["state"] == "running":  # started by an earlier runner: watched, never started again
                log(f"{task['task_id']} ({task.get('config')}): adopting run pid {task.get('pid')}")
        try:
            self.loop(lock)
        finally:
            lock.close()
        return 0

    def loop(self, lock) -> None:
        idle_since: Optional[float] = None
        while True:
            self.maybe_query_gpus()
            with self.spool.locked():
                self.refresh()
                if self.step(time.time()):
                    self.save()
                if has_work(self.data):
                    idle_since = None
                else:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= self.settings.idle_s:
                        # Give the runner lock up while holding the spool lock: a submit that queues work
                        # after this sees no runner and starts one.
                        self.spool.pid_file.unlink(missing_ok=True)
                        lock.close()
                        log("nothing queued or running: runner exits")
                        return
            time.sleep(self.settings.tick_s)

    def refresh(self) -> None:
        signature = self.spool.signature()
        if signature != self.signature or not self.data:
            self.data = self.spool.load()
            self.signature = signature

    def save(self) -> None:
        self.spool.save(self.data)
        self.signature = self.spool.signature()

    def maybe_query_gpus(self) -> None:
        """nvidia-smi only while GPU work waits, at most every few seconds, outside the spool lock."""
        waiting = any(t["state"] == "queued" and t.get("gpus") for t in self.data.get("tasks", {}).values())
        if not self.data or (waiting and time.monotonic() - self.gpus_at >= self.settings.gpu_query_s):
            found = query_gpus(self.settings.nvidia_smi, self.settings.nvidia_fields)
            self.gpus_at = time.monotonic()
            if found is None and self.gpus:
                # nvidia-smi failed once on a machine that has GPUs: keep the last answer rather than start
                # GPU configs on CPU slots.
                log("nvidia-smi failed; using its previous answer")
                return
            self.gpus = found

    # -- one tick ----------------------------------------------------------------------------------------------
    def step(self, now: float) -> bool:
        changed = False
        for task in list(self.data["tasks"].values()):
            if task["state"] == "running":
                changed = self.watch(task, now) or changed
        return self.start_queued(now) or changed

    def watch(self, task: dict, now: float) -> bool:
        proc = self.children.get(task["task_id"])
        if proc is not None:
            code = proc.poll()
            if code is None:
                return self.enforce(task, now)
            del self.children[task["task_id"]]
            self.finish(task, code if code >= 0 else 128 - code, now)
            return True
        if task.get("pid") is None:
            return self.recover_launch(task, now)
        if is_alive(task["pid"], task.get("pid_start")):
            return self.enforce(task, now)  # adopted: started by an earlier runner
        found, code = exit_marker_code(self.spool, task)
        self.finish(task, code, now, None if found else NO_EXIT_MARKER)
        return True

    def enforce(self, task: dict, now: float) -> bool:
        """Walltime and cancel: SIGTERM first, SIGKILL to the whole group after the grace."""
        stop = task.get("stop")
        limit = task.get("walltime_s") or self.settings.walltime_s
        if stop is None and limit and now - task["started_at"] > limit:
            stop = task["stop"] = {"why": "time limit", "at": now, "term_sent": False, "kill_sent": False}
            task["reason"] = "time limit"
            log(f"{task['task_id']}: time limit {limit} s reached")
        if stop is None:
            return False
        if not stop.get("term_sent"):
            stop["term_sent"] = True
            signal_run(task, signal.SIGTERM, whole_group=False)
            return True
        if not stop.get("kill_sent") and now - stop["at"] >= self.settings.grace_s:
            stop["kill_sent"] = True
            signal_run(task, signal.SIGKILL, whole_group=True)
            log(f"{task['task_id']}: still running {self.settings.grace_s:.0f} s after SIGTERM: SIGKILL")
            return True
        return False

    def finish(self, task: dict, code: Optional[int], now: float, reason: Optional[str] = None) -> None:
        task["state"], task["exit_code"], task["ended_at"] = "finished", code, now
        if reason and not task.get("reason"):
            task["reason"] = reason
        task["outcome"] = outcome(task)
        if task.get("stop") and task.get("pid") and task.get("launch"):
            for pid in session_members(task["pid"], task["launch"]):  # stragglers of a stopped run
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        log(f"{task['task_id']} ({task.get('config')}): {task['outcome']}, exit code {code}")

    def recover_launch(self, task: dict, now: float) -> bool:
        """A launch written to the spool whose pid was not (the runner died in between): find it by token."""
        pid = find_launched(task["launch"]) if task.get("launch") else None
        if pid is not None:
            task["pid"], task["pid_start"] = pid, proc_start(pid)
            log(f"{task['task_id']}: found launched run {pid} again")
            return True
        found, code = exit_marker_code(self.spool, task)
        started = (self.spool.markers / f"{task['config']}.{task['attempt']}.start").exists()
        if found or started:
            self.finish(task, code, now, None if found else NO_EXIT_MARKER)
        else:
            task.update(state="queued", launch=None, started_at=None, slot=None, gpu_ids=None,
                        cuda_visible_devices=None)
            log(f"{task['task_id']}: launch never happened; queued again")
        return True

    # -- starting runs -----------------------------------------------------------------------------------------
    def start_queued(self, now: float) -> bool:
        queued = [t for t in self.data["tasks"].values() if t["state"] == "queued"]
        if not queued:
            return False
        running = [t for t in self.data["tasks"].values() if t["state"] == "running"]
        cpu_used = sum(1 for t in running if t.get("slot") == "cpu")
        per_gpu: dict = {}
        for t in running:
            for gpu in t.get("gpu_ids") or []:
                per_gpu[gpu] = per_gpu.get(gpu, 0) + 1
        changed = False
        # First come, first served, but a task that does not fit does not hold back smaller ones behind it.
        for task in queued:
            placement = place(task, self.gpus, self.settings, per_gpu, cpu_used)
            if placement is None:
                reason = _wait_reason(task, self.gpus, self.settings)
                if task.get("reason") != reason:  # shown as the pending reason by status; written once
                    task["reason"] = reason
                    changed = True
                continue
            changed = True
            if isinstance(placement, str):
                task["refused"] = True
                self.finish(task, None, now, placement)
                continue
            self.launch(task, placement, now)
            if task["state"] == "running":
                cpu_used += placement.slot == "cpu"
                for gpu in placement.gpu_ids:
                    per_gpu[gpu] = per_gpu.get(gpu, 0) + 1
        return changed

    def launch(self, task: dict, placement: Placement, now: float) -> None:
        token = f"{task['task_id']}:{secrets.token_hex(8)}"
        task.update(state="running", launch=token, pid=None, pid_start=None, started_at=now, host=self.host,
                    reason=None, slot=placement.slot, gpu_ids=placement.gpu_ids,
                    cuda_visible_devices=placement.visible)
        self.save()  # the launch is on disk before the process exists: a crash now cannot start it twice
        env = dict(os.environ)
        env.update({INDEX_ENV: str(task["index"]), TASK_ID_ENV: task["task_id"], LAUNCH_ENV: token})
        if placement.visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = placement.visible
        elif placement.slot == "gpu":
            env.pop("CUDA_VISIBLE_DEVICES", None)  # explicit ids are real indices: show every GPU
        self.spool.logs.mkdir(parents=True, exist_ok=True)
        out_path = self.spool.logs / f"{task['name']}_{task['index']}.out"
        try:
            with open(out_path, "ab") as out:
                proc = subprocess.Popen(["bash", task["script"]], cwd=str(self.spool.sweep), env=env,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True, close_fds=True)
        except OSError as exc:
            task["refused"] = True
            self.finish(task, None, now, f"could not start bash {task['script']}: {exc}")
            return
        task["pid"], task["pid_start"] = proc.pid, proc_start(proc.pid)
        self.children[task["task_id"]] = proc
        log(f"{task['task_id']} ({task.get('config')}): started pid {proc.pid} on {placement.slot} slot"
            + (f" GPUs {placement.gpu_ids}" if placement.gpu_ids else ""))


# -- the commands ----------------------------------------------------------------------------------------------------
def parse_indices(texts: Sequence[str]) -> list[int]:
    from hpc_sweep.schedulers.arrays import expand_array_spec

    found: set = set()
    for text in texts:
        found.update(expand_array_spec(text))
    return sorted(found)


def cmd_submit(spool: Spool, name: str, script_text: str, index_texts: Sequence[str]) -> int:
    from hpc_sweep.common.jobmap import parse_map

    script = Path(script_text).resolve()
    try:
        entries = {e.index: e for e in parse_map(script.with_suffix(".map").read_text(encoding="utf-8"))}
        indices = parse_indices(index_texts) or [0]
    except (OSError, ValueError) as exc:
        print(f"hpc-sweep runner: cannot submit {script}: {exc}", file=sys.stderr)
        return 2
    missing = [i for i in indices if i not in entries]
    if not script.is_file() or missing:
        print(f"hpc-sweep runner: {script} " + (f"has no map entry for index(es) {missing}" if missing
                                                 else "does not exist"), file=sys.stderr)
        return 2
    walltime = read_walltime(script)
    with spool.locked():
        data = spool.load()
        known = [sid for sid, sub in data["submissions"].items() if sub["name"] == name]
        if known:  # a retried submit of the same job: never queue it twice
            ensure_runner(spool, data)
            print(known[0])
            return 0
        data["seq"] += 1
        sid = f"local-{data['seq']}"
        data["submissions"][sid] = {"name": name, "script": str(script), "submitted_at": time.time()}
        for index in indices:
            entry = entries[index]
            task_id = f"{sid}_{index}"
            data["tasks"][task_id] = {
                "task_id": task_id, "submission": sid, "index": index, "name": name, "script": str(script),
                "config": entry.name, "attempt": entry.attempt, "device": entry.device, "gpus": entry.gpus,
                "walltime_s": walltime, "state": "queued", "submitted_at": time.time()}
        spool.save(data, fsync=True)
        ensure_runner(spool, data)
    print(sid)
    return 0


def cmd_status(spool: Spool) -> int:
    with spool.locked():
        data = spool.load()
        alive = spool.runner_alive()
        restarted = False
        if not alive and has_work(data):
            start_runner(spool)  # the runner died (or exited early): poll restarts it here
            restarted = True
    tasks = [public(t) for t in data["tasks"].values()]
    print(json.dumps({"runner_alive": alive, "runner_pid": spool.runner_pid() if alive else None,
                      "runner_restarted": restarted, "tasks": tasks}))
    return 0


def cmd_cancel(spool: Spool, ids: Sequence[str]) -> int:
    now = time.time()
    done, unknown = 0, []
    with spool.locked():
        data = spool.load()
        tasks = data["tasks"].values()
        for ident in ids:
            chosen = [t for t in tasks if t["task_id"] == ident or t["submission"] == ident]
            if not chosen:
                unknown.append(ident)
            for task in chosen:
                done += _cancel_task(task, now)
        spool.save(data, fsync=True)
        ensure_runner(spool, data)  # someone must send the SIGKILL after the grace and record the end
    for ident in unknown:
        print(f"hpc-sweep runner: unknown job id {ident}", file=sys.stderr)
    print(f"cancelled {done} task(s)")
    return 0


def _cancel_task(task: dict, now: float) -> int:
    if task["state"] == "queued":
        task.update(state="finished", ended_at=now, reason="cancelled",
                    stop={"why": "cancelled", "at": now, "term_sent": True, "kill_sent": True})
        task["outcome"] = outcome(task)
        return 1
    if task["state"] != "running" or task.get("stop"):
        return 0
    task["reason"] = "cancelled"
    task["stop"] = {"why": "cancelled", "at": now, "term_sent": False, "kill_sent": False}
    if task.get("pid") is not None:
        # Only a process whose recorded (pid, start time) still match is signalled: a reused pid never is.
        task["stop"]["term_sent"] = signal_run(task, signal.SIGTERM, whole_group=False)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpc_sweep.local.runner", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "status", "submit", "cancel"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--sweep", required=True, type=Path)
        if name == "submit":
            cmd.add_argument("--name", required=True)
            cmd.add_argument("script")
            cmd.add_argument("indices", nargs="*")
        if name == "cancel":
            cmd.add_argument("ids", nargs="*")
    args = parser.parse_args(argv)
    spool = Spool(args.sweep)
    if args.command == "run":
        return Runner(spool, load_settings(spool.sweep)).run()
    if args.command == "status":
        return cmd_status(spool)
    if args.command == "submit":
        return cmd_submit(spool, args.name, args.script, args.indices)
    return cmd_cancel(spool, args.ids)


if __name__ == "__main__":
    sys.exit(main())
