"""`cron install --via scrontab` on the real test Slurm (#15 item 6): the poll's entry lands in the user's scrontab
beside their own lines, slurmctld runs it as a cron job, that job polls the sweep (the configs complete with no
poll of ours; its output file fills), and `cron remove --via scrontab` takes exactly our entry away.

Debian's slurm-client does not ship scrontab: tests/cluster/build_scrontab.sh builds it from the Debian source of
the installed version (tests/run-all.sh does, as root, and then the test fails without it); run elsewhere without
the client, the test skips, saying so."""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

import pytest

from cluster.cluster_sweeps import by_config, hpc, make_user_sweep, status, toml_body

pytestmark = pytest.mark.slurm

COMMAND = "DEMO_EPOCH_SLEEP=0 {python} {train} {{config}} && cp {{config}} {{outputs_dir}}/last.toml"
USERS_OWN = "#SCRON --time=1\n0 0 1 1 * /bin/true users-own-line\n"


def built_scrontab() -> str:
    found = [os.environ.get("HPC_SWEEP_TEST_SCRONTAB", "")] + sorted(glob.glob("/var/cache/hpc-sweep-scrontab/*/scrontab"))
    found = [path for path in found if path and os.access(path, os.X_OK)]
    if not found:
        # tests/run-all.sh builds it (as root on Debian) and says so: there its absence is a failure, not a skip
        assert not os.environ.get("HPC_SWEEP_EXPECT_SCRONTAB"), \
            f"tests/cluster/build_scrontab.sh did not build scrontab: {os.environ['HPC_SWEEP_EXPECT_SCRONTAB']}"
        pytest.skip("no scrontab client: Debian's slurm-client lacks it; build it with tests/cluster/build_scrontab.sh")
    return found[-1]


def cron(cluster, root: Path, env: dict, action: str, *args: str) -> subprocess.CompletedProcess:
    """``hpc-sweep cron ACTION ROOT --via scrontab ARGS`` as the test user."""
    return cluster.run_as_user([str(cluster.user_bin / "hpc-sweep"), "cron", action, str(root), "--via", "scrontab",
                                *args], cwd=root, env=env, timeout=120)


def scrontab(cluster, env: dict, *args: str) -> subprocess.CompletedProcess:
    return cluster.run_as_user(["scrontab", *args], env=env, timeout=60)


def test_cron_via_scrontab_polls_the_sweep_as_a_slurm_cron_job(slurm_cluster):
    cluster = slurm_cluster
    client = built_scrontab()
    cluster.set_config(ScronParameters="enable")
    root = make_user_sweep(cluster, "scron", COMMAND, toml_body(grid={"process.train.max_epoch": [2, 3]}),
                           generate=True)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    os.symlink(client, bin_dir / "scrontab")
    env = {"PATH": f"{bin_dir}:{cluster.env['PATH']}"}
    users_own = root / "users-own.cron"
    users_own.write_text(USERS_OWN)
    subprocess.run(["chown", "-R", f"{cluster.user}:", str(root)], check=True)
    try:
        assert scrontab(cluster, env, str(users_own)).returncode == 0
        installed = cron(cluster, root, env, "install", "--every", "1m")
        assert installed.returncode == 0, installed.stderr
        listed = scrontab(cluster, env, "-l").stdout
        assert "users-own-line" in listed and listed.count("# hpc-sweep poll begin:") == 1, listed
        assert cron(cluster, root, env, "install", "--every", "1m").returncode == 0
        assert scrontab(cluster, env, "-l").stdout.count("# hpc-sweep poll begin:") == 1  # replaced, not added

        submitted = hpc(cluster, root, "submit")
        assert submitted.returncode == 0, submitted.stderr
        # From here only the cron job polls: once a minute, slurmctld starts it on the node.
        final = cluster.wait_for(lambda: _all_completed(cluster, root), timeout=240, interval=3,
                                 what="the scrontab poll to record both configs completed")
        for name, config in final.items():
            assert config["epoch"] == config["max_epoch"], config
            assert (root / "outputs" / name / "last.toml").exists(), f"{name}: the command did not run whole"
        assert (root / ".hpc_sweep" / "scrontab-poll.out").exists()  # the cron job's own output, in the sweep

        removed = cron(cluster, root, env, "remove")
        assert removed.returncode == 0, removed.stderr
        listed = scrontab(cluster, env, "-l").stdout
        assert "users-own-line" in listed and "hpc-sweep poll" not in listed, listed
    finally:
        scrontab(cluster, env, "-r")


def _all_completed(cluster, root: Path):
    configs = by_config(status(cluster, root))
    return configs if configs and all(c["state"] == "completed" for c in configs.values()) else None
