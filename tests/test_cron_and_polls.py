"""cron line management, concurrent polls, status formats — through the real CLI with stand-in commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

FAKE_CRONTAB = """#!/bin/sh
# A stand-in for crontab(1): -l prints the table, - replaces it from stdin.
table="$FAKE_CRONTAB_FILE"
case "$1" in
  -l) if [ -f "$table" ]; then cat "$table"; else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -) cat > "$table" ;;
  *) exit 2 ;;
esac
"""

FAKE_SQUEUE = """#!/bin/sh
# A slow controller: every call is logged, each answer takes a while.
echo "squeue $*" >> "$FAKE_CALLS"
sleep 1.5
exit 0
"""


def hpc(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpc_sweep.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd)


def make_sweep(root: Path, site: str = "slurm") -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "configs" / ".base_config.toml").write_text("lr = 0.1\n")
    (root / "sweep.toml").write_text(textwrap.dedent(f"""\
        [sweep]
        name = "cronned"
        program = "generic"
        base = "configs/.base_config.toml"
        command = "true {{config}}"
        site = "{site}"
        [grid]
        lr = [0.1, 0.2]
        [log]
        path = "train.log"
        epoch = "epoch (\\\\d+)"
        """))
    assert hpc("generate", str(root)).returncode == 0
    return root


def test_cron_install_twice_keeps_one_line_with_environment(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    fake = tmp_path / "crontab"
    fake.write_text(FAKE_CRONTAB)
    fake.chmod(0o755)
    table = tmp_path / "table"
    table.write_text("0 1 * * * /usr/bin/backup.sh\n")
    slurm_bin = tmp_path / "opt-slurm-bin"  # a controller that answers at once: the line must find it via PATH
    slurm_bin.mkdir()
    for name in ("squeue", "sacct", "scontrol", "sacctmgr", "sinfo", "sbatch"):
        (slurm_bin / name).write_text("#!/bin/sh\n" + ("echo 42\n" if name == "sbatch" else "exit 0\n"))
        (slurm_bin / name).chmod(0o755)
    env = dict(os.environ, HPC_SWEEP_CRONTAB=str(fake), FAKE_CRONTAB_FILE=str(table),
               SLURM_CONF="/opt/slurm/etc/slurm.conf", PATH=f"{slurm_bin}:" + os.environ["PATH"])
    for _ in range(2):
        result = hpc("cron", "install", str(root), "--every", "5m", env=env)
        assert result.returncode == 0, result.stderr
    lines = table.read_text().splitlines()
    assert lines[0] == "0 1 * * * /usr/bin/backup.sh"
    ours = [line for line in lines if "hpc-sweep poll" in line]
    assert len(ours) == 1 and len(lines) == 2
    line = ours[0]
    assert line.startswith("*/5 * * * * ")
    assert "SLURM_CONF=/opt/slurm/etc/slurm.conf" in line and f"PATH={slurm_bin}:" in line
    exe = line.split(" poll ")[0].split()[-1]
    assert Path(exe).is_absolute() and os.access(exe, os.X_OK)
    assert hpc("cron", "show", str(root), env=env).stdout.strip() == line
    # The line itself runs: cron's sh, an empty environment.
    run = subprocess.run(["/bin/sh", "-c", line.split(" * * * * ", 1)[1]], env={}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert hpc("cron", "remove", str(root), env=env).returncode == 0
    assert table.read_text().splitlines() == ["0 1 * * * /usr/bin/backup.sh"]


def test_two_polls_at_once_one_acts_other_exits_silently(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "sacct", "scontrol", "sacctmgr", "sinfo"):
        (bin_dir / name).write_text(FAKE_SQUEUE if name == "squeue" else "#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_CALLS=str(calls))
    procs = [subprocess.Popen([sys.executable, "-m", "hpc_sweep.cli", "poll", str(root), "--no-submit"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert calls.read_text().count("squeue") == 1
    assert sum(1 for out, err in results if not out and not err) >= 1
    data = json.loads((root / "status.json").read_text())
    assert data["sweep"] == "cronned" and len(data["configs"]) == 2


def test_poll_within_min_interval_reuses_last_answer(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text('#!/bin/sh\necho "squeue $*" >> "$FAKE_CALLS"\n')
    for name in ("squeue", "sacct", "scontrol", "sacctmgr", "sinfo"):
        path = bin_dir / name
        if not path.exists():
            path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    calls = tmp_path / "calls"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_CALLS=str(calls))
    assert hpc("poll", str(root), "--no-submit", env=env).returncode == 0
    assert hpc("poll", str(root), "--no-submit", env=env).returncode == 0
    assert calls.read_text().count("squeue") == 1  # the slurm profile's 60 s floor
    assert hpc("poll", str(root), "--no-submit", "--force", env=env).returncode == 0
    assert calls.read_text().count("squeue") == 2


def test_unreachable_scheduler_changes_nothing_and_says_so(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 'squeue: error: Unable to contact slurm controller "
                                    "(connect failure)' >&2\nexit 1\n")
    (bin_dir / "squeue").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    before = json.loads(hpc("status", str(root), "--format", "json").stdout)
    result = hpc("poll", str(root), env=env)
    assert result.returncode == 0
    assert "could not be reached" in result.stdout
    after = json.loads(hpc("status", str(root), "--format", "json").stdout)
    assert [c["state"] for c in after["configs"]] == [c["state"] for c in before["configs"]]
    assert "could not be reached" in after["scheduler_note"]
    assert "could not be reached" in hpc("status", str(root)).stdout


def test_status_formats(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    csv_text = hpc("status", str(root), "--format", "csv").stdout
    assert csv_text.splitlines()[0].startswith("config,state,attempt,job_id,lr,")
    assert len(csv_text.splitlines()) == 3
    md = hpc("status", str(root), "--format", "markdown").stdout
    assert "| config" in md and "config002" in md
    table = hpc("status", str(root), "--state", "running").stdout
    assert "config001" not in table
    assert "\x1b[" not in hpc("status", str(root)).stdout
