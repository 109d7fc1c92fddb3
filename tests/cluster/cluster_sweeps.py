"""Sweeps on the private Slurm test cluster (slurm_cluster.py), shared by the Slurm tests (test_slurm_e2e,
test_faults_slurm, test_slurm_chained_and_frozen) and benchmarks/run.py: a sweep folder over the demo's
DeepH-shaped base and trainer, ``hpc-sweep`` run as the cluster's ordinary user, its status, forced polls until every
config has ended, and read-only looks into its state database.

On sys.path through tests/conftest.py (the tests) or benchmarks/run.py, like slurm_cluster.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import tomli_w

REPO = Path(__file__).resolve().parents[2]
DEMO_BASE = REPO / "examples" / "demo" / "base.toml"
DEMO_TRAINER = REPO / "examples" / "demo_trainer" / "train.py"
# A DeepH demo run of a few seconds: one epoch of a small model on a small dataset.
TINY = {
    "process.train.max_epoch": 1,
    "process.train.dataloader.train_size": 40,
    "process.train.dataloader.validate_size": 16,
    "process.train.dataloader.test_size": 8,
    "model.advanced.num_blocks": 1,
}
# The test cluster's site profile: one CPU and a little memory per task, polls as often as a test wants.
SLURM_SITE = {"scheduler": "slurm", "cpus_per_task": 1, "mem": "50M", "poll_min_interval": "1s"}


def write_sweep(root: Path, name: str, command: str, body: str, site: Mapping[str, Any], **sweep: Any) -> None:
    """sweep.toml, site.toml and the demo's base config in ``root``. ``body``: the TOML after the [sweep] table
    (grid, zips, fixed, configs); ``sweep``: more keys of the [sweep] table (walltime, max_retries...)."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO_BASE, root / "configs" / ".base_config.toml")
    (root / "site.toml").write_text(tomli_w.dumps(dict(site)))
    head = {"name": name, "program": "deeph", "base": "configs/.base_config.toml", "command": command,
            "site": "site.toml", **sweep}
    (root / "sweep.toml").write_text(tomli_w.dumps({"sweep": head}) + "\n" + body)


def make_user_sweep(cluster, name: str, command: str, body: str, site: Optional[Mapping[str, Any]] = None,
                    scripts: Optional[Mapping[str, str]] = None, fill: Optional[Mapping[str, Any]] = None,
                    generate: bool = False, **sweep: Any) -> Path:
    """A sweep folder of the cluster's test user, with the demo trainer beside it as train.py. ``scripts``: file
    name -> text of executable helpers, formatted with {root}, {python} (the user's venv), {train} and ``fill``;
    the command is formatted the same way. ``generate``: run ``hpc-sweep generate`` (it must succeed)."""
    root = cluster.make_user_dir(name)
    fill = {"root": root, "python": cluster.user_bin / "python", "train": root / "train.py", **(fill or {})}
    shutil.copy(DEMO_TRAINER, root / "train.py")
    for file_name, text in (scripts or {}).items():
        (root / file_name).write_text(text.format(**fill))
        (root / file_name).chmod(0o755)
    write_sweep(root, name, command.format(**fill), body, SLURM_SITE if site is None else site, **sweep)
    subprocess.run(["chown", "-R", f"{cluster.user}:", str(root)], check=True)
    if generate:
        result = hpc(cluster, root, "generate")
        assert result.returncode == 0, result.stderr
    return root


def toml_body(grid: Optional[Mapping[str, list]] = None, fixed: Optional[Mapping[str, Any]] = None) -> str:
    """The [grid] and [fixed] tables of a sweep.toml."""
    tables = {key: dict(value) for key, value in (("grid", grid), ("fixed", fixed)) if value}
    return tomli_w.dumps(tables)


def hpc(cluster, root: Path, command: str, *args: str, env: Optional[Mapping[str, str]] = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """``hpc-sweep COMMAND ROOT ARGS...`` as the cluster's test user, in the sweep folder."""
    return cluster.run_as_user([str(cluster.user_bin / "hpc-sweep"), command, str(root), *args], cwd=root, env=env,
                               timeout=timeout)


def status(cluster, root: Path) -> dict:
    """``hpc-sweep status --format json``: the status object."""
    result = hpc(cluster, root, "status", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def poll_until_final(cluster, root: Path, timeout: float = 300, interval: float = 1,
                     also_submit: bool = False) -> dict:
    """Forced polls (and, with ``also_submit``, submits) until no config has work left; the last status."""
    from hpc_sweep.state.states import UNFINISHED  # here: benchmarks/run.py says so when hpc_sweep is missing

    def final() -> Optional[dict]:
        result = hpc(cluster, root, "poll", "--force")
        assert result.returncode == 0, result.stdout + result.stderr
        snapshot = status(cluster, root)
        if not any(c["state"] in UNFINISHED for c in snapshot["configs"]):
            return snapshot
        if also_submit:
            hpc(cluster, root, "submit")
        return None

    return cluster.wait_for(final, timeout=timeout, interval=interval, what="every config to reach a final state")


def read_state(root: Path, sql: str, args: Iterable[Any] = ()) -> List[tuple]:
    """Rows of a query on the sweep's state database, opened read-only (it changes nothing, takes no lock)."""
    conn = sqlite3.connect(f"file:{root / '.hpc_sweep' / 'state.db'}?mode=ro", uri=True)
    try:
        return [tuple(row) for row in conn.execute(sql, tuple(args))]
    finally:
        conn.close()


def prefix_of(root: Path) -> str:
    """The sweep's job-name prefix, as recorded in its state."""
    return read_state(root, "SELECT value FROM meta WHERE key = 'prefix'")[0][0]


def by_config(snapshot: Mapping[str, Any]) -> Dict[str, dict]:
    """Config name -> its record in a status object."""
    return {c["config"]: c for c in snapshot["configs"]}
