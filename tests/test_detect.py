"""Scheduler detection from version output (real captures where they exist)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hpc_sweep.schedulers.base import CommandResult
from hpc_sweep.schedulers.detect import DETECT_ARGVS, detect_from_outputs, slurm_version

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))

import captures  # noqa: E402

SLURM = captures.fixture_folder("slurm-22.05")
ELSEWHERE = captures.fixture_folder("captured-elsewhere")

# Torque's qstat prints this on stderr: fprintf(stderr, "Version: %s\nCommit: %s\n", PACKAGE_VERSION, GIT_HASH)
# (adaptivecomputing/torque src/cmds/qstat.c); no capture of it was found, so the reference's version is used.
TORQUE_VERSION = "Version: 6.1.3\n"


def result(argv, stdout="", stderr="", rc=0) -> CommandResult:
    return CommandResult(argv=list(argv), returncode=rc, stdout=stdout, stderr=stderr)


SBATCH = result(DETECT_ARGVS["slurm"], captures.read(SLURM / "sbatch_version.txt"))
PBSPRO = result(DETECT_ARGVS["pbs"],
                captures.read(ELSEWHERE / "pbspro" / "issue_reframe2936_pbspro19_qstat_version.txt"))
NOT_FOUND = result(DETECT_ARGVS["slurm"], "", "sbatch: command not found", 127)  # what common.shell.run returns


def test_argvs():
    assert DETECT_ARGVS == {"slurm": ["sbatch", "--version"], "pbs": ["qstat", "--version"]}


def test_slurm():
    assert detect_from_outputs(SBATCH, None) == "slurm"
    assert slurm_version(SBATCH) == (22, 5, 8)
    assert slurm_version(result(["sbatch", "--version"], "slurm 20.02.7\n")) == (20, 2, 7)


def test_slurm_wins_over_a_pbs_looking_qstat():
    # Slurm sites may install qstat wrappers: sbatch is asked first and decides
    assert detect_from_outputs(SBATCH, PBSPRO) == "slurm"


def test_pbspro():
    assert detect_from_outputs(NOT_FOUND, PBSPRO) == "pbspro"
    assert detect_from_outputs(None, PBSPRO) == "pbspro"


@pytest.mark.parametrize("qstat", [
    result(DETECT_ARGVS["pbs"], stderr=TORQUE_VERSION + "Commit: 0123abc\n"),  # Torque 6.x: stderr
    result(DETECT_ARGVS["pbs"], stdout=TORQUE_VERSION),  # releases that print on stdout
])
def test_torque_on_either_stream(qstat):
    assert detect_from_outputs(None, qstat) == "torque"
    assert detect_from_outputs(NOT_FOUND, qstat) == "torque"


def test_nothing_recognised():
    cannot_connect = captures.read(ELSEWHERE / "torque" / "issue_cbio178_qstat_err_cannot_connect.txt")
    assert detect_from_outputs(None, result(DETECT_ARGVS["pbs"], stderr=cannot_connect, rc=111)) is None
    assert detect_from_outputs(NOT_FOUND, result(DETECT_ARGVS["pbs"], "", "qstat: command not found", 127)) is None
    assert detect_from_outputs(None, None) is None
    assert slurm_version(NOT_FOUND) is None
