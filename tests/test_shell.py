"""hpc_sweep.common.shell: a submit command dies with a killed hpc-sweep, so it cannot land after the next run
reconciled its intent; without the flag a child would outlive us. run_many/start_many run independent queries at
once with the same safety: real processes, overlap read from the call log's start and seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_sweep.common import shell

SCRIPT = """
import sys
from hpc_sweep.common import shell
shell.run(["bash", "-c", "echo $$ > {pidfile}; exec sleep 60"], die_with_us={flag})
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
@pytest.mark.parametrize("flag", [True, False])
def test_child_dies_with_a_killed_parent_only_when_asked(tmp_path: Path, flag: bool):
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT.format(pidfile=pidfile, flag=flag)])
    assert _wait(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    child = int(pidfile.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    try:
        if flag:
            assert _wait(lambda: not _alive(child)), "the submit child outlived hpc-sweep"
        else:
            time.sleep(0.3)
            assert _alive(child)  # the control: without the flag it survives
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


# -- run_many: independent commands at once ---------------------------------------------------------------------

MANY_SCRIPT = """
import sys
from hpc_sweep.common import shell
shell.run_many([["bash", "-c", "echo $$ > {pidfile}; exec sleep 60"], ["sleep", "60"]], timeout=120)
"""


def _calls(log: Path) -> list:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def call_log(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("HPC_SWEEP_CALL_LOG", str(path))
    return path


def test_run_many_runs_the_commands_at_once(call_log: Path):
    argvs = [["sh", "-c", f"sleep 0.3; echo {i}"] for i in range(3)]
    results = shell.run_many(argvs, timeout=30)
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n"]  # in the order asked, whatever the order of ending
    assert [r.argv for r in results] == argvs and {r.returncode for r in results} == {0}
    calls = _calls(call_log)
    assert sorted(c["argv"] for c in calls) == sorted(argvs)
    # Every call was running while every other one was: each started before any of them ended.
    last_start = max(c["start"] for c in calls)
    first_end = min(c["start"] + c["seconds"] for c in calls)
    assert last_start < first_end, calls


def test_run_many_gives_what_run_gives(call_log: Path):
    argvs = [["sh", "-c", "printf 'out\\n'; printf 'err\\n' >&2; exit 3"], ["no-such-command-hpc-sweep"],
             ["sh", "-c", "printf 'caf\\351\\n'"], ["true"]]
    many = shell.run_many(argvs, timeout=30)
    one_by_one = [shell.run(argv, timeout=30) for argv in argvs]
    assert many == one_by_one
    assert (many[0].returncode, many[0].stdout, many[0].stderr) == (3, "out\n", "err\n")
    assert (many[1].returncode, many[1].stdout) == (shell.NOT_FOUND, "")
    assert many[2].stdout == "caf\ufffd\n"  # undecodable bytes replaced, as run does
    calls = _calls(call_log)
    assert len(calls) == 2 * len(argvs)
    assert all(set(c) == {"argv", "rc", "seconds", "start"} and c["seconds"] >= 0 for c in calls)
    assert sorted((c["argv"], c["rc"]) for c in calls[:4]) == sorted((a, r.returncode) for a, r in zip(argvs, many))


def test_run_many_time_out_kills_only_the_slow_command(tmp_path: Path, call_log: Path):
    pidfile = tmp_path / "slow.pid"
    slow = ["bash", "-c", f"echo $$ > {pidfile}; exec sleep 60"]
    fast = ["sh", "-c", "echo fast"]
    results = shell.run_many([slow, fast], timeout=[1, 30])
    assert (results[0].returncode, results[0].stdout) == (shell.TIMED_OUT, "")
    assert results[0].stderr == "bash: timed out after 1 s"  # run's wording
    assert (results[1].returncode, results[1].stdout) == (0, "fast\n")
    assert not _alive(int(pidfile.read_text()))  # killed and reaped, not left behind
    by_rc = {c["rc"]: c for c in _calls(call_log)}
    assert by_rc[shell.TIMED_OUT]["seconds"] < 30 and by_rc[0]["seconds"] < by_rc[shell.TIMED_OUT]["seconds"]


def test_run_many_reads_every_pipe_as_it_fills(call_log: Path):
    # Each writes more than a pipe holds, to both streams: collecting one after the other would block.
    big = "head -c 300000 /dev/zero | tr '\\0' a; head -c 200000 /dev/zero | tr '\\0' b >&2"
    results = shell.run_many([["sh", "-c", big]] * 3, timeout=60)
    assert [(len(r.stdout), len(r.stderr)) for r in results] == [(300000, 200000)] * 3


def test_start_many_left_early_kills_what_still_runs(tmp_path: Path, call_log: Path):
    pidfile = tmp_path / "child.pid"
    with pytest.raises(RuntimeError):
        with shell.start_many([["bash", "-c", f"echo $$ > {pidfile}; exec sleep 60"]], timeout=120) as running:
            assert _wait(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
            assert running.poll() is False
            raise RuntimeError("an error between starting and collecting")
    assert not _alive(int(pidfile.read_text()))
    assert not call_log.exists()  # never collected, never logged


def test_start_many_poll_then_results(call_log: Path):
    with shell.start_many([["sh", "-c", "echo a"], ["sh", "-c", "echo b >&2; exit 1"]], timeout=30) as running:
        assert _wait(running.poll)
        first, second = running.results()
    assert (first.returncode, first.stdout, second.returncode, second.stderr) == (0, "a\n", 1, "b\n")
    assert len(_calls(call_log)) == 2


def test_run_many_cannot_start_one_kills_the_others(tmp_path: Path, call_log: Path):
    pidfile = tmp_path / "first.pid"
    not_executable = tmp_path / "data.txt"
    not_executable.write_text("not a program\n")
    with pytest.raises(PermissionError):  # as run raises it
        shell.run_many([["bash", "-c", f"echo $$ > {pidfile}; exec sleep 60"], [str(not_executable)]])
    if pidfile.exists() and pidfile.read_text().strip():
        assert not _alive(int(pidfile.read_text()))


def test_run_many_time_outs_must_match_the_commands():
    with pytest.raises(ValueError):
        shell.run_many([["true"], ["true"]], timeout=[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_run_many_children_die_with_a_killed_parent(tmp_path: Path):
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", MANY_SCRIPT.format(pidfile=pidfile)])
    assert _wait(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    child = int(pidfile.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    try:
        assert _wait(lambda: not _alive(child)), "a query child outlived hpc-sweep"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
