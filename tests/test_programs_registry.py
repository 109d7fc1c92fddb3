"""The program registry: names, lookup, and a cheap import for the CLI's start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpc_sweep.programs import PROGRAMS, get_program
from hpc_sweep.programs.base import Program
from hpc_sweep.programs.generic import Generic


def test_names_and_lookup():
    assert PROGRAMS == ("deeph", "xequinet", "generic")
    for name in PROGRAMS:
        program = get_program(name)
        assert isinstance(program, Program) and program.name == name
    assert get_program("deeph").config_format == "toml" and get_program("xequinet").config_format == "yaml"


def test_unknown_name_is_a_key_error():
    with pytest.raises(KeyError):
        get_program("lammps")


def test_generic_reads_the_log_table():
    program = get_program("generic", {"path": "out/*.txt", "epoch": r"epoch (\d+)", "max_epoch_key": "n"})
    assert isinstance(program, Generic) and program.log_glob == "out/*.txt" and program.max_epoch({"n": 7}) == 7


def test_importing_the_package_loads_no_plugin():
    code = "import sys, hpc_sweep.programs; print(sorted(m for m in sys.modules if 'programs.' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
