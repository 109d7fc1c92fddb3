"""`hpc-sweep smoke`: run a few configs, shortened, through the sweep's real backend before queueing hundreds.

The smoke test is a small sweep of its own in ``.test/``: its own ``sweep.toml`` (the first N parameter sets of the
real sweep as explicit configs, the ``[smoke]`` overrides added to ``[fixed]``, the smoke walltime, no automatic
resume), its own base copy, configs, scripts, logs, outputs (``.test/outputs/configNNN``) and state
(``.test/.hpc_sweep/``). So the real sweep's state is never touched, and the same generate/submit/poll code runs
the test: the job template, the site's setup lines, the scheduler and the trainer are all exercised for real.
The sweep folder's other files (``train.py``, ``inputs/``...) are linked into ``.test/``, where the smoke jobs
run, so ``{sweep_dir}/train.py`` and relative paths in the command mean the same files as in the real sweep.

Each smoke run starts clean: leftovers of an earlier smoke test that still run are cancelled first. Before anything
is submitted, the doctor's checks run (:mod:`hpc_sweep.doctor_facts`, crontab aside): a FAIL stops the smoke test.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from hpc_sweep.common.errors import RuntimeFailure, UserError
from hpc_sweep.state.rows import AttemptRow, ConfigRow, ProgressRow
from hpc_sweep.state.states import ACTIVE, FINAL, ConfigState, SubmissionStatus

if TYPE_CHECKING:
    from hpc_sweep.common.layout import SweepPaths
    from hpc_sweep.session import Session
    from hpc_sweep.sweep.sweepfile import SweepSpec

LOG_TAIL_LINES = 15
LEFTOVER_WAIT_S = 120


@dataclass
class SmokeResult:
    config: str                 # the name in .test/
    source: str                 # the real sweep's config it was made from
    state: str
    passed: bool
    reason: Optional[str] = None
    epoch: Optional[int] = None
    max_epoch: Optional[int] = None
    log_tail: list = field(default_factory=list)
    warning: Optional[str] = None


@dataclass
class SmokeReport:
    test_dir: Path
    results: list = field(default_factory=list)
    timed_out: bool = False
    submitted: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.timed_out and all(r.passed for r in self.results)


# -- building .test/ -----------------------------------------------------------------------------------------------
def _site_value(spec: SweepSpec) -> Optional[str]:
    """A profile given as a relative path must still be found from .test/."""
    site = spec.site
    if site and (site.endswith(".toml") or "/" in site) and not Path(site).is_absolute():
        return str((spec.root / site).resolve())
    return site


def _smoke_sweep_data(spec: SweepSpec, chosen: list) -> dict:
    from hpc_sweep.common.formats import format_of

    smoke = spec.smoke
    sweep = {"name": f"{spec.name[:58]}-smoke", "program": spec.program,
             "base": f"configs/.base_config.{format_of(spec.base)}", "command": spec.command,
             "walltime": smoke.walltime_s, "max_retries": 0, "resume_states": [],
             "allow_new_keys": spec.allow_new_keys}
    optional = {"site": _site_value(spec), "device": spec.device, "throttle": spec.throttle,
                "cpus_per_gpu": spec.cpus_per_gpu, "mem_per_gpu": spec.mem_per_gpu}
    sweep.update({k: v for k, v in optional.items() if v is not None})
    data: dict = {"sweep": sweep, "fixed": {**spec.fixed, **smoke.overrides},
                  "configs": [params for _, params in chosen]}
    if spec.log:
        data["log"] = dict(spec.log)
    if spec.poll_min_interval_s:
        data["poll"] = {"min_interval": spec.poll_min_interval_s}
    return data


def choose(spec: SweepSpec, paths: SweepPaths, count: int) -> list:
    """[(real config name, its parameters minus the smoke overrides)], the first ``count`` distinct ones."""
    from hpc_sweep.sweep.expand import params_key
    from hpc_sweep.sweep.generate import plan
    from hpc_sweep.state.store import open_store

    store = open_store(paths) if paths.db.exists() else None  # the real sweep's state, read only
    try:
        planned = plan(spec, store, paths)
    finally:
        if store is not None:
            store.close()
    chosen, seen = [], set()
    for p in sorted(planned, key=lambda p: p.idx):
        params = {k: v for k, v in p.params.items() if k not in spec.smoke.overrides}
        key = params_key(params)
        if key not in seen:  # overriding a swept key can make two configs the same smoke config
            seen.add(key)
            chosen.append((p.name, params))
        if len(chosen) == count:
            break
    return chosen


def write_test_sweep(spec: SweepSpec, chosen: list, test_dir: Path) -> None:
    """sweep.toml and the base copy of .test/; the base's relative paths resolved as the real sweep does."""
    import tomli_w

    from hpc_sweep.common.atomicio import write_atomic
    from hpc_sweep.common.formats import dump_structured, format_of, load_structured
    from hpc_sweep.sweep.generate import _resolve_paths

    base = load_structured(spec.base, "base config")
    _resolve_paths(base, spec.program, spec.base.parent)
    (test_dir / "configs").mkdir(parents=True, exist_ok=True)
    write_atomic(test_dir / "configs" / f".base_config.{format_of(spec.base)}",
                 dump_structured(base, format_of(spec.base)))
    text = "# Written by hpc-sweep smoke from ../sweep.toml; rewritten by every smoke run.\n"
    write_atomic(test_dir / "sweep.toml", text + tomli_w.dumps(_smoke_sweep_data(spec, chosen)))


# What the sweep layout owns; every other entry of the sweep folder (the user's train.py, inputs/, ...) is linked
# into .test/ so that a command naming {sweep_dir}/train.py or a relative path works the same in the smoke test.
LAYOUT_NAMES = ("sweep.toml", "configs", "script", "logs", "outputs", ".test", ".hpc_sweep", "status.md",
                "status.json")


def link_sweep_files(root: Path, test_dir: Path) -> None:
    for entry in sorted(root.iterdir()):
        link = test_dir / entry.name
        if entry.name in LAYOUT_NAMES or link.exists() or link.is_symlink():
            continue
        link.symlink_to(Path("..") / entry.name)  # relative: the sweep folder may be moved


def clear_previous(test_dir: Path, echo: Callable[[str], None]) -> None:
    """Cancel what an earlier smoke test left running, then remove its state, scripts, logs and outputs.
    The runner's spool stays: a runner may still be serving it, and its ids must not be reused."""
    from hpc_sweep.common.layout import SweepPaths

    paths = SweepPaths.at(test_dir)
    if paths.db.exists() and paths.sweep_file.exists():
        try:
            _cancel_leftovers(test_dir, echo)
        except UserError:
            pass  # an unreadable earlier smoke sweep cannot have been submitted by this version
    for folder in (paths.configs, paths.script, paths.logs, paths.outputs, paths.markers):
        shutil.rmtree(folder, ignore_errors=True)
    for name in ("state.db", "state.db.bak", "lock"):
        (paths.state_dir / name).unlink(missing_ok=True)
    if test_dir.is_dir():
        for entry in test_dir.iterdir():
            if entry.is_symlink():  # links made by link_sweep_files: made again, to what the sweep has now
                entry.unlink()


def _cancel_leftovers(test_dir: Path, echo: Callable[[str], None]) -> None:
    from hpc_sweep.submit.cancel import cancel
    from hpc_sweep.session import Session

    session = Session.open(test_dir, write=True)
    try:
        if not [c for c in session.store.configs() if c.state in ACTIVE]:
            return
        ids = cancel(session).ids
        echo(f"cancelled an earlier smoke test still running ({' '.join(ids)})")
        # Its jobs must be gone before their markers' folder is reused.
        if not _wait_gone(session, time.monotonic() + LEFTOVER_WAIT_S):
            raise RuntimeFailure(f"jobs of an earlier smoke test in {test_dir} are still running after cancel; "
                                 "try again in a minute")
    finally:
        session.close()


def _wait_gone(session: Session, deadline: float) -> bool:
    from hpc_sweep.submit.queries import live_records

    ours = {s.scheduler_id for s in session.store.submissions(SubmissionStatus.SUBMITTED)}
    while time.monotonic() < deadline:
        try:
            records = live_records(session)
        except Exception:  # an unreachable scheduler: try again until the deadline
            records = None
        if records is not None and not any(r.submission_id in ours and r.state in ACTIVE
                                           for r in records):
            return True
        time.sleep(1)
    return False


# -- running it -------------------------------------------------------------------------------------------------------
def check_site(sweep_dir: Path, echo: Callable[[str], None]) -> None:
    """`hpc-sweep doctor` first (without crontab: the smoke test polls by itself): a cluster that can never run
    the sweep fails here in seconds, with the fix, before any job waits in a queue."""
    from hpc_sweep.doctor import FAIL, WARN
    from hpc_sweep.doctor_facts import examine

    lines = examine(sweep_dir, cron=False)
    for line in lines:
        if line.status in (FAIL, WARN):
            echo(f"doctor: {line.render()}")
    failed = sum(1 for line in lines if line.status == FAIL)
    if failed:
        raise RuntimeFailure(f"smoke test not started: doctor found {failed} problem(s) above "
                             "(see 'hpc-sweep doctor' for every check)")
    echo(f"doctor: {len(lines)} checks, no problem")


def prepare(sweep_dir: Path, count: Optional[int], echo: Callable[[str], None]) -> tuple[Path, list]:
    from hpc_sweep.sweep.generate import check_params_against_base, load_base
    from hpc_sweep.common.layout import SweepPaths
    from hpc_sweep.sweep.sweepfile import load_sweep

    spec = load_sweep(sweep_dir)
    paths = SweepPaths.at(spec.root)
    count = spec.smoke.count if count is None else count
    if count < 1:
        raise UserError("--count must be at least 1")
    # Checked here so an error names the real sweep.toml, not the derived one.
    check_params_against_base(spec, load_base(spec), spec.smoke.overrides, "smoke.overrides")
    chosen = choose(spec, paths, count)
    clear_previous(paths.test, echo)
    write_test_sweep(spec, chosen, paths.test)
    link_sweep_files(paths.root, paths.test)
    return paths.test, chosen


def generate_and_submit(test_dir: Path) -> list:
    from hpc_sweep.sweep.generate import generate
    from hpc_sweep.session import Session
    from hpc_sweep.submit.submitting import submit

    with Session.open(test_dir, create=True) as session:
        generate(session.spec, session.store, session.paths)
        report = submit(session)
    if report.errors and not report.submitted:
        raise RuntimeFailure(f"smoke test not submitted: {report.errors[0]}")
    return report.submitted


def wait(test_dir: Path, timeout_s: float, progress: Callable[[dict, float], None]) -> bool:
    """Poll (forced) until every smoke config has ended or the deadline passes. True when all ended."""
    from hpc_sweep.track.poll import poll
    from hpc_sweep.session import Session

    started = time.monotonic()
    deadline = started + timeout_s
    # The smoke sweep (.test/) is this command's own: its lock is held for the whole wait.
    session = Session.open(test_dir, write=True)
    try:
        # Quick first looks (a broken environment fails in seconds), then no more often than the poll interval.
        most = min(30.0, max(1.0, float(session.spec.poll_min_interval_s or session.profile.poll_min_interval_s)))
        pause = 1.0
        while True:
            poll(session, force=True)
            states = {c.name: c.state for c in session.store.configs()}
            progress(states, time.monotonic() - started)
            if all(state in FINAL for state in states.values()):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(most, pause * 2)
    finally:
        session.close()


def cancel_all(test_dir: Path) -> None:
    from hpc_sweep.submit.cancel import cancel
    from hpc_sweep.track.snapshot import write_snapshots
    from hpc_sweep.session import Session

    with Session.open(test_dir, write=True) as session:
        cancel(session)
        write_snapshots(session)


def collect(test_dir: Path, chosen: list, timed_out: bool) -> list:
    from hpc_sweep.track.decide import task_output
    from hpc_sweep.session import Session

    session = Session.open(test_dir)
    try:
        progress = session.store.progress()
        attempts = {(a.config, a.attempt): a for a in session.store.attempts()}
        results = []
        for cfg, (source, _) in zip(session.store.configs(), chosen):
            att = attempts.get((cfg.name, cfg.attempt))
            results.append(_result(session, cfg, source, progress.get(cfg.name), att, timed_out, task_output))
        return results
    finally:
        session.close()


def _result(session: Session, cfg: ConfigRow, source: str, prog: Optional[ProgressRow], att: Optional[AttemptRow],
            timed_out: bool, task_output) -> SmokeResult:
    passed = cfg.state == ConfigState.COMPLETED
    reason = cfg.reason
    if timed_out and cfg.state not in FINAL:
        reason = "the smoke test's time ran out before this run ended" + (f" ({reason})" if reason else "")
    tail = task_output(session, att).splitlines()[-LOG_TAIL_LINES:] if att else []
    result = SmokeResult(config=cfg.name, source=source, state=cfg.state, passed=passed, reason=reason,
                         epoch=prog.epoch if prog else None, max_epoch=prog.max_epoch if prog else None,
                         log_tail=tail)
    if passed and result.epoch is None:
        result.warning = "finished, but no epoch was read from its log: check the program's log settings"
    return result


def run_smoke(sweep_dir: Path, count: Optional[int] = None, timeout_s: Optional[float] = None,
              echo: Callable[[str], None] = print,
              progress: Optional[Callable[[dict, float], None]] = None) -> SmokeReport:
    from hpc_sweep.sweep.sweepfile import load_sweep

    spec = load_sweep(sweep_dir)
    timeout_s = spec.smoke.timeout_s if timeout_s is None else timeout_s
    check_site(sweep_dir, echo)
    test_dir, chosen = prepare(sweep_dir, count, echo)
    report = SmokeReport(test_dir=test_dir)
    report.submitted = generate_and_submit(test_dir)
    for job, sid, n in report.submitted:
        echo(f"submitted smoke job {job} as {sid} ({n} task{'s' if n != 1 else ''})")
    try:
        done = wait(test_dir, timeout_s, progress or (lambda states, elapsed: None))
    except KeyboardInterrupt:
        cancel_all(test_dir)  # an abandoned smoke test must not keep a GPU busy
        raise
    report.timed_out = not done
    report.results = collect(test_dir, chosen, report.timed_out)
    if report.timed_out:
        cancel_all(test_dir)
    return report


# -- reporting ---------------------------------------------------------------------------------------------------------
def progress_line(states: dict, elapsed: float) -> str:
    from hpc_sweep.common.durations import format_hms

    counts: dict = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"smoke: {parts} ({format_hms(int(elapsed))} elapsed)"


def report_lines(report: SmokeReport) -> list:
    lines = []
    for r in report.results:
        name = r.config if r.config == r.source else f"{r.config} (from {r.source})"
        epochs = f", epoch {r.epoch}/{r.max_epoch if r.max_epoch is not None else '?'}" if r.epoch is not None else ""
        lines.append(f"{'PASS' if r.passed else 'FAIL'} {name}: {r.state}{epochs}"
                     + (f" ({r.reason})" if r.reason and not r.passed else ""))
        if r.warning:
            lines.append(f"  warning: {r.warning}")
        if not r.passed and r.log_tail:
            lines.append("  last lines of its output:")
            lines += [f"    {line}" for line in r.log_tail]
    if report.timed_out:
        lines.append("the smoke test timed out; its jobs were cancelled")
    passed = sum(1 for r in report.results if r.passed)
    lines.append(f"smoke test {'passed' if report.passed else 'FAILED'}: {passed} of {len(report.results)} "
                 f"config(s) completed (files in {report.test_dir})")
    return lines


def is_tty() -> bool:
    return sys.stdout.isatty()
