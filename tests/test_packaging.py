"""The installed package as users run it: ``python -m hpc_sweep`` is the ``hpc-sweep`` command line, and the job
templates and site profiles come with the package (tests/run-all.sh runs this against the built wheel; its
tests/check_dist.py checks the wheel's file list)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hpc_sweep
import hpc_sweep.job_templates
import hpc_sweep.site_configs
from hpc_sweep.sweep.sites import profile_files

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpc_sweep", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_python_dash_m_runs_the_command_line(tmp_path: Path) -> None:
    shown = run("--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Usage: hpc-sweep ")
    assert all(f"\n  {command} " in shown.stdout for command in ("generate", "render", "submit", "poll", "status"))
    missing = run("status", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    assert "sweep.toml" in missing.stderr and "Traceback" not in missing.stderr


def test_templates_and_profiles_come_with_the_package() -> None:
    templates = Path(hpc_sweep.job_templates.__file__).resolve().parent
    assert {p.name for p in templates.glob("*.j2")} == {p.name for p in (REPO / "job_templates").glob("*.j2")}
    shipped = Path(hpc_sweep.site_configs.__file__).resolve().parent
    profiles = {name for name, path in profile_files().items() if path.resolve().parent == shipped}
    assert profiles == {p.stem for p in (REPO / "site_configs").glob("*.toml")}

