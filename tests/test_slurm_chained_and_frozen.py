"""Issue #12 on the real single-node Slurm (tests/cluster), as the ordinary test user:

* item 1: a chained command (`test -f {config} && ... && cp ...`) runs whole; status says completed only once its
  last step has written its file;
* item 2: slurmctld frozen (SIGSTOP) while sbatch runs, with room in the queue and with the user's cap equal to the
  sweep's size: every (config, attempt) is in exactly one task Slurm accepted, across every job of the sweep (read
  through each job name's map file), and each config's command ran once.

Every wait is on a condition with a deadline; only the daemons this session's cluster started are stopped.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Optional

import pytest
from cluster_sweeps import TINY, by_config, hpc, make_user_sweep, poll_until_final, prefix_of, status, toml_body
from slurm_cluster import SYSTEM_PATH

from hpc_sweep.common.jobmap import parse_map

pytestmark = pytest.mark.slurm

GATE = """#!/bin/bash
# Holds the chain (at most 5 min) until the test's go-ahead, so the test sees the runs before their last step.
for _ in $(seq 1500); do [ -e {root}/go ] && exit 0; sleep 0.2; done
exit 1
"""
SBATCH_WRAPPER = """#!/bin/bash
# First on PATH for the frozen-controller test: note the call (the test freezes slurmctld then), wait 1 s, and run
# the real sbatch, which then talks to a controller that does not answer.
echo "$(date +%s.%N) $*" >> {calls}
sleep 1
exec {sbatch} "$@"
"""
# How long slurmctld stays frozen at most: a submit that neither sends again nor returns by then hangs.
FROZEN_AT_MOST_S = 240


def make_sweep(cluster, name: str, command: str, count: int = 3) -> Path:
    lrs = [round(0.01 * (i + 1), 3) for i in range(count)]
    return make_user_sweep(cluster, name, command, toml_body({"process.train.optimizer.init_learning_rate": lrs}, TINY),
                           scripts={"gate.sh": GATE}, generate=True, walltime="00:05:00", max_retries=0)


def polled(cluster, root: Path) -> dict:
    result = hpc(cluster, root, "poll", "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    return by_config(status(cluster, root))


def until_final(cluster, root: Path, also_submit: bool = False) -> dict:
    """Poll (and submit) rounds until no config is active; the last status, by config."""
    return by_config(poll_until_final(cluster, root, also_submit=also_submit))


def assert_ran_whole(root: Path, configs: dict) -> None:
    """Completed at attempt 1, the trainer's epochs read, and the file the chain's last step writes in place."""
    for name, config in configs.items():
        assert config["state"] == "completed" and config["attempt"] == 1, config
        assert config["epoch"] == config["max_epoch"] == TINY["process.train.max_epoch"], config
        last = root / "outputs" / name / "last.toml"
        assert last.exists(), f"{name}: completed, but the chain's last step never wrote {last}"
        assert last.read_text() == (root / "configs" / f"{name}.toml").read_text()


# -- item 1: a chained command --------------------------------------------------------------------------------------
CHAINED = ("test -f {{config}} && {root}/gate.sh && OMP_NUM_THREADS=1 DEMO_EPOCH_SLEEP=0 {python} {train} {{config}} "
           "&& cp {{config}} {{outputs_dir}}/last.toml")


def test_a_chained_command_runs_whole_and_is_completed_only_then(slurm_cluster):
    cluster = slurm_cluster
    root = make_sweep(cluster, "chained", CHAINED)
    submitted = hpc(cluster, root, "submit")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    # Past the chain's first step, held at the gate: running, not completed, no file yet.
    cluster.wait_for(lambda: {c["state"] for c in polled(cluster, root).values()} == {"running"}, timeout=120,
                     what="all three running")
    assert not list((root / "outputs").glob("*/last.toml"))
    (root / "go").touch()
    final = until_final(cluster, root)
    assert_ran_whole(root, final)


# -- item 2: a controller frozen while sbatch runs ------------------------------------------------------------------
FROZEN = ('echo "$HPCS_NAME $SLURM_JOB_ID" >> {root}/starts.log && DEMO_EPOCH_SLEEP=0 {python} {train} {{config}} '
          "&& cp {{config}} {{outputs_dir}}/last.toml")


def accepted_tasks(cluster, root: Path, prefix: str) -> Counter:
    """(config, attempt) -> how many array tasks Slurm accepted for it, over every job whose name carries this
    sweep's prefix, each task mapped to its config through script/<job name>.map; read once accounting settles
    (the same answer twice)."""
    last: list = [None]

    def settled() -> Optional[Counter]:
        result = cluster.run_as_root(["sacct", "-X", "-n", "-P", "-u", cluster.user, "-S", "now-3hours",
                                      "--format=JobID,JobName"])
        if result.returncode != 0:
            return None
        counts: Counter = Counter()
        for line in result.stdout.splitlines():
            job_id, _, name = line.partition("|")
            if not name.startswith(prefix):
                continue
            by_index = {e.index: (e.name, e.attempt) for e in parse_map((root / "script" / f"{name}.map").read_text())}
            for index in task_indices(job_id):
                counts[by_index[index]] += 1
        done = counts if counts and counts == last[0] else None
        last[0] = counts
        return done

    return cluster.wait_for(settled, timeout=90, interval=2, what="sacct to settle")


def task_indices(job_id: str) -> list:
    """Array indices of one sacct -X row: `123_4`, a still-pending `123_[0-2,5%4]`, or a plain job `123` (index 0)."""
    if "_" not in job_id:
        return [0]
    spec = job_id.split("_", 1)[1].strip("[]").split("%")[0]
    indices = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        indices += range(int(low), int(high or low) + 1)
    return indices


@pytest.mark.parametrize("capped", [False, True], ids=["room-in-the-queue", "cap-equal-to-the-sweep"])
def test_frozen_controller_during_sbatch_submits_and_runs_each_config_once(slurm_cluster, capped):
    cluster = slurm_cluster
    count = 3
    root = make_sweep(cluster, f"frozen-{'capped' if capped else 'room'}", FROZEN, count)
    if capped:
        cluster.set_user_limit(count)  # a second array of the same configs would be refused
    wrapper_dir = root / "bin"
    wrapper_dir.mkdir()
    calls = root / "sbatch-calls.log"
    (wrapper_dir / "sbatch").write_text(SBATCH_WRAPPER.format(calls=calls,
                                                              sbatch=shutil.which("sbatch", path=SYSTEM_PATH)))
    (wrapper_dir / "sbatch").chmod(0o755)
    subprocess.run(["chown", "-R", f"{cluster.user}:", str(wrapper_dir)], check=True)

    outcome: dict = {}
    env = {"PATH": f"{wrapper_dir}:{cluster.env['PATH']}"}
    submit = threading.Thread(target=lambda: outcome.update(submit=hpc(cluster, root, "submit", env=env,
                                                                       timeout=600)))
    submit.start()
    try:
        cluster.wait_for(calls.exists, timeout=120, interval=0.05, what="the first sbatch to start")
        cluster.freeze("slurmctld")
        # Thawed as a second sbatch starts (the issue thawed at 40 s, while the tool sent the array again: the
        # first request, queued in the frozen controller's socket, is accepted, the second answered), or once the
        # submit has returned without sending again.
        cluster.wait_for(lambda: len(calls.read_text().splitlines()) > 1 or not submit.is_alive(),
                         timeout=FROZEN_AT_MOST_S, interval=0.05, what="a second sbatch or the submit's return")
    finally:
        cluster.thaw("slurmctld")
        submit.join(300)
    assert "submit" in outcome, "hpc-sweep submit did not return"
    told = outcome["submit"].stdout + outcome["submit"].stderr

    final = until_final(cluster, root, also_submit=True)
    accepted = accepted_tasks(cluster, root, prefix_of(root))
    assert accepted == Counter({(name, 1): 1 for name in final}), (accepted, told)  # never submitted twice
    ran = Counter(line.split()[0] for line in (root / "starts.log").read_text().splitlines())
    assert ran == Counter({name: 1 for name in final}), ran
    assert not list((root / ".hpc_sweep" / "markers").glob("*.duplicate.*"))
    assert_ran_whole(root, final)
