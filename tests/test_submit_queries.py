"""What submit asks the scheduler before sbatch: the live query and (first submit) the limit queries run at once,
and a failure of any of them ends exactly as it did when they ran one after the other. Stand-in Slurm commands on
PATH; every call of hpc_sweep.common.shell is logged with its start and seconds (HPC_SWEEP_CALL_LOG)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FAKES = {
    "squeue": """#!/bin/sh
sleep "${FAKE_SLEEP:-0}"
if [ -n "${FAKE_OLD_SLURM:-}" ] && [ "$1" = "--me" ]; then
  echo "squeue: unrecognized option '--me'" >&2
  echo 'Try "squeue --help" for more information' >&2
  exit 1
fi
if [ -n "${FAKE_SQUEUE_DOWN:-}" ]; then
  echo "squeue: error: Unable to contact slurm controller (connect failure)" >&2
  exit 1
fi
exit 0
""",
    "scontrol": """#!/bin/sh
sleep "${FAKE_SLEEP:-0}"
case "$2" in
  config) printf 'MaxArraySize            = 1001\\nMaxJobCount             = 10000\\n' ;;
  assoc_mgr)
    user=${3#users=}
    printf 'ClusterName=c Account=a UserName=%s(1000) Partition= Priority=0 ID=2\\n' "$user"
    printf '    MaxSubmitJobs=%s(0) MaxJobs=N(0)\\n' "${FAKE_CAP:-N}" ;;
esac
""",
    "sacctmgr": """#!/bin/sh
sleep "${FAKE_SLEEP:-0}"
if [ -n "${FAKE_SACCTMGR_DOWN:-}" ]; then
  echo "sacctmgr: error: Problem talking to the database: Connection refused" >&2
  exit 1
fi
echo "normal|"
""",
    "sbatch": """#!/bin/sh
echo 4242
""",
    "sacct": """#!/bin/sh
echo "sacct: error: Slurm accounting storage is disabled" >&2
exit 1
""",
    "sinfo": """#!/bin/sh
sleep "${FAKE_SLEEP:-0}"
echo "${FAKE_SINFO-debug*|up|infinite|1|16|64000|gpu:8|idle|(null)}"
""",
}


@pytest.fixture
def sweep(tmp_path: Path):
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text("lr = 0.1\n")
    (root / "sweep.toml").write_text(textwrap.dedent("""\
        [sweep]
        name = "asks"
        program = "generic"
        base = "configs/.base_config.toml"
        command = "true {config}"
        site = "slurm"
        [grid]
        lr = [0.1, 0.2, 0.3, 0.4, 0.5]
        [log]
        path = "train.log"
        epoch = "epoch (\\\\d+)"
        """))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HPC_SWEEP_CALL_LOG=str(calls))
    for key in ("FAKE_SLEEP", "FAKE_CAP", "FAKE_SQUEUE_DOWN", "FAKE_SACCTMGR_DOWN", "FAKE_SINFO", "FAKE_OLD_SLURM"):
        env.pop(key, None)

    def run(*args, **extra):
        return subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], env=dict(env, **extra),
                              capture_output=True, text=True)

    assert run("generate", str(root)).returncode == 0
    return root, run, calls


def _calls(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _meta(root: Path, key: str):
    conn = sqlite3.connect(str(root / ".hpc_sweep" / "state.db"))
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def _states(root: Path) -> dict:
    conn = sqlite3.connect(str(root / ".hpc_sweep" / "state.db"))
    try:
        return dict(conn.execute("SELECT name, state FROM configs"))
    finally:
        conn.close()


def _reasons(root: Path, state: str) -> list:
    conn = sqlite3.connect(str(root / ".hpc_sweep" / "state.db"))
    try:
        return [row[0] for row in conn.execute("SELECT reason FROM configs WHERE state = ?", (state,))]
    finally:
        conn.close()


def _output_folders(root: Path) -> list:
    outputs = root / "outputs"
    return sorted(p.name for p in outputs.iterdir()) if outputs.exists() else []


def test_first_submit_asks_everything_at_once(sweep):
    root, run, calls = sweep
    result = run("submit", str(root), FAKE_SLEEP="0.4")
    assert result.returncode == 0, result.stderr
    asked = [c for c in _calls(calls) if c["argv"][0] != "sbatch"]
    # The live query, the limits (scontrol show config and assoc_mgr, sacctmgr show qos) and the cluster's shape
    # (sinfo, scontrol show partition; the config, QOS and assoc_mgr queries are shared; with no QOS in the
    # profile the associations are assoc_mgr's, not sacctmgr's): once each.
    assert sorted(" ".join(c["argv"][:3]) for c in asked) == [
        "sacctmgr -n -P", "scontrol show assoc_mgr", "scontrol show config",
        "scontrol show partition", "sinfo -h -e", "squeue --me -r"]
    # All of them were running together: each started before any of them had ended.
    assert max(c["start"] for c in asked) < min(c["start"] + c["seconds"] for c in asked), asked
    sbatch = [c for c in _calls(calls) if c["argv"][0] == "sbatch"]
    assert len(sbatch) == 1 and max(c["start"] + c["seconds"] for c in asked) <= sbatch[0]["start"]
    assert set(_states(root).values()) == {"pending"}
    assert _output_folders(root) == [f"config00{i}" for i in range(1, 6)]


def test_cached_limits_leave_only_the_live_query(sweep):
    root, run, calls = sweep
    assert run("submit", str(root), FAKE_CAP="2").returncode == 0
    calls.unlink()
    again = run("submit", str(root), FAKE_CAP="2")
    assert again.returncode == 0, again.stderr
    assert [c["argv"][0] for c in _calls(calls)] == ["squeue", "sbatch"]


def test_a_failed_limit_query_leaves_its_limit_to_the_others(sweep):
    root, run, calls = sweep
    result = run("submit", str(root), FAKE_CAP="3", FAKE_SACCTMGR_DOWN="1", FAKE_SLEEP="0.1")
    assert result.returncode == 0, result.stderr
    failed = [c for c in _calls(calls) if c["argv"][0] == "sacctmgr"]
    assert [c["rc"] for c in failed] == [1]  # the QOS (limits and shape; the associations are assoc_mgr's)
    limits = json.loads(_meta(root, "limits"))
    assert (limits["max_queued"], limits["max_array_size"], limits["max_job_count"]) == (3, 1001, 10000)
    states = _states(root)
    assert sorted(states.values()) == ["pending"] * 3 + ["waiting"] * 2
    assert set(_reasons(root, "waiting")) == {"queue cap 3 reached"}
    # Output folders only for what was submitted: those made while waiting for the answers were removed again.
    assert _output_folders(root) == sorted(name for name, state in states.items() if state == "pending")


def test_every_limit_query_failing_falls_back_to_the_profile(sweep):
    root, run, calls = sweep
    (root / "site.toml").write_text('scheduler = "slurm"\nmax_queued = 2\n')
    text = (root / "sweep.toml").read_text().replace('site = "slurm"', 'site = "site.toml"')
    (root / "sweep.toml").write_text(text)
    bin_dir = Path(calls).parent / "bin"
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'scontrol: error: Unable to contact slurm controller' >&2\n"
                                      "exit 1\n")
    result = run("submit", str(root), FAKE_SACCTMGR_DOWN="1")
    assert result.returncode == 0, result.stderr
    assert sorted(_states(root).values()) == ["pending"] * 2 + ["waiting"] * 3
    limits = json.loads(_meta(root, "limits"))
    assert limits["max_queued"] is None and limits["max_array_size"] is None  # the profile's cap applied, not cached


def test_unreachable_scheduler_submits_nothing_and_leaves_nothing(sweep):
    root, run, calls = sweep
    result = run("submit", str(root), FAKE_SQUEUE_DOWN="1", FAKE_SLEEP="0.2")
    assert result.returncode == 1
    assert "could not be reached" in result.stderr and "nothing was submitted" in result.stderr
    assert not [c for c in _calls(calls) if c["argv"][0] == "sbatch"]
    assert _meta(root, "limits") is None  # the answers that came are not kept: the next submit asks again
    assert set(_states(root).values()) == {"generated"}
    assert _output_folders(root) == []


def test_dry_run_writes_nothing_into_the_sweep(sweep):
    """#12 item 8: a dry run plans within the cap but writes no script, map, run config or output folder."""
    root, run, calls = sweep
    before = sorted(p.relative_to(root) for p in root.rglob("*") if ".hpc_sweep" not in p.parts)
    result = run("submit", str(root), "--dry-run", FAKE_CAP="2", FAKE_SLEEP="0.2")
    assert result.returncode == 0, result.stderr
    assert "would submit" in result.stdout and "2 config(s)" in result.stdout
    assert not [c for c in _calls(calls) if c["argv"][0] == "sbatch"]
    after = sorted(p.relative_to(root) for p in root.rglob("*") if ".hpc_sweep" not in p.parts)
    assert after == before and _output_folders(root) == []


def test_only_names_an_unknown_config(sweep):
    root, run, calls = sweep
    result = run("submit", str(root), "--only", "config009", FAKE_SLEEP="0.2")
    assert result.returncode == 2 and "config009" in result.stderr
    assert _output_folders(root) == []


def _gpu_sweep(root: Path, run, profile: str = "") -> None:
    (root / "site.toml").write_text('scheduler = "slurm"\n' + profile)
    text = (root / "sweep.toml").read_text().replace('site = "slurm"', 'site = "site.toml"\ndevice = "gpu*1"')
    (root / "sweep.toml").write_text(text)
    shutil.rmtree(root / ".hpc_sweep")  # a new sweep with GPU configs (generate keeps unchanged configs' shape)
    for path in (root / "configs").glob("config*"):
        path.unlink()
    generated = run("generate", str(root))
    assert generated.returncode == 0, generated.stderr


def test_a_shape_no_node_can_hold_is_refused_before_anything_is_queued(sweep):
    """#15: four CPUs per GPU on a node with 2 CPUs (and 8 GPUs): one line naming the partition, what its nodes
    have and the key to change; exit 2; no sbatch, no intent, no output folder."""
    root, run, calls = sweep
    _gpu_sweep(root, run, "cpus_per_gpu = 4\n")
    result = run("submit", str(root), FAKE_SINFO="gpu*|up|infinite|1|2|21694|gpu:8|idle|(null)")
    assert result.returncode == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    assert "partition gpu: no node has 4 CPUs for one task (nodes have 2 CPUs, 21694M, 8 gpu)" in line, line
    assert f"set cpus_per_gpu = 2 or fewer in {root / 'site.toml'}" in line, line
    assert not [c for c in _calls(calls) if c["argv"][0] == "sbatch"]
    assert set(_states(root).values()) == {"generated"} and _output_folders(root) == []
    conn = sqlite3.connect(str(root / ".hpc_sweep" / "state.db"))
    try:
        assert conn.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 0
    finally:
        conn.close()


def test_cpus_and_memory_per_gpu_come_from_the_nodes_and_the_dry_run_shows_them(sweep):
    root, run, calls = sweep
    _gpu_sweep(root, run)
    node = "gpu*|up|infinite|1|16|64000|gpu:8|idle|(null)"
    dry = run("submit", str(root), "--dry-run", FAKE_SINFO=node)
    assert dry.returncode == 0, dry.stderr
    assert "2 CPUs and 8000M per task" in dry.stdout, dry.stdout
    assert "cpus_per_gpu: 2 from the nodes of partition gpu (16 CPUs, 64000M, 8 gpu)" in dry.stdout, dry.stdout
    result = run("submit", str(root), FAKE_SINFO=node)
    assert result.returncode == 0, result.stderr
    (script,) = (root / "script").glob("*.sh")
    text = script.read_text()
    assert "#SBATCH --cpus-per-task=2\n" in text and "#SBATCH --mem=8000M\n" in text


def test_an_unread_shape_is_not_checked_and_keeps_the_old_defaults(sweep):
    """sinfo answering nothing (or failing): nothing to check against; 4 CPUs and 16G per GPU as before."""
    root, run, calls = sweep
    _gpu_sweep(root, run)
    result = run("submit", str(root), FAKE_SINFO="")
    assert result.returncode == 0, result.stderr
    (script,) = (root / "script").glob("*.sh")
    assert "#SBATCH --cpus-per-task=4\n" in script.read_text()


def test_a_slurm_without_squeue_me_is_asked_with_u_user_from_then_on(sweep):
    """#15 item 5: Slurm before 20.11 refuses --me; the live query is asked again with -u USER and the refusal
    remembered, instead of a query that fails forever as 'unreachable'."""
    root, run, calls = sweep
    first = run("submit", str(root), FAKE_OLD_SLURM="1")
    assert first.returncode == 0, first.stderr
    live = [c["argv"][:3] for c in _calls(calls) if c["argv"][0] == "squeue"]
    assert live[0][:1] == ["squeue"] and live[0][1] == "--me" and live[1][1] == "-u", live
    assert _meta(root, "squeue_me") == "refused"
    calls.unlink()
    polled = run("poll", str(root), "--force", FAKE_OLD_SLURM="1")
    assert polled.returncode == 0, polled.stderr
    assert [c["argv"][1] for c in _calls(calls) if c["argv"][0] == "squeue"] == ["-u"]


def test_a_polls_top_up_leaves_unfit_configs_waiting_with_the_reason_said_once(sweep):
    root, run, calls = sweep
    _gpu_sweep(root, run)
    assert run("submit", str(root), FAKE_CAP="2").returncode == 0
    (root / "site.toml").write_text('scheduler = "slurm"\ncpus_per_gpu = 20\n')  # more than the node's 16
    first = run("poll", str(root), "--force", FAKE_CAP="2")
    assert first.returncode == 0, first.stderr
    (said,) = [line for line in first.stdout.splitlines() if "not submitted" in line]
    # The room under the cap (2) made one chunk of two; it cannot run, the third waits for room as before.
    assert "2 config(s) of shape gpu:1 not submitted: partition debug: no node has 20 CPUs" in said, said
    assert sorted(_states(root).values()) == ["pending"] * 2 + ["waiting"] * 3
    reasons = sorted(_reasons(root, "waiting"))
    assert reasons[:2] == [reasons[0]] * 2 and reasons[2] == "queue cap 2 reached", reasons
    assert reasons[0].startswith("cannot run on this cluster: partition debug: no node has 20 CPUs"), reasons
    again = run("poll", str(root), "--force", FAKE_CAP="2")
    assert again.returncode == 0 and "not submitted" not in again.stdout, again.stdout
    assert [c["argv"][0] for c in _calls(calls)].count("sbatch") == 1
