"""PBS Pro and Torque through the real CLI: submit → poll → completion → timeout → resume, with stand-in
qsub/qstat/qdel/qselect (tests/fakes) that print output shaped like the captured fixtures and record argv."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fakes"))
import fakepbs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_EXIT = {"pbspro": -29, "torque": -11}


def hpc(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True, env=env,
                          cwd=root)


def make_sweep(tmp_path: Path, flavor: str) -> Path:
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text((REPO / "examples" / "demo" / "base.toml").read_text())
    (root / "site.toml").write_text(textwrap.dedent(f"""\
        scheduler = "{flavor}"
        queue = "gpu"
        cpus_per_gpu = 2
        mem_per_gpu = "8gb"
        poll_min_interval = "1s"
        """))
    (root / "sweep.toml").write_text(textwrap.dedent("""\
        [sweep]
        name = "pbsflow"
        program = "deeph"
        base = "configs/.base_config.toml"
        command = "deeph-train {config}"
        site = "site.toml"
        walltime = "01:00:00"
        max_retries = 1
        [grid]
        "process.train.optimizer.init_learning_rate" = [0.1, 0.01, 0.001]
        "system.device" = ["gpu*4:0-1"]
        """))
    return root


def fake_run_folder(root: Path, config: str, stamp: str = "2026-11-23_10-00-00", epochs=(1, 2, 3),
                    val: float = 1.2) -> None:
    """What a DeepH run leaves: a log and a saved model (before a walltime kill, or at its end). A run that exits
    0 counts as completed only with epochs in its log."""
    run = root / "outputs" / config / stamp
    (run / "model" / "params" / "latest.pytree" / f"epoch_{epochs[-1]}").mkdir(parents=True)
    lines = [f"[ 11.23-10:0{e}:00 ] [train] Epoch {e} | Time 1.0 s | Train-Loss {1.0 / e:.6e} | "
             f"Val-Loss {val / e:.6e} | Scale 1.0" for e in epochs]
    (run / "deepx.log").write_text("\n".join(lines) + "\n")


def states(root: Path, env: dict) -> dict:
    result = hpc(root, env, "status", str(root), "--format", "json")
    assert result.returncode == 0, result.stderr
    return {c["config"]: c for c in json.loads(result.stdout)["configs"]}


@pytest.mark.parametrize("flavor", ["pbspro", "torque"])
def test_submit_poll_complete_timeout_resume(tmp_path, flavor):
    root = make_sweep(tmp_path, flavor)
    env = fakepbs.environ(tmp_path, flavor)
    assert hpc(root, env, "generate", str(root)).returncode == 0
    result = hpc(root, env, "submit", str(root))
    assert result.returncode == 0, result.stderr
    qsubs = [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qsub"]
    assert len(qsubs) == 1 and "-V" not in qsubs[0] and qsubs[0][1].endswith(".sh")
    script = Path(qsubs[0][1]).read_text()
    if flavor == "pbspro":
        assert "#PBS -J 0-2" in script and "#PBS -l select=1:ncpus=4:ngpus=2:mem=16384mb" in script
        assert "^array_index^" in script and "PBS_ARRAY_INDEX" in script
    else:
        assert "#PBS -t 0-2" in script and "#PBS -l nodes=1:ppn=4:gpus=2,mem=16384mb" in script
        assert "PBS_ARRAYID" in script
    assert "#PBS -q gpu" in script and "#PBS -l walltime=01:00:00" in script
    snap = states(root, env)
    job_ids = [snap[f"config00{i}"]["job_id"] for i in (1, 2, 3)]
    assert job_ids[0].startswith("0[0].") or "[0]" in job_ids[0]
    submission = job_ids[0].replace("[0]", "[]")

    fakepbs.set_state(submission, 0, "R", path=env["FAKE_PBS_STATE"])
    fakepbs.set_state(submission, 1, "R", path=env["FAKE_PBS_STATE"])
    assert hpc(root, env, "poll", str(root), "--force").returncode == 0
    snap = states(root, env)
    assert snap["config001"]["state"] == "running" and snap["config003"]["state"] == "pending"

    fake_run_folder(root, "config001")
    fake_run_folder(root, "config002")
    fakepbs.set_state(submission, 0, "done", 0, path=env["FAKE_PBS_STATE"])
    fakepbs.set_state(submission, 1, "done", TIMEOUT_EXIT[flavor], path=env["FAKE_PBS_STATE"])
    fakepbs.set_state(submission, 2, "done", 3, path=env["FAKE_PBS_STATE"])
    polled = hpc(root, env, "poll", str(root), "--force")
    assert polled.returncode == 0, polled.stderr
    snap = states(root, env)
    assert snap["config001"]["state"] == "completed"
    assert snap["config003"]["state"] == "failed" and snap["config003"]["attempt"] == 1
    # The timed-out run was resubmitted from its checkpoint in the same poll.
    assert snap["config002"]["attempt"] == 2 and snap["config002"]["state"] == "pending", polled.stdout
    assert snap["config002"]["best_val_loss"] == pytest.approx(0.4)
    resumed = (root / "script" / "run" / "config002.a2.toml").read_text()
    assert "enable = true" in resumed and "2026-11-23_10-00-00" in resumed
    assert 'device = "gpu*2"' in resumed  # the allocation view of gpu*4:0-1
    qsubs = [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qsub"]
    assert len(qsubs) == 2
    second = Path(qsubs[1][1]).read_text()
    assert "#PBS -J" not in second and "#PBS -t" not in second or flavor == "torque"

    resub = snap["config002"]["job_id"]
    fake_run_folder(root, "config002", "2026-11-23_11-00-00", epochs=(4, 5))  # the resumed run's own folder
    fakepbs.set_state(resub, None if "[" not in resub else 0, "done", 0, path=env["FAKE_PBS_STATE"])
    assert hpc(root, env, "poll", str(root), "--force").returncode == 0
    snap = states(root, env)
    assert snap["config002"]["state"] == "completed" and snap["config002"]["attempt"] == 2
    # One live query per poll, never one per job.
    qstats = [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qstat" and "-Bf" not in c
              and "-Qf" not in c and "-Q" not in c and "-B" not in c]  # not the limits' or the shape's queries
    polls = 3
    assert len(qstats) <= polls + 2  # + the submits' own live queries


@pytest.mark.parametrize("flavor", ["pbspro", "torque"])
def test_cancel_uses_exact_ids(tmp_path, flavor):
    root = make_sweep(tmp_path, flavor)
    env = fakepbs.environ(tmp_path, flavor)
    hpc(root, env, "generate", str(root))
    hpc(root, env, "submit", str(root))
    result = hpc(root, env, "cancel", str(root), "config002")
    assert result.returncode == 0, result.stderr
    qdels = [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qdel"]
    assert len(qdels) == 1 and len(qdels[0]) == 2 and "[1]" in qdels[0][1]
    result = hpc(root, env, "cancel", str(root), "--yes")
    qdels = [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qdel"]
    assert all("-u" not in c and "all" not in c for c in qdels)
    snap = states(root, env)
    assert {c["state"] for c in snap.values()} == {"cancelled"}


def test_pbs_cap_counts_hand_jobs_and_a_refusal_keeps_configs_waiting(tmp_path):
    root = make_sweep(tmp_path, "pbspro")
    env = dict(fakepbs.environ(tmp_path, "pbspro"), FAKE_PBS_MAX_QUEUED="3", USER=getpass.getuser())
    hpc(root, env, "generate", str(root))
    hand = tmp_path / "hand.sh"
    hand.write_text("#!/bin/bash\n#PBS -N by-hand\nsleep 600\n")
    assert subprocess.run([str(fakepbs.FAKES_DIR / "qsub"), str(hand)], env=env).returncode == 0
    # The first submit sees every job of the user (qselect -u): room for 2 of the 3.
    result = hpc(root, env, "submit", str(root))
    assert result.returncode == 0, result.stderr
    snap = states(root, env)
    assert sorted(c["state"] for c in snap.values()) == ["pending", "pending", "waiting"]
    # Later the live query names only our jobs; qsub refuses at the server's cap: nothing recorded.
    result = hpc(root, env, "submit", str(root))
    assert result.returncode == 0, result.stderr
    snap = states(root, env)
    waiting = [c for c in snap.values() if c["state"] == "waiting"]
    assert len(waiting) == 1 and waiting[0]["job_id"] is None
    assert "limit" in waiting[0]["reason"], waiting[0]["reason"]
    assert len([j for j in fakepbs.jobs(env["FAKE_PBS_STATE"]).values() if not j["deleted"]]) == 2


def test_manual_resubmit_with_new_walltime_and_fresh_start(tmp_path):
    root = make_sweep(tmp_path, "pbspro")
    env = fakepbs.environ(tmp_path, "pbspro")
    hpc(root, env, "generate", str(root))
    hpc(root, env, "submit", str(root))
    submission = states(root, env)["config001"]["job_id"].replace("[0]", "[]")
    fakepbs.set_state(submission, 2, "done", 1, path=env["FAKE_PBS_STATE"])
    assert hpc(root, env, "poll", str(root), "--force", "--no-submit").returncode == 0
    assert states(root, env)["config003"]["state"] == "failed"
    refused = hpc(root, env, "resubmit", str(root), "config001")
    assert refused.returncode == 2 and "cancel it first" in refused.stderr  # still queued: never twice
    result = hpc(root, env, "resubmit", str(root), "config003", "--walltime", "2:00:00", "--fresh")
    assert result.returncode == 0, result.stderr
    snap = states(root, env)
    assert snap["config003"]["attempt"] == 2 and snap["config003"]["state"] == "pending"
    last = [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qsub"][-1]
    script = Path(last[1]).read_text()
    assert "#PBS -l walltime=02:00:00" in script and "#PBS -J" not in script


@pytest.mark.parametrize("flavor", ["pbspro", "torque"])
def test_early_stop_deletes_only_the_losing_task(tmp_path, flavor):
    """[early_stop] on PBS Pro and Torque: the poll judges two running configs at rung 2 and qdels only the worse
    one's own array task (its exact id); the winner and the queued config are left alone."""
    root = make_sweep(tmp_path, flavor)
    with open(root / "sweep.toml", "a") as handle:
        handle.write('[early_stop]\nrule = "asha"\nmin_epochs = 2\nreduction = 2\nrungs = [2]\n')
    env = fakepbs.environ(tmp_path, flavor)
    assert hpc(root, env, "generate", str(root)).returncode == 0
    assert hpc(root, env, "submit", str(root)).returncode == 0
    snap = states(root, env)
    submission = snap["config001"]["job_id"].replace("[0]", "[]")
    fakepbs.set_state(submission, 0, "R", path=env["FAKE_PBS_STATE"])
    fakepbs.set_state(submission, 1, "R", path=env["FAKE_PBS_STATE"])
    fake_run_folder(root, "config001", epochs=(1, 2), val=0.5)
    fake_run_folder(root, "config002", epochs=(1, 2), val=1.5)
    polled = hpc(root, env, "poll", str(root), "--force")
    assert polled.returncode == 0, polled.stderr
    assert "config002: running -> stopped (early stop: best val 0.75 at epoch 2; rung 2 keeps ≤ 0.25" in polled.stdout
    qdels = [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qdel"]
    assert qdels == [["qdel", snap["config002"]["job_id"]]], qdels
    snap = states(root, env)
    assert snap["config002"]["state"] == "stopped" and snap["config002"]["epochs_saved"] == 60 - 2  # the base: 60
    assert snap["config001"]["state"] == "running" and snap["config003"]["state"] == "pending"


def test_early_stop_judges_a_run_once_per_rung_across_polls(tmp_path):
    """asha's record of the rung each run passed lives in the state: config001, kept at rung 2 when it arrived
    first, is not judged there again by a later poll in which a better run arrives (it would be stopped then)."""
    root = make_sweep(tmp_path, "pbspro")
    with open(root / "sweep.toml", "a") as handle:
        handle.write('[early_stop]\nrule = "asha"\nmin_epochs = 2\nreduction = 2\nrungs = [2]\n')
    env = fakepbs.environ(tmp_path, "pbspro")
    assert hpc(root, env, "generate", str(root)).returncode == 0
    assert hpc(root, env, "submit", str(root)).returncode == 0
    submission = states(root, env)["config001"]["job_id"].replace("[0]", "[]")
    fakepbs.set_state(submission, 0, "R", path=env["FAKE_PBS_STATE"])
    fakepbs.set_state(submission, 1, "R", path=env["FAKE_PBS_STATE"])
    fake_run_folder(root, "config001", epochs=(1, 2), val=1.0)
    fake_run_folder(root, "config002", epochs=(1,), val=1.0)
    assert hpc(root, env, "poll", str(root), "--force").returncode == 0
    fake_run_folder(root, "config002", epochs=(1, 2), val=0.2)  # now the best at rung 2
    polled = hpc(root, env, "poll", str(root), "--force")
    assert polled.returncode == 0, polled.stderr
    snap = states(root, env)
    assert snap["config001"]["state"] == "running" and snap["config002"]["state"] == "running", polled.stdout
    assert not [c for c in fakepbs.calls(env["FAKE_PBS_LOG"]) if c[0] == "qdel"]
