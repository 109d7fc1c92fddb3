"""The one place that runs scheduler commands. Adapters build argv and parse output; this runs them.

Every call can be logged (JSON lines in $HPC_SWEEP_CALL_LOG) so tests and benchmarks count scheduler calls.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Union

from hpc_sweep.common import faults

TIMED_OUT = 124
NOT_FOUND = 127
_PR_SET_PDEATHSIG = 1
_prctl = None  # libc's prctl, looked up in this process so a child only calls it between fork and exec
_parent = 0  # the pid children of this process are to die with

# Test hook, None in use: a stand-in scheduler (tests/standin/) answers instead of a process, called as
# stand_in(argv, cwd=..., timeout=...) -> CommandResult; raising subprocess.TimeoutExpired stands for a command
# killed at its time-out. Fault points, time-outs and the call log work as for a real command.
stand_in: Optional[Callable[..., CommandResult]] = None


@dataclass(frozen=True)
class CommandResult:
    """What a command run here answered, as the adapters' parsers read it: the exact bytes decoded, plus the exit
    status (also :class:`hpc_sweep.schedulers.base.CommandResult`)."""

    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str


def run(argv: Sequence[str], timeout: float = 120, cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None, die_with_us: bool = False) -> CommandResult:
    """Run argv. ``die_with_us``: the child is killed if this process dies first (Linux), so a submit command
    still retrying against a slow controller cannot land after the next run reconciled its intent."""
    faults.point("before_call")
    started, wall = time.monotonic(), time.time()
    try:
        if stand_in is not None:
            result = stand_in(list(argv), cwd=cwd, timeout=timeout)
        else:
            proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, cwd=cwd,
                                  env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL,
                                  preexec_fn=_preexec(die_with_us))
            result = CommandResult(argv=list(argv), returncode=proc.returncode,
                                   stdout=proc.stdout.decode("utf-8", "replace"),
                                   stderr=proc.stderr.decode("utf-8", "replace"))
    except subprocess.TimeoutExpired:
        result = _timed_out(argv, timeout)
    except FileNotFoundError:
        result = _not_found(argv)
    _log(result, time.monotonic() - started, wall)
    faults.point("after_call")
    return result


def run_many(argvs: Sequence[Sequence[str]], timeout: Union[float, Sequence[float]] = 120,
             cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
             die_with_us: bool = True) -> List[CommandResult]:
    """Run independent commands at once: all are started, then all collected, so the wall time is the slowest
    one's rather than the sum. Results in the order of ``argvs``; each is what :func:`run` would have returned
    for it (time-out, command not found) and is logged with its own seconds."""
    with start_many(argvs, timeout, cwd=cwd, env=env, die_with_us=die_with_us) as running:
        return running.results()


def start_many(argvs: Sequence[Sequence[str]], timeout: Union[float, Sequence[float]] = 120,
               cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
               die_with_us: bool = True) -> "Running":
    """Start the commands and return at once; :meth:`Running.results` collects them. Use it as a context
    manager: a command not collected when the block is left (an error in between) is killed and reaped.
    ``timeout``: one for all, or one per command, counted from its start. ``die_with_us`` (default here: these
    are queries nobody needs once we are gone): each child is killed if this process dies first (Linux)."""
    return Running(argvs, timeout, cwd, env, die_with_us)


class Running:
    """Commands started by :func:`start_many`. Their output is read as it comes (one selector over every pipe),
    so none blocks on a full pipe while another is waited for."""

    def __init__(self, argvs, timeout, cwd, env, die_with_us):
        faults.point("before_call")
        argvs = [list(argv) for argv in argvs]
        timeouts = [float(timeout)] * len(argvs) if isinstance(timeout, (int, float)) else [float(t) for t in timeout]
        if len(timeouts) != len(argvs):
            raise ValueError(f"{len(argvs)} commands but {len(timeouts)} time-outs")
        self._calls = [_Call(argv, limit) for argv, limit in zip(argvs, timeouts)]
        self._selector = selectors.DefaultSelector()
        preexec = _preexec(die_with_us)
        child_env = dict(env) if env is not None else None
        try:
            for call in self._calls:
                call.start(cwd, child_env, preexec, self._selector)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def poll(self) -> bool:
        """Read what is ready without waiting, reap the commands that ended; True when every one has."""
        self._pump(0)
        return all(call.result is not None for call in self._calls)

    def results(self) -> List[CommandResult]:
        """Wait for every command (each within its own time-out); the results in the order started."""
        while True:
            waiting = [call for call in self._calls if call.result is None]
            if not waiting:
                break
            now = time.monotonic()
            wait = max(0.0, min(call.deadline for call in waiting) - now)
            if any(call.pipes_closed for call in waiting):
                wait = min(wait, 0.002)  # its pipes are closed but it has not exited yet: look again soon
            self._pump(wait)
        self._selector.close()
        faults.point("after_call")
        return [call.result for call in self._calls]

    def close(self) -> None:
        """Kill and reap whatever is still running (nothing is logged for a command never collected)."""
        for call in self._calls:
            call.abandon()
        self._selector.close()

    def _pump(self, wait: float) -> None:
        if self._selector.get_map():
            for key, _ in self._selector.select(wait):
                call, chunks = key.data
                data = os.read(key.fd, 65536)
                if data:
                    chunks.append(data)
                else:
                    self._selector.unregister(key.fileobj)
                    key.fileobj.close()
        elif wait > 0:
            time.sleep(wait)
        now = time.monotonic()
        for call in self._calls:
            if call.result is None:
                call.check(now, self._selector)


class _Call:
    def __init__(self, argv: List[str], timeout: float):
        self.argv, self.timeout = argv, timeout
        self.proc: Optional[subprocess.Popen] = None
        self.result: Optional[CommandResult] = None
        self.out: List[bytes] = []
        self.err: List[bytes] = []
        self.started = self.deadline = 0.0
        self.wall = 0.0

    @property
    def pipes_closed(self) -> bool:
        return self.proc is not None and self.proc.stdout.closed and self.proc.stderr.closed

    def start(self, cwd, env, preexec, selector) -> None:
        self.started, self.wall = time.monotonic(), time.time()
        self.deadline = self.started + self.timeout
        if stand_in is not None:  # answered at once: nothing to select on
            try:
                self._finish(stand_in(list(self.argv), cwd=cwd, timeout=self.timeout))
            except subprocess.TimeoutExpired:
                self._finish(_timed_out(self.argv, self.timeout))
            return
        try:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         stdin=subprocess.DEVNULL, cwd=cwd, env=env, preexec_fn=preexec)
        except FileNotFoundError:
            self._finish(_not_found(self.argv))
            return
        selector.register(self.proc.stdout, selectors.EVENT_READ, (self, self.out))
        selector.register(self.proc.stderr, selectors.EVENT_READ, (self, self.err))

    def check(self, now: float, selector) -> None:
        """Done when both pipes are at their end and the process was reaped; killed past the deadline."""
        if self.pipes_closed and self.proc.poll() is not None:
            self._finish(CommandResult(argv=list(self.argv), returncode=self.proc.returncode,
                                       stdout=b"".join(self.out).decode("utf-8", "replace"),
                                       stderr=b"".join(self.err).decode("utf-8", "replace")))
        elif now >= self.deadline:
            self._stop(selector)
            self._finish(_timed_out(self.argv, self.timeout))

    def abandon(self) -> None:
        if self.result is None and self.proc is not None:
            self._stop(None)

    def _stop(self, selector) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if not pipe.closed:
                if selector is not None:
                    try:
                        selector.unregister(pipe)
                    except (KeyError, ValueError):
                        pass
                pipe.close()

    def _finish(self, result: CommandResult) -> None:
        self.result = result
        _log(result, time.monotonic() - self.started, self.wall)


def _preexec(die_with_us: bool):
    global _prctl, _parent
    if not (die_with_us and sys.platform.startswith("linux")):
        return None
    if _prctl is None:
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _parent = os.getpid()
    return _kill_when_parent_dies


def _kill_when_parent_dies() -> None:
    # Runs in the child between fork and exec: only the call, everything it needs was looked up in the parent.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != _parent:  # the parent died before the request took effect: no signal will come
        os.kill(os.getpid(), signal.SIGKILL)


def _timed_out(argv: Sequence[str], timeout: float) -> CommandResult:
    return CommandResult(argv=list(argv), returncode=TIMED_OUT, stdout="",
                         stderr=f"{argv[0]}: timed out after {timeout:.0f} s")


def _not_found(argv: Sequence[str]) -> CommandResult:
    return CommandResult(argv=list(argv), returncode=NOT_FOUND, stdout="", stderr=f"{argv[0]}: command not found")


def _log(result: CommandResult, seconds: float, started: float) -> None:
    path = os.environ.get("HPC_SWEEP_CALL_LOG")
    if not path:
        return
    # "start" (epoch seconds) with "seconds" places calls made at once against each other.
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"argv": list(result.argv), "rc": result.returncode,
                                 "seconds": round(seconds, 4), "start": round(started, 4)}) + "\n")


