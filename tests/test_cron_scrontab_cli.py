"""#15 item 6 through the CLI: a crontab that is missing or forbidden is one clear line (not "internal error:
PermissionError"), and `cron install|show|remove --via scrontab` keeps exactly one entry per sweep among the user's
own scrontab lines. A stand-in scrontab (below) behaves as Slurm's scrontab.c does: ``-l`` prints the crontab or
"no crontab for USER" (exit 1), ``scrontab FILE`` replaces it, ``-e`` runs $VISUAL on a copy and takes it back
(Slurm 20.11), and with ScronParameters unset every call says "scrontab is disabled on this cluster"."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from test_cron_and_polls import FAKE_CRONTAB, hpc, make_sweep

FAKE_SCRONTAB = """#!/bin/sh
table="$FAKE_SCRONTAB_FILE"
echo "scrontab $*" >> "$FAKE_SCRONTAB_CALLS"
if [ -n "${FAKE_SCRON_DISABLED:-}" ]; then
  echo "scrontab: fatal: scrontab is disabled on this cluster" >&2; exit 1
fi
case "$1" in
  -l) if [ -f "$table" ]; then cat "$table"; else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -e) copy=$(mktemp); [ -f "$table" ] && cat "$table" > "$copy"; "$VISUAL" "$copy" && cat "$copy" > "$table";
      rm -f "$copy" ;;
  -*) exit 2 ;;
  *) cat "$1" > "$table" ;;
esac
"""

SLURM_VERSION = """#!/bin/sh
echo "slurm-wlm ${FAKE_SLURM_VERSION:-22.05.8}"
"""


def scron_env(tmp_path: Path, **extra: str) -> dict:
    bin_dir = tmp_path / "scron-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("scrontab", FAKE_SCRONTAB), ("sbatch", SLURM_VERSION)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_SCRONTAB_FILE=str(tmp_path / "scron"),
                FAKE_SCRONTAB_CALLS=str(tmp_path / "scron-calls"), SLURM_CONF="/etc/slurm/slurm.conf", **extra)


def test_a_missing_crontab_is_one_clear_line(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    env = dict(os.environ, HPC_SWEEP_CRONTAB=str(tmp_path / "no-such-crontab"))
    result = hpc("cron", "install", str(root), env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "hpc-sweep: error: crontab is not installed on this host; on Slurm use 'hpc-sweep cron install --via "
        "scrontab', or run 'hpc-sweep poll' another way"]


def test_a_crontab_the_user_may_not_run_is_one_clear_line(tmp_path):
    """Seen on login nodes: /usr/bin/crontab mode 2750 root:crontab (exec refused: PermissionError), or a crontab
    that answers through cron.allow/cron.deny."""
    root = make_sweep(tmp_path / "sweep")
    locked = tmp_path / "crontab"
    locked.write_text(FAKE_CRONTAB)
    locked.chmod(0o600)  # not executable: exec fails with EACCES even for root
    result = hpc("cron", "install", str(root), env=dict(os.environ, HPC_SWEEP_CRONTAB=str(locked)))
    assert result.returncode == 1 and "internal error" not in result.stderr
    assert "this host does not let you run crontab (permission denied)" in result.stderr
    assert "--via scrontab" in result.stderr and len(result.stderr.splitlines()) == 1

    denied = tmp_path / "denied"
    denied.write_text("#!/bin/sh\necho 'You (alice) are not allowed to use this program (crontab)' >&2\n"
                      "echo 'See crontab(1) for more information' >&2\nexit 1\n")
    denied.chmod(0o755)
    result = hpc("cron", "show", str(root), env=dict(os.environ, HPC_SWEEP_CRONTAB=str(denied)))
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "this host does not let you use crontab (You (alice) are not allowed to use this program (crontab))" \
        in result.stderr


def test_scrontab_install_twice_keeps_one_entry_among_the_users_own(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    own = "# my own\n#SCRON --time=5\n0 5 * * * /home/me/backup.sh\n"
    (tmp_path / "scron").write_text(own)
    env = scron_env(tmp_path)
    for every in ("10m", "5m"):
        result = hpc("cron", "install", str(root), "--every", every, "--via", "scrontab", env=env)
        assert result.returncode == 0, result.stderr
    text = (tmp_path / "scron").read_text()
    assert text.startswith(own)
    ours = text[len(own):].splitlines()
    assert ours[0] == f"# hpc-sweep poll begin: {root}" and ours[-1] == f"# hpc-sweep poll end: {root}"
    assert "#SCRON --job-name=hpcs-poll-cronned" in ours and f"#SCRON --chdir={root}" in ours
    (cron_line,) = [line for line in ours if not line.startswith("#")]
    assert cron_line.startswith("*/5 * * * * cd ") and f" poll {root}" in cron_line
    assert "SLURM_CONF=/etc/slurm/slurm.conf" in cron_line
    # The poll command runs as the job would run it: sh, no login environment.
    run = subprocess.run(["/bin/sh", "-c", cron_line.split(" * * * * ", 1)[1]], env={}, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr

    shown = hpc("cron", "show", str(root), "--via", "scrontab", env=env)
    assert shown.returncode == 0 and shown.stdout.splitlines() == ours
    assert hpc("cron", "remove", str(root), "--via", "scrontab", env=env).stdout.strip() == "removed"
    assert (tmp_path / "scron").read_text() == own
    assert hpc("cron", "remove", str(root), "--via", "scrontab", env=env).stdout.strip() == "no entry for this sweep"


def test_scrontab_of_slurm_20_11_is_written_through_its_editor(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    env = scron_env(tmp_path, FAKE_SLURM_VERSION="20.11.9")
    result = hpc("cron", "install", str(root), "--via", "scrontab", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "scron-calls").read_text().splitlines() == ["scrontab -l", "scrontab -e"]
    assert f"# hpc-sweep poll begin: {root}" in (tmp_path / "scron").read_text()
    assert not list((root / ".hpc_sweep").glob("scrontab-*"))  # the new crontab and the editor are gone


def test_scrontab_disabled_on_the_cluster_is_one_line(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    result = hpc("cron", "install", str(root), "--via", "scrontab", env=scron_env(tmp_path, FAKE_SCRON_DISABLED="1"))
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "scrontab is disabled on this cluster (ScronParameters=enable is not set)" in result.stderr
    assert not (tmp_path / "scron").exists()
