"""A controller time-out during sbatch: the job may exist anyway. It is looked up by its unique name before any
retry, so it is recorded once and never submitted twice (stand-in Slurm commands on PATH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

FAKE_SBATCH = """#!/bin/sh
# Queues the job, then answers like a controller that timed out (the job exists; the reply was lost).
name=$(sed -n 's/^#SBATCH --job-name=//p' "$3")
echo "sbatch $*" >> "$FAKE_CALLS"
echo "77|$name" >> "$FAKE_QUEUE"
echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2
exit 1
"""

FAKE_SQUEUE = """#!/bin/sh
echo "squeue $*" >> "$FAKE_CALLS"
[ -f "$FAKE_QUEUE" ] || exit 0
while IFS='|' read -r id name; do
  for i in 0 1; do echo "${id}_$i|$((id + 1 + i))|$id|$i|$name|PENDING|Priority|0:00|1:00:00|"; done
done < "$FAKE_QUEUE"
"""


def _sbatch_calls(calls: Path) -> int:
    return sum(1 for line in calls.read_text().splitlines() if line.startswith("sbatch "))


def test_timed_out_sbatch_is_found_by_name_not_resubmitted(tmp_path):
    root = tmp_path / "sweep"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text("lr = 0.1\n")
    (root / "sweep.toml").write_text(textwrap.dedent("""\
        [sweep]
        name = "flaky"
        program = "generic"
        base = "configs/.base_config.toml"
        command = "true {config}"
        site = "slurm"
        [grid]
        lr = [0.1, 0.2]
        [log]
        path = "train.log"
        epoch = "epoch (\\\\d+)"
        """))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE), ("scontrol", "#!/bin/sh\nexit 0\n"),
                       ("sacctmgr", "#!/bin/sh\nexit 0\n"), ("sinfo", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_CALLS=str(calls),
               FAKE_QUEUE=str(tmp_path / "queue"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *a], env=env, capture_output=True,
                                    text=True)
    assert run("generate", str(root)).returncode == 0
    result = run("submit", str(root))
    assert result.returncode == 0, result.stderr
    assert _sbatch_calls(calls) == 1
    snap = json.loads(run("status", str(root), "--format", "json").stdout)
    assert [c["job_id"] for c in snap["configs"]] == ["77_0", "77_1"]
    assert {c["state"] for c in snap["configs"]} == {"pending"}
    again = run("submit", str(root))
    assert again.returncode == 0 and _sbatch_calls(calls) == 1
