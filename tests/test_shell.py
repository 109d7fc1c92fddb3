"""hpc_sweep.shell: a submit command dies with a killed hpc-sweep, so it cannot land after the next run
reconciled its intent; without the flag a child would outlive us."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import sys
from hpc_sweep import shell
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
