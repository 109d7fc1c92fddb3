"""`hpc-sweep cancel`: cancel this sweep's jobs by their exact ids — never by user or by name pattern."""

from __future__ import annotations

from typing import Optional, Sequence

from hpc_sweep import shell
from hpc_sweep.errors import RuntimeFailure

CANCELLABLE = ("pending", "running")


def cancel(session, names: Optional[Sequence[str]] = None) -> tuple[list, list]:
    """Returns (ids passed to the scheduler, configs marked cancelled). The caller holds the sweep lock."""
    store, adapter = session.store, session.scheduler
    configs = {c["name"]: c for c in store.configs()}
    if names:
        store.require_names(names)
    wanted = set(names) if names else set(configs)
    active = [a for a in store.attempts() if a["state"] in CANCELLABLE and a["config"] in wanted
              and configs[a["config"]]["attempt"] == a["attempt"] and a["job_id"]]
    ids = _ids_to_cancel(session, active)
    if ids:
        result = shell.run(adapter.cancel_argv(ids), timeout=120)
        if result.returncode != 0 and not _only_finished_jobs(result):
            raise RuntimeFailure(f"{' '.join(adapter.cancel_argv(ids))[:200]} failed: "
                                 f"{(result.stderr or result.stdout).strip()[:300]}")
    marked = []
    with store.transaction():
        for att in active:
            store.update_attempt(att["config"], att["attempt"], state="cancelled", reason="cancelled by hpc-sweep cancel")
        for name in wanted:
            cfg = configs[name]
            if cfg["state"] in ("pending", "running", "waiting", "generated"):
                store.set_config_state(name, "cancelled", "cancelled by hpc-sweep cancel")
                marked.append(name)
        store.add_event("cancel", f"{len(ids)} id(s): {' '.join(ids)[:500]}")
    store.backup()  # a restored older copy must not bring cancelled configs back to the queue
    return ids, marked


def _ids_to_cancel(session, active: list) -> list:
    """Whole submissions by their id where every task of it is being cancelled, single tasks otherwise."""
    by_submission: dict = {}
    for att in active:
        by_submission.setdefault(att["submission"], []).append(att)
    subs = {s["name"]: s for s in session.store.submissions()}
    ids = []
    for sub_name, atts in by_submission.items():
        sub = subs.get(sub_name)
        all_tasks = session.store.conn.execute(
            "SELECT COUNT(*) FROM attempts WHERE submission = ? AND state IN ('pending', 'running')",
            (sub_name,)).fetchone()[0]
        if sub and sub["scheduler_id"] and all_tasks == len(atts):
            ids.append(sub["scheduler_id"])
        else:
            ids.extend(a["job_id"] for a in atts)
    return ids


def _only_finished_jobs(result) -> bool:
    text = (result.stderr + result.stdout).lower()
    return "already completing or completed" in text or "invalid job id" in text or "unknown job id" in text \
        or "job has finished" in text
