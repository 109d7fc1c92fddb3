"""Suite-wide pytest configuration.

``slurm_cluster`` (session scope) starts a real single-node Slurm 22.05 (see ``tests/cluster/slurm_cluster.py``)
once per test session and stops it at the end. Tests that use it are marked ``@pytest.mark.slurm``; every such test
gets, after it ran, a clean cluster for the next one: daemons running again, the test user's jobs cancelled, the
user's MaxSubmitJobs cleared, slurm.conf back to the base settings.

Where the cluster cannot exist (not root, packages not installable) the fixture skips with the reason, except under
CI (environment variable ``CI`` set), where it fails: CI must run these tests.

Set ``HPC_SWEEP_KEEP_SLURM_STATE=1`` to keep the cluster's state directory (configs, daemon logs) after the session.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from slurm_cluster import ClusterUnavailable, SlurmCluster  # noqa: E402

_STARTUP_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs the real single-node Slurm started by tests/cluster (root only)")


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


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    msg = config.stash.get(_STARTUP_KEY, None)
    if msg:
        terminalreporter.write_line(msg)
