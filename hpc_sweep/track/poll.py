"""`hpc-sweep poll`: refresh states, read new log lines, resume, top up the queue, write the snapshots.

Manners: ONE live-queue query and at most ONE batched accounting query per poll, whatever the number of jobs;
no scheduler query at all sooner than the minimum interval; back off after controller time-outs; a failed
query changes no state. Job-written markers decide where accounting is missing or disabled.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hpc_sweep.common import faults, shell
from hpc_sweep.submit import intents
from hpc_sweep.common.atomicio import write_atomic
from hpc_sweep.common.errors import RuntimeFailure
from hpc_sweep.schedulers.base import FINAL_STATES, SchedulerError, TaskRecord

ACTIVE = ("pending", "running")
GONE_GRACE_S = 600          # a task that just left the queue may be in no accounting yet (slurmdbd lag), and its
                            # exit marker may not be visible yet (NFS attribute caching)
RECHECK_LOST_S = 86400      # a lost task's accounting is asked again for a day: it may still turn up
MAX_BACKOFF_S = 3600
BACKUP_EVERY_S = 600


@dataclass
class PollReport:
    changes: list = field(default_factory=list)       # (config, old state, new state, reason)
    queried: bool = False
    scheduler_error: Optional[str] = None
    resumed: list = field(default_factory=list)
    submitted: list = field(default_factory=list)
    new_epochs: int = 0
    bytes_read: int = 0
    notes: list = field(default_factory=list)
    snapshot_error: Optional[str] = None              # status.json/status.md could not be written
    reconciled: Optional[intents.Reconciled] = None   # what settling the open submissions did (handed to submit)
    starts: dict = field(default_factory=dict)        # config -> how its resubmitted attempt starts


# -- markers ----------------------------------------------------------------------------------------------------
class Markers:
    """The job-written markers, from one directory listing; a file is opened only when its content is needed
    (a poll of 10,000 running tasks must not read 10,000 start markers it already knows)."""

    def __init__(self, folder: Path):
        try:
            self.names = set(os.listdir(folder))
        except FileNotFoundError:
            self.names = set()
        self.folder = folder
        self._cache: dict = {}
        self.duplicates = [name for name in self.names if ".duplicate." in name]  # written by the claim guard

    def has(self, key: str, kind: str) -> bool:
        return f"{key}.{kind}" in self.names

    def load(self, key: str, kind: str) -> Optional[dict]:
        name = f"{key}.{kind}"
        if name not in self.names:
            return None
        if name not in self._cache:
            try:
                with open(self.folder / name, encoding="utf-8") as handle:
                    self._cache[name] = json.load(handle)
            except (OSError, ValueError):
                self._cache[name] = None  # being written: the next poll reads it
        return self._cache[name]

    def get(self, key: str, default=None) -> dict:
        found = {kind: self.load(key, kind) for kind in ("start", "exit") if self.has(key, kind)}
        return {k: v for k, v in found.items() if v is not None} or (default if default is not None else {})

    def __getitem__(self, key: str) -> dict:
        return self.get(key)


def read_markers(markers_dir: Path) -> Markers:
    return Markers(markers_dir)


# -- deciding one attempt's state -----------------------------------------------------------------------------
def task_output(session, att: dict) -> str:
    """The tail of what the task printed: our run log and the scheduler's own output file."""
    from hpc_sweep.common.logtail import tail_lines

    paths = session.paths
    texts = []
    run_log = paths.logs / f"{att['config']}.{att['attempt']}.log"
    texts += tail_lines(run_log, 40)
    if att.get("submission"):
        for candidate in paths.logs.glob(f"{att['submission']}_{att['task_index']}.out*"):
            texts += tail_lines(candidate, 40)
        texts += [line for p in paths.logs.glob(f"{att['submission']}.o*-{att['task_index']}")
                  for line in tail_lines(p, 40)]
    return "\n".join(texts)


def decide(session, att: dict, live: Optional[TaskRecord], acct: Optional[TaskRecord], markers: Markers,
           now: float) -> tuple[str, Optional[str], dict]:
    """(state, reason, attempt fields) for one active attempt."""
    from hpc_sweep.track.failure import diagnose

    key = f"{att['config']}.{att['attempt']}"
    end = markers.load(key, "exit")
    fields: dict = {}
    if live is None and att.get("left_queue_at") is None and att["state"] != "lost":
        fields["left_queue_at"] = now
    if live is not None and live.state == "running" and live.elapsed_s is not None and end is None:
        # The live answer knows when and where it started: no need to open 10,000 start markers.
        start = None
        if att.get("started_at") is None:
            fields["started_at"], fields["host"] = now - live.elapsed_s, live.host
    else:
        start = markers.load(key, "start") if att.get("started_at") is None or live is None else None
    if start:
        fields["started_at"] = start.get("time")
        fields["host"] = start.get("host")
    if end:
        fields["ended_at"] = end.get("time")
        fields["exit_code"] = end.get("exit_code")
    record = live if live is not None else acct
    if record is not None and record.state == "cancelled" and record.exit_code is None and end is not None:
        record = None  # a task that wrote its exit before the array was deleted: its own marker is the truth
    if record is not None and record.state in FINAL_STATES and _claimed_by_another_job(att, markers, key):
        record = None  # our task was a duplicate the claim guard stopped: the markers of the run that holds it decide
    if record is not None and record.state not in FINAL_STATES and record.state != "unknown":
        if end is None or live is not None:
            return record.state, record.reason, fields
    if record is not None and record.state in FINAL_STATES:
        if record.exit_code is not None and "exit_code" not in fields:
            fields["exit_code"] = record.exit_code
        if record.elapsed_s is not None:
            fields["elapsed"] = record.elapsed_s
        state, reason = record.state, None
        if state != "completed":
            found = diagnose(task_output(session, att))
            if found:
                kind, reason = found
                if state == "failed" and kind in ("oom", "timeout"):
                    state = kind
            # The scheduler's own word last (the local runner says "time limit", "needs 3 GPUs; ...").
            reason = reason or _exit_reason(state, fields.get("exit_code")) or record.reason
        return state, reason, fields
    if end is not None:
        code = end.get("exit_code")
        if code == 0:
            return "completed", None, fields
        found = diagnose(task_output(session, att))
        if found:
            return found[0] if found[0] != "cancelled" else "cancelled", found[1], fields
        return "failed", _exit_reason("failed", code), fields
    if att["state"] == "lost":
        return "lost", att["reason"], fields  # nothing new: a late exit marker or accounting record would say
    # Gone from the queue with no word on how it ended: wait GONE_GRACE_S from when it left the queue (not from
    # its start) before calling it lost.
    left_at = att.get("left_queue_at") or now
    if start is not None:
        found = diagnose(task_output(session, att))
        if found and found[0] in ("timeout", "oom", "node_fail", "preempted", "cancelled"):
            return found[0], found[1], fields
        if now - left_at < GONE_GRACE_S:
            return "running", att["reason"], fields  # it started; accounting or the exit marker may still come
        return "lost", f"started on {start.get('host')} but no exit was recorded and the scheduler has no record", \
            fields
    if now - max(left_at, att.get("submitted_at") or 0) < GONE_GRACE_S:
        return att["state"], att["reason"], fields
    return "lost", "the scheduler has no record of this task and it never started", fields


def _claimed_by_another_job(att: dict, markers: Markers, key: str) -> bool:
    """Whether the (config, attempt) was run by a task of another job than the recorded one (whose task then found
    the claim taken and exited at once without running)."""
    if not any(name.startswith(f"{key}.duplicate.") for name in markers.duplicates):
        return False
    start = markers.load(key, "start")
    return bool(start and start.get("job_name") and start.get("job_name") != att.get("submission"))


def _exit_reason(state: str, code: Optional[int]) -> Optional[str]:
    if code is None:
        return None
    if code > 128 and code < 160:
        return f"{state}: killed by signal {code - 128}"
    if code > 256:
        return f"{state}: killed by signal {code - 256}"
    return f"exit code {code}"


def check_edited(session, report: PollReport) -> None:
    """A queued or running config whose file was changed by hand after submission: said once (an event), and
    status shows it. Only files modified since their submission are hashed, so a poll stays cheap."""
    import hashlib

    store = session.store
    rows = store.conn.execute(
        "SELECT c.name, c.path, c.digest, c.attempt, a.submitted_at FROM configs c JOIN attempts a "
        "ON a.config = c.name AND a.attempt = c.attempt WHERE c.state IN ('pending', 'running')").fetchall()
    found = []
    for row in rows:
        try:
            if os.stat(row["path"]).st_mtime <= (row["submitted_at"] or 0):
                continue
            with open(row["path"], "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            digest = "missing"
        if digest != row["digest"]:
            found.append((row["name"], row["attempt"], row["path"], digest))
    if not found:
        return
    told = {(e["config"], e["detail"]) for e in store.events("edited")}
    with store.transaction():
        for name, attempt, path, digest in found:
            detail = f"attempt {attempt}: {path} edited after submission (now {digest[:12]})"
            if (name, detail) in told:
                continue
            store.add_event("edited", detail, name)
            report.notes.append(f"warning: {name}: {path} was edited after submission; the run was submitted with "
                                "the generated version (see 'hpc-sweep generate --force' to record a change)")


_DUPLICATE = re.compile(r"^(.+)\.(\d+)\.duplicate\.(.+)$")


def check_duplicates(session, report: PollReport) -> None:
    """A second task queued for a (config, attempt) that another task had claimed is stopped by the job script's
    claim guard and leaves ``<config>.<attempt>.duplicate.<task id>`` among the markers: said once (an event)."""
    try:
        names = [name for name in os.listdir(session.paths.markers) if ".duplicate." in name]
    except FileNotFoundError:
        return
    found = sorted(m.groups() for m in map(_DUPLICATE.match, names) if m)
    if not found:
        return
    store = session.store
    told = {(e["config"], e["detail"]) for e in store.events("duplicate")}
    new = []
    for name, attempt, task in found:
        detail = f"attempt {attempt}: task {task} stopped by the claim guard"
        if (name, detail) not in told:
            new.append((name, attempt, task, detail))
    if not new:
        return
    with store.transaction():
        for name, attempt, task, detail in new:
            store.add_event("duplicate", detail, name)
            report.notes.append(f"warning: a duplicate task of {name} attempt {attempt} (job {task}) was stopped by "
                                "the claim guard")


# -- the poll ----------------------------------------------------------------------------------------------------
def _scheduler_due(session, now: float, force: bool) -> bool:
    store = session.store
    interval = session.spec.poll_min_interval_s or session.profile.poll_min_interval_s
    last = float(store.get_meta("scheduler_queried_at", "0"))
    backoff_until = float(store.get_meta("backoff_until", "0"))
    return force or (now - last >= interval and now >= backoff_until)


def _note_failure(session, exc: SchedulerError, now: float) -> str:
    store = session.store
    failures = int(store.get_meta("scheduler_failures", "0")) + 1
    interval = session.spec.poll_min_interval_s or session.profile.poll_min_interval_s
    wait = min(MAX_BACKOFF_S, interval * 2 ** failures)
    note = (f"the scheduler could not be reached at {time.strftime('%Y-%m-%d %H:%M', time.localtime(now))} "
            f"({exc.message.strip()[:200]}); states are as last known; next try in {wait:.0f} s")
    with store.transaction():
        store.set_meta("scheduler_failures", str(failures))
        store.set_meta("backoff_until", str(now + wait))
        store.set_meta("scheduler_note", note)
    return note


def refresh_states(session, report: PollReport, records: list, now: float) -> None:
    store, adapter = session.store, session.scheduler
    report.reconciled = intents.reconcile(session, records)
    report.notes += report.reconciled.lines()
    submitted = store.submissions("submitted")
    ours = {s["scheduler_id"] for s in submitted}
    live = {r.task_id: r for r in records if r.submission_id in ours}
    active = _followed_attempts(store)
    gone = [a for a in active if a["job_id"] not in live and
            (a["state"] != "lost" or now - (a["left_queue_at"] or 0) < RECHECK_LOST_S)]
    acct: dict = {}
    if gone:
        gone_subs = {a["submission"] for a in gone}
        sub_ids = sorted({s["scheduler_id"] for s in submitted if s["name"] in gone_subs})
        argv = adapter.accounting_argv(sub_ids) if sub_ids else None
        if argv is not None:
            try:
                acct = {r.task_id: r for r in adapter.parse_accounting(shell.run(argv, timeout=120))}
            except SchedulerError as exc:
                report.notes.append(f"accounting unavailable ({exc.message.strip()[:120]}); markers decide")
    markers = read_markers(session.paths.markers)
    _apply(session, report, active, live, acct, markers, now)


def _followed_attempts(store) -> list:
    """The attempts a poll decides: pending and running ones, and lost ones (a late exit marker or accounting
    record corrects them)."""
    return store.attempts(states=ACTIVE + ("lost",))


def apply_markers_only(session, report: PollReport, now: float) -> None:
    """Between scheduler queries, and while the scheduler does not answer, the jobs' own markers still move
    attempts: an exit marker ends one, a start marker makes a pending one running."""
    markers = read_markers(session.paths.markers)
    active = _followed_attempts(session.store)
    finished = [a for a in active if markers.has(f"{a['config']}.{a['attempt']}", "exit")]
    started = [a for a in active if a["state"] == "pending" and a not in finished and
               markers.load(f"{a['config']}.{a['attempt']}", "start")]
    _apply(session, report, finished, {}, {}, markers, now, scheduler_known=False)
    if not started:
        return
    with session.store.transaction():
        for att in started:
            start = markers.load(f"{att['config']}.{att['attempt']}", "start")
            session.store.update_attempt(att["config"], att["attempt"], state="running", started_at=start.get("time"),
                                         host=start.get("host"))
            session.store.set_config_state(att["config"], "running")
            report.changes.append((att["config"], "pending", "running", None))


def _apply(session, report, attempts, live, acct, markers, now, scheduler_known=True) -> None:
    """Decide every attempt and write what changed, in one transaction: an attempt whose state, reason and
    fields are as stored is not written again (a steady poll of 10,000 running tasks writes nothing)."""
    store = session.store
    configs = {row[0]: (row[1], row[2], row[3]) for row in
               store.conn.execute("SELECT name, attempt, state, reason FROM configs")}
    attempt_updates: dict = {}   # column names -> [(values..., config, attempt)]
    config_updates = []
    stamp = time.time()
    for att in attempts:
        state, reason, fields = decide(session, att, live.get(att["job_id"]), acct.get(att["job_id"]), markers, now)
        if state == "unknown" or (not scheduler_known and state == "lost"):
            continue
        fields = {k: v for k, v in fields.items() if v is not None and att.get(k) != v}
        if state != att["state"] or reason != att["reason"]:
            fields.update(state=state, reason=reason)
        if fields:
            attempt_updates.setdefault(tuple(fields), []).append((*fields.values(), att["config"], att["attempt"]))
        attempt, old_state, old_reason = configs.get(att["config"], (None, None, None))
        if attempt == att["attempt"] and (old_state != state or old_reason != reason):
            config_updates.append((state, reason, stamp, att["config"]))
            if old_state != state:
                report.changes.append((att["config"], old_state, state, reason))
    if not attempt_updates and not config_updates:
        return
    with store.transaction() as conn:
        for columns, values in attempt_updates.items():
            assignments = ", ".join(f"{column} = ?" for column in columns)
            conn.executemany(f"UPDATE attempts SET {assignments} WHERE config = ? AND attempt = ?", values)
        conn.executemany("UPDATE configs SET state = ?, reason = ?, updated_at = ? WHERE name = ?", config_updates)
        faults.point("poll_mid_write")  # a kill inside the transaction: the next poll finds the old states


def resume_ended(session, report: PollReport) -> None:
    """Runs that ended in a resumable state wait for resubmission from their checkpoint, up to max_retries."""
    spec, store = session.spec, session.store
    marks = ",".join("?" for _ in spec.resume_states)
    ended = store.conn.execute(f"SELECT name, state, attempt FROM configs WHERE state IN ({marks}) AND attempt <= ?",
                               (*spec.resume_states, spec.max_retries)).fetchall()
    if not ended:
        return  # no empty transaction: each commit is a few fsyncs on the sweep's disk
    with store.transaction():
        for cfg in ended:
            store.conn.execute("UPDATE configs SET state = 'waiting', next_mode = 'resume', reason = ? WHERE name = ?",
                               (f"resuming after {cfg['state']} (attempt {cfg['attempt'] + 1} of "
                                f"{spec.max_retries + 1})", cfg["name"]))
            store.add_event("resume", f"after {cfg['state']} in attempt {cfg['attempt']}", cfg["name"])
            report.resumed.append(cfg["name"])


def poll(session, verbose: bool = False, force: bool = False, submit_waiting: bool = True) -> PollReport:
    """One poll. The caller holds the sweep lock."""
    from hpc_sweep.track.progress import LogReading

    with LogReading(session) as reading:  # a large poll's log reading starts now, in workers
        return _poll(session, reading, force, submit_waiting)


def _poll(session, reading, force: bool, submit_waiting: bool) -> PollReport:
    from hpc_sweep.track.evidence import check_completed
    from hpc_sweep.track.progress import update_progress
    from hpc_sweep.submit.queries import live_records

    report = PollReport()
    now = time.time()
    store = session.store
    records = None
    meta = {"polled_at": str(now)}  # written in the poll's last transaction
    check_edited(session, report)
    check_duplicates(session, report)
    work_left = store.conn.execute("SELECT 1 FROM configs WHERE state IN ('pending', 'running', 'waiting', "
                                   "'generated') LIMIT 1").fetchone() is not None
    work_left = work_left or bool(intents.open_submissions(session))
    if not work_left:  # every config is final: a note that states are as last known no longer applies
        meta.update(scheduler_failures="0", backoff_until="0", scheduler_note="")
    elif _scheduler_due(session, now, force):
        try:
            records = live_records(session)
            report.queried = True
            # A poll killed before its end did not record the query: the next one asks again, which is harmless.
            meta.update(scheduler_queried_at=str(now), scheduler_failures="0", backoff_until="0", scheduler_note="")
        except SchedulerError as exc:
            report.scheduler_error = _note_failure(session, exc, now)
    if records is not None:
        refresh_states(session, report, records, now)
    else:  # within the minimum interval, or the scheduler did not answer: the markers still end runs
        apply_markers_only(session, report, now)
    update_progress(session, report, reading)
    check_completed(session, report)  # "completed" needs evidence of training, from the logs just read
    resume_ended(session, report)
    if submit_waiting and records is not None:
        from hpc_sweep.submit.submitting import submit

        sub = submit(session, records=records, reconciled=report.reconciled)
        report.submitted = sub.submitted
        report.starts = sub.starts
        report.notes += [line for line in sub.reconciled.lines() if line not in report.notes] + sub.errors
    backup = _backup_due(session, report, now)
    if backup:
        meta["backup_at"] = str(now)
    with store.transaction():
        for key, value in meta.items():
            store.set_meta(key, value)
    try:
        write_snapshots(session)
    except RuntimeFailure as exc:  # the state is committed; the caller reports it after the summary
        report.snapshot_error = str(exc)
    if backup:
        store.backup()
    return report


def _backup_due(session, report: PollReport, now: float) -> bool:
    """Whether to refresh the copy a corrupt database is recovered from: at once when this poll submitted or
    resumed anything (what a restored copy must not forget, or runs would be submitted twice); otherwise at most
    every BACKUP_EVERY_S while anything changed: states and curves lost with an older copy are found again by the
    next poll from the scheduler, the markers and the logs."""
    store = session.store
    settled = report.reconciled
    vital = report.submitted or report.resumed or (settled is not None and (
        settled.found or settled.abandoned or settled.adopted or settled.cancelled))
    changed = report.changes or report.new_epochs
    last = float(store.get_meta("backup_at", "0"))
    return bool(vital or (changed and now - last > BACKUP_EVERY_S) or now - last > 3600 or
                not session.paths.db_backup.exists())


def snapshot_json(snapshot: dict) -> str:
    """Readable and fast: the header indented, one config per line (json's C encoder, not its indenting one)."""
    head = {k: v for k, v in snapshot.items() if k != "configs"}
    lines = json.dumps(head, indent=2)[:-2].rstrip("\n")
    records = snapshot["configs"]
    # One encoder call for all records, cut at the n-1 record boundaries; a string that holds the boundary's
    # spelling makes the count differ, and then each record is encoded on its own.
    together = json.dumps(records)[1:-1]
    if together.count("}, {") == max(len(records) - 1, 0):
        configs = together.replace("}, {", "},\n    {")
    else:
        configs = ",\n    ".join(json.dumps(c) for c in records)
    return f"{lines},\n  \"configs\": [\n    {configs}\n  ]\n}}\n"


def write_snapshots(session) -> None:
    """status.json and status.md, each replaced atomically: a reader never sees half a file. Not fsynced: both
    are made again from the state by every poll, and a poll of 10,000 configs would wait for 4 MB to reach the
    disk."""
    from hpc_sweep.results.status import render, snapshot as take_snapshot

    snapshot = take_snapshot(session)
    for path, text in ((session.paths.status_json, snapshot_json(snapshot)),
                       (session.paths.status_md, render(snapshot, "markdown", session.spec.swept_keys))):
        try:
            write_atomic(path, text, fsync=False)
        except OSError as exc:
            raise RuntimeFailure(f"{path}: could not write the status snapshot ({exc.strerror or exc}); "
                                 "the previous one is kept") from None


GROUP_CHANGES_OVER = 20


def change_lines(changes: list) -> list:
    """One line per change; past a screenful, one line per transition (cron mails every line printed).
    Failures always get their own line: their reason matters."""
    if len(changes) <= GROUP_CHANGES_OVER:
        return [f"{c}: {old} -> {new}" + (f" ({why})" if why else "") for c, old, new, why in changes]
    lines, grouped = [], {}
    for config, old, new, reason in changes:
        if reason and new not in ("pending", "running", "completed"):
            lines.append(f"{config}: {old} -> {new} ({reason})")
        else:
            grouped.setdefault((old, new), []).append(config)
    for (old, new), names in grouped.items():
        shown = ", ".join(names[:3]) + (f" ... {names[-1]}" if len(names) > 3 else "")
        lines.insert(0, f"{len(names)} configs: {old} -> {new} ({shown})")
    return lines


def summary_lines(report: PollReport, verbose: bool) -> list:
    lines = []
    if report.scheduler_error:
        lines.append(f"warning: {report.scheduler_error}")
    lines += change_lines(report.changes)
    for name in report.resumed:
        if name in report.starts:
            lines.append(f"{name}: resubmitted, {report.starts[name]}")
        else:
            lines.append(f"{name}: will be resubmitted when there is room (resumed from its checkpoint if it has one)")
    for job, sid, n in report.submitted:
        lines.append(f"submitted {job} as {sid} ({n} task{'s' if n != 1 else ''})")
    lines += report.notes
    if verbose:
        lines.append(f"scheduler queried: {'yes' if report.queried else 'no (min interval)'}; "
                     f"new epochs: {report.new_epochs}; log bytes read: {report.bytes_read}")
    return lines

