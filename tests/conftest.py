"""Suite-wide pytest configuration.

``slurm_cluster`` (session scope) starts a real single-node Slurm 22.05 (see ``tests/cluster/slurm_cluster.py``)
once per test session and stops it at the end. Tests that use it are marked ``@pytest.mark.slurm``; every such test
gets, after it ran, a clean cluster for the next one: daemons running again, the test user's jobs cancelled, the
user's MaxSubmitJobs cleared, slurm.conf back to the base settings.

Where the cluster cannot exist (not root, packages not installable) the fixture skips with the reason, except under
CI (environment variable ``CI`` set), where it fails: CI must run these tests.

Set ``HPC_SWEEP_KEEP_SLURM_STATE=1`` to keep the cluster's state directory (configs, daemon logs) after the session.

No test runs a scheduler command it did not start: every test that neither uses the cluster (marked ``slurm``
or asking for ``slurm_cluster``) runs with a folder of guard commands first on PATH (``HOST_SCHEDULER_COMMANDS``;
see ``_host_scheduler_guard``). A guard command records the call and fails; the test then errors, naming the
call. A test that needs a scheduler puts its own stand-ins before the guard on PATH, or uses the cluster.
``nvidia-smi`` is answered "not found" without failing the test, so the local backend sees no GPUs unless a
test brings a stand-in: the suite behaves the same on a GPU machine.
"""

from __future__ import annotations

import atexit
import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from slurm_cluster import WHEEL_ENV, ClusterUnavailable, SlurmCluster  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

_STARTUP_KEY = pytest.StashKey[str]()

# What hpc-sweep runs (schedulers/, hpc_sweep/cron.py) and what a test could reach on a login node.
HOST_SCHEDULER_COMMANDS = (
    "sbatch", "squeue", "sacct", "sacctmgr", "scontrol", "scancel", "sinfo", "srun", "salloc",
    "qsub", "qstat", "qselect", "qdel", "qmgr", "pbsnodes", "crontab", "scrontab",
)
HOST_CALLS_ENV = "HOST_SCHEDULER_GUARD_LOG"  # no HPC_SWEEP_ prefix: some tests drop those from the env
_GUARD = """#!/bin/sh
# hpc-sweep test guard (tests/conftest.py): a test reached the host's {name} without starting it.
printf '%s\\n' "{name} $*" >> "${{{env}:-/dev/null}}"
echo "{name}: blocked by the hpc-sweep test guard: use the slurm_cluster fixture or a stand-in on PATH" >&2
exit 127
"""
_NO_GPUS = """#!/bin/sh
# hpc-sweep test guard (tests/conftest.py): the host's GPUs are not the tests' business.
echo "nvidia-smi: not found (hpc-sweep test guard)" >&2
exit 127
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs the real single-node Slurm started by tests/cluster (root only)")
    _check_tested_package()


def _check_tested_package() -> None:
    """Under tests/run-all.sh (``$HPC_SWEEP_TEST_WHEEL`` set) the suite must test the installed wheel: a checkout
    on sys.path would shadow it with source folders that are not the package users get."""
    if not os.environ.get(WHEEL_ENV):
        return
    import hpc_sweep

    where = Path(hpc_sweep.__file__).resolve()
    if REPO in where.parents:
        raise pytest.UsageError(f"hpc_sweep was imported from the checkout ({where}), not from the installed "
                                f"{os.environ[WHEEL_ENV]}: run pytest outside the repository, as tests/run-all.sh does")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Slurm test cluster unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"Slurm test cluster unavailable: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest):
    """A running single-node Slurm cluster, shared by the whole session (see tests/cluster/slurm_cluster.py)."""
    if os.geteuid() != 0:
        _unavailable("the tests must run as root to start slurmctld/slurmd/slurmdbd/munged/MariaDB")
    cluster = SlurmCluster()
    atexit.register(cluster.stop)  # if the session dies without running finalizers
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        _unavailable(str(exc))
    msg = (f"slurm test cluster up in {cluster.startup_seconds:.1f}s "
           f"(state {cluster.state_dir}, user {cluster.user}, pids {cluster.pids()})")
    request.config.stash[_STARTUP_KEY] = msg
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(msg)
    try:
        yield cluster
    finally:
        cluster.stop()
        if not os.environ.get("HPC_SWEEP_KEEP_SLURM_STATE"):
            cluster.remove_state()


@pytest.fixture(autouse=True)
def _slurm_test_isolation(request: pytest.FixtureRequest):
    """For tests marked ``slurm``: start the cluster, and leave it clean for the next test."""
    if request.node.get_closest_marker("slurm") is None:
        yield
        return
    cluster: SlurmCluster = request.getfixturevalue("slurm_cluster")
    yield
    cluster.reset()


@pytest.fixture
def sweeps():
    """The local-backend sweeps a test made (tests/test_local_runner.py's Sweep): each one's runner and the
    processes it started are stopped at the end, by PID."""
    made: list = []
    yield made
    for sweep in made:
        sweep.stop_everything()


@pytest.fixture(scope="session")
def host_guard_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of guard commands (one per name in HOST_SCHEDULER_COMMANDS, plus nvidia-smi)."""
    folder = tmp_path_factory.mktemp("host-guard-bin")
    scripts = {name: _GUARD.format(name=name, env=HOST_CALLS_ENV) for name in HOST_SCHEDULER_COMMANDS}
    scripts["nvidia-smi"] = _NO_GPUS
    for name, text in scripts.items():
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


@pytest.fixture(autouse=True)
def _host_scheduler_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                          host_guard_bin: Path, tmp_path_factory: pytest.TempPathFactory):
    """Puts the guard commands first on PATH for this test (and every process it starts), and makes the test
    error if any was called. Tests using the real cluster are left alone: their commands reach that cluster."""
    if request.node.get_closest_marker("slurm") is not None or "slurm_cluster" in request.fixturenames:
        yield
        return
    calls = tmp_path_factory.mktemp("host-calls", numbered=True) / "calls"
    monkeypatch.setenv("PATH", f"{host_guard_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv(HOST_CALLS_ENV, str(calls))
    yield
    if calls.exists() and calls.read_text().strip():
        pytest.fail("ran the host's scheduler commands (give the test stand-ins on PATH or the slurm_cluster "
                    "fixture):\n  " + "\n  ".join(calls.read_text().splitlines()), pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    msg = config.stash.get(_STARTUP_KEY, None)
    if msg:
        terminalreporter.write_line(msg)
