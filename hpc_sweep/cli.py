"""The command table. Each command parses its arguments, calls one function, prints. Heavy modules are
imported inside the commands: cron runs `hpc-sweep poll` every few minutes on a shared login node."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from hpc_sweep import __version__
from hpc_sweep.common.errors import RuntimeFailure, UserError, one_line

if TYPE_CHECKING:
    from hpc_sweep.session import Session

SWEEP_DIR = click.argument("sweep_dir", required=False, default=".",
                           type=click.Path(file_okay=False, path_type=Path))


def _say(message: str, err: bool = False) -> None:
    click.echo(message, err=err)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="hpc-sweep")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Hyperparameter sweeps of ML trainers on Slurm, PBS Pro, Torque and bare GPU boxes.

    \b
    Typical session:
      hpc-sweep init my-sweep --base train.toml
      $EDITOR my-sweep/sweep.toml
      hpc-sweep generate my-sweep
      hpc-sweep smoke my-sweep
      hpc-sweep submit my-sweep
      hpc-sweep cron install my-sweep --every 10m
      hpc-sweep status my-sweep
      hpc-sweep report my-sweep
    """
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--base", "base_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The trainer config every run starts from (TOML or YAML).")
@click.option("--program", type=click.Choice(["deeph", "xequinet", "generic"]),
              help="The trainer; guessed from the base when omitted.")
@click.option("--name", help="Sweep name (default: the folder's name).")
@click.option("--site", help="Site profile name or path to write into sweep.toml.")
def init(sweep_dir: Path, base_file: Path, program: Optional[str], name: Optional[str], site: Optional[str]) -> None:
    """Lay out a sweep folder and write a commented sweep.toml.

    \b
    Example:
      hpc-sweep init h2o-lr --base train.toml
    """
    from hpc_sweep.sweep.init import init_sweep

    paths, program = init_sweep(sweep_dir, base_file, program, name, site)
    _say(f"created {paths.root} ({program}); edit {paths.sweep_file}, then run: hpc-sweep generate {sweep_dir}")


@cli.command()
@SWEEP_DIR
@click.option("--force", is_flag=True, help="Rewrite configs that were already submitted (recorded).")
@click.option("--dry-run", is_flag=True, help="Check and count; write nothing.")
def generate(sweep_dir: Path, force: bool, dry_run: bool) -> None:
    """Write one config per parameter combination into configs/.

    Running it again changes nothing; added values get new config numbers and old ones keep theirs.

    \b
    Example:
      hpc-sweep generate my-sweep
    """
    from hpc_sweep.sweep.generate import generate as run_generate, plan
    from hpc_sweep.common.layout import SweepPaths
    from hpc_sweep.session import Session
    from hpc_sweep.state.store import open_store
    from hpc_sweep.sweep.sweepfile import load_sweep

    spec = load_sweep(sweep_dir)
    paths = SweepPaths.at(spec.root)
    if dry_run:
        store = open_store(paths) if paths.db.exists() else None  # read: no lock, nothing written
        try:
            planned = plan(spec, store, paths)
        finally:
            if store is not None:
                store.close()
        _say(f"{len(planned)} configs would be generated (nothing written)")
        return
    if spec.search is not None:
        from hpc_sweep.sweep.search import require_optuna

        require_optuna()
    # A first generate checks everything before the state folder exists: bad input leaves no file behind.
    planned = None if paths.db.exists() else plan(spec, None, paths)
    with Session.for_spec(spec, create=True) as session:
        result = run_generate(spec, session.store, paths, force=force, planned=planned)
        if spec.search is not None:  # [search]: the first configs are asked for now, the next ones by the polls
            from hpc_sweep.track.searching import grow_search

            result.written += grow_search(session, result.notes, fail=True)
    for line in result.notes:
        _say(f"note: {line}")
    for line in result.warnings:
        _say(f"warning: {line}", err=True)
    total = len(result.written) + len(result.unchanged) + len(result.forced)
    _say(f"{total} configs in {paths.configs}: {len(result.written)} written, {len(result.unchanged)} unchanged"
         + (f", {len(result.forced)} rewritten with --force" if result.forced else "")
         + (f"; no longer in the definition: {', '.join(result.retired)}" if result.retired else ""))


@cli.command()
@SWEEP_DIR
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]), default="table",
              show_default=True)
@click.option("--state", "states", multiple=True, help="Only configs in this state (repeatable).")
@click.option("--sort", type=click.Choice(["config", "state", "best", "val", "epoch"]), default="config",
              show_default=True)
@click.option("--refresh", is_flag=True, help="Poll the scheduler and logs first.")
def status(sweep_dir: Path, fmt: str, states: tuple, sort: str, refresh: bool) -> None:
    """Show every config's state, progress and losses (from the last poll).

    \b
    Examples:
      hpc-sweep status my-sweep
      hpc-sweep status my-sweep --state running --sort best
      hpc-sweep status my-sweep --format json > status.json
    """
    from hpc_sweep.results.status import render_status
    from hpc_sweep.session import Session

    # --refresh polls, which writes (and may submit): a write session, under the writers' lock.
    with Session.open(sweep_dir, write=refresh) as session:
        if refresh:
            from hpc_sweep.track.poll import poll as run_poll

            run_poll(session, verbose=False)
        _say(render_status(session, fmt, states, sort).rstrip("\n"))


@cli.command()
@SWEEP_DIR
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it (default: report.html, or report.md, in the sweep folder).")
@click.option("--format", "fmt", type=click.Choice(["html", "markdown"]),
              help="Default: markdown when --out ends in .md, else html.")
def report(sweep_dir: Path, out: Optional[Path], fmt: Optional[str]) -> None:
    """Rank configs, show loss curves and each parameter's effect, name the best parameter set.

    HTML is one self-contained file for any browser; markdown suits terminals and repositories (plots go
    beside it as PNG files). Plots need matplotlib: pip install 'hpc-sweep[plot]'.

    \b
    Examples:
      hpc-sweep report my-sweep
      hpc-sweep report my-sweep --format markdown --out results/report.md
    """
    from hpc_sweep.results.report import PLOT_HINT, write_report

    result = write_report(sweep_dir, out, fmt)
    if not result.plots:
        _say(f"note: {PLOT_HINT}", err=True)
    _say(str(result.path))


def _write_session(sweep_dir: Path):
    """The sweep opened for writing: the writers' lock is taken before the state is opened and held until the
    ``with`` block ends (a minute's wait at most for another command to finish)."""
    from hpc_sweep.session import Session

    return Session.open(sweep_dir, write=True)


@cli.command()
@SWEEP_DIR
@click.option("--only", "only", multiple=True, help="Only this config (repeatable).")
def render(sweep_dir: Path, only: tuple) -> None:
    """Write the job scripts and index maps a submit would make into script/ and show them; submit nothing.

    \b
    Example:
      hpc-sweep render my-sweep
    """
    from hpc_sweep.common.atomicio import write_atomic
    from hpc_sweep.submit.submitting import submit as run_submit

    with _write_session(sweep_dir) as session:
        report = run_submit(session, only=only or None, dry_run=True, records=[])
        for folder in (session.paths.script, session.paths.markers, session.paths.logs):
            folder.mkdir(parents=True, exist_ok=True)  # as a submit makes them: a script run by hand works
        for planned in report.planned:
            script = session.paths.script / f"{planned.name}.sh"
            write_atomic(script.with_suffix(".map"), planned.map_text)
            write_atomic(script, planned.script_text, mode=0o755)
            configs = planned.configs
            _say(f"==> {script} (array {planned.array or 'none'}: {', '.join(configs[:6])}"
                 f"{' ...' if len(configs) > 6 else ''})")
            _say(planned.script_text)


@cli.command()
@SWEEP_DIR
@click.option("--count", type=int, help="How many configs to try (default: [smoke] count, 2).")
@click.option("--timeout", "timeout_text", help="How long to wait for them, e.g. 15m (default: [smoke] timeout).")
def smoke(sweep_dir: Path, count: Optional[int], timeout_text: Optional[str]) -> None:
    """Run a few configs shortened through the real backend and say whether they work.

    The configs get the [smoke] overrides (e.g. 2 epochs) and the smoke walltime; everything lives in .test/,
    so the sweep's own state is untouched. Exit status 0 only if every smoke run completed.

    \b
    Example:
      hpc-sweep smoke my-sweep --count 1 --timeout 20m
    """
    from hpc_sweep.common.durations import parse_duration
    from hpc_sweep.smoke import is_tty, progress_line, report_lines, run_smoke

    timeout_s = None
    if timeout_text is not None:
        try:
            timeout_s = parse_duration(timeout_text)
        except ValueError as exc:
            raise UserError(f"--timeout: {exc}") from None
    tty, last = is_tty(), [""]

    def show(states: dict, elapsed: float) -> None:
        line = progress_line(states, elapsed)
        if tty:
            click.echo("\r" + line.ljust(len(last[0])), nl=False)
        elif line.split(" (")[0] != last[0].split(" (")[0]:
            _say(line)  # not a terminal: a line only when the counts change
        last[0] = line

    report = run_smoke(sweep_dir, count, timeout_s, echo=_say, progress=show)
    if tty and last[0]:
        click.echo("")
    for line in report_lines(report):
        _say(line)
    if not report.passed:
        raise RuntimeFailure("smoke test failed; see above")


@cli.command()
@SWEEP_DIR
@click.option("--dry-run", is_flag=True, help="Show what would be submitted; submit nothing.")
@click.option("--only", "only", multiple=True, help="Only this config (repeatable).")
def submit(sweep_dir: Path, dry_run: bool, only: tuple) -> None:
    """Submit every config the queue limit allows, as arrays; the rest wait for a later submit or poll.

    \b
    Examples:
      hpc-sweep submit my-sweep --dry-run
      hpc-sweep submit my-sweep
      hpc-sweep submit my-sweep --only config003 --only config007
    """
    from hpc_sweep.submit.submitting import submit as run_submit

    with _write_session(sweep_dir) as session:
        report = run_submit(session, only=only or None, dry_run=dry_run)
        for line in report.reconciled.lines():
            _say(line)
        for planned in report.planned:
            _say(f"would submit {planned.name}: array {planned.array or 'none'}, {len(planned.configs)} config(s)"
                 + (f"; {planned.resources}" if planned.resources else ""))
        for name, sid, n in report.submitted:
            _say(f"submitted {name} as {sid} ({n} task{'s' if n != 1 else ''})")
        if report.waiting:
            _say(f"{report.waiting} config(s) waiting" + (f": {report.reason}" if report.reason else ""))
        if not report.submitted and not report.planned and not report.waiting:
            _say("nothing to submit")
        for line in report.errors:
            _say(f"error: {line}", err=True)
        if report.errors and not report.submitted:
            raise RuntimeFailure(report.errors[0])


@cli.command()
@SWEEP_DIR
@click.option("-v", "--verbose", is_flag=True, help="Always print a summary, even when nothing changed.")
@click.option("--force", is_flag=True, help="Query the scheduler even within the minimum poll interval.")
@click.option("--no-submit", is_flag=True, help="Do not top up the queue with waiting configs.")
def poll(sweep_dir: Path, verbose: bool, force: bool, no_submit: bool) -> None:
    """Refresh states and logs, resume timed-out runs, top up the queue, write status.md/status.json.

    Meant for cron: silent unless something changed; a second poll while one runs exits 0 at once.

    \b
    Example:
      hpc-sweep poll my-sweep -v
    """
    from hpc_sweep.track.poll import poll as run_poll, summary_lines
    from hpc_sweep.session import Session
    from hpc_sweep.state.lock import LockHeld

    try:
        session = Session.open(sweep_dir, write=True, blocking=False)
    except LockHeld:
        if verbose:
            _say("another poll is running; nothing done")
        return
    with session:
        report = run_poll(session, verbose=verbose, force=force, submit_waiting=not no_submit)
        for line in summary_lines(report, verbose):
            _say(line)
        if report.snapshot_error:
            raise RuntimeFailure(report.snapshot_error)


@cli.command()
@SWEEP_DIR
@click.option("--force", is_flag=True, help="Rebuild even a readable state (its event history is lost).")
def repair(sweep_dir: Path, force: bool) -> None:
    """Rebuild a lost or damaged state database from the files: configs, job maps and markers.

    The damaged database is kept aside (.hpc_sweep/state.db.corrupt-<time>). Submissions whose tasks left a
    start marker get their scheduler id back; the others are looked up by job name before anything is
    submitted again. Nothing is submitted by repair itself.

    \b
    Example:
      hpc-sweep repair my-sweep && hpc-sweep poll my-sweep -v
    """
    from hpc_sweep.repair import repair as run_repair

    for line in run_repair(sweep_dir, force=force).lines():
        _say(line)


def _dir_and_names(args: tuple) -> tuple:
    """[SWEEP_DIR] [NAMES...]: the first argument is the sweep folder when it is a folder."""
    if args and Path(args[0]).is_dir():
        return Path(args[0]), args[1:]
    return Path("."), args


@cli.command()
@click.argument("args", nargs=-1, metavar="[SWEEP_DIR] [NAMES]...")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cancel(args: tuple, yes: bool) -> None:
    """Cancel this sweep's jobs (all, or the named configs) by their exact job ids.

    \b
    Examples:
      hpc-sweep cancel my-sweep config003 config007
      hpc-sweep cancel my-sweep --yes
    """
    from hpc_sweep.submit.cancel import cancel as run_cancel

    sweep_dir, names = _dir_and_names(args)

    if not names and not yes and sys.stdin.isatty():
        click.confirm("Cancel every job of this sweep?", abort=True)
    with _write_session(sweep_dir) as session:
        done = run_cancel(session, names or None)
        going = _tasks_going_on(session, done.asked)
        from hpc_sweep.track.snapshot import write_snapshots

        write_snapshots(session)
    _say(f"cancelled {len(done.marked)} config(s)" + (f"; scheduler ids: {' '.join(done.ids)}" if done.ids else ""))
    for line in going:
        _say(line)


def _tasks_going_on(session: Session, asked: tuple) -> list:
    """One line per packed task whose runs were asked to stop while its other runs go on (no scheduler command
    was sent for it): 'config001: asked its run to stop (task 5123_0 goes on with 2 other runs)'."""
    from hpc_sweep.state.states import ACTIVE

    by_task: dict = {}
    for att in asked:
        by_task.setdefault(att.job_id, []).append(att.config)
    others: dict = {}
    for att in session.store.attempts(states=ACTIVE):
        if att.job_id in by_task:
            others[att.job_id] = others.get(att.job_id, 0) + 1
    lines = []
    for job_id, configs in by_task.items():
        n = others.get(job_id, 0)
        runs = f"{n} other run{'s' if n != 1 else ''}"
        whose = "its run" if len(configs) == 1 else "their runs"
        lines.append(f"{', '.join(configs)}: asked {whose} to stop (task {job_id} goes on with {runs})")
    return lines


@cli.command()
@click.argument("args", nargs=-1, required=True, metavar="[SWEEP_DIR] NAMES...")
@click.option("--walltime", help="A new walltime for these runs, e.g. 48:00:00.")
@click.option("--fresh", is_flag=True, help="Start from scratch instead of the last checkpoint.")
def resubmit(args: tuple, walltime: Optional[str], fresh: bool) -> None:
    """Submit finished, failed or cancelled configs again (from their checkpoint unless --fresh).

    \b
    Example:
      hpc-sweep resubmit my-sweep config004 --walltime 48:00:00
    """
    from hpc_sweep.submit.resubmit import resubmit as run_resubmit

    sweep_dir, names = _dir_and_names(args)
    if not names:
        raise UserError("name at least one config", fix="e.g. hpc-sweep resubmit my-sweep config004")

    with _write_session(sweep_dir) as session:
        report = run_resubmit(session, list(names), walltime, fresh)
    for name, sid, n in report.submitted:
        _say(f"submitted {name} as {sid} ({n} task{'s' if n != 1 else ''})")
    if report.waiting:
        _say(f"{report.waiting} config(s) waiting" + (f": {report.reason}" if report.reason else ""))


@cli.command()
def sites() -> None:
    """List site profiles (shipped and yours) and the scheduler detected here.

    \b
    Example:
      hpc-sweep sites
    """
    from tabulate import tabulate

    from hpc_sweep.sweep.sites import describe, detect_scheduler, load_profile_file, profile_files, user_dir

    rows = []
    for name, path in profile_files().items():
        info = describe(load_profile_file(path, name))
        rows.append([name, info["scheduler"], info["hostname"], info["description"], info["path"]])
    _say(tabulate(rows, ["name", "scheduler", "hostname", "description", "file"]))
    _say(f"\nyour own profiles go in {user_dir()}; scheduler detected here: {detect_scheduler() or 'none (local)'}")


@cli.group()
def cron() -> None:
    """Manage the entry that polls a sweep: a crontab line, or a Slurm scrontab entry (--via scrontab).

    \b
    Examples:
      hpc-sweep cron install my-sweep --every 10m
      hpc-sweep cron install my-sweep --via scrontab
      hpc-sweep cron show my-sweep
      hpc-sweep cron remove my-sweep
    """


VIA = click.option("--via", type=click.Choice(["crontab", "scrontab"]), default="crontab", show_default=True,
                   help="crontab on this machine, or Slurm's scrontab (the poll runs as a small scheduled job).")


@cron.command("install")
@SWEEP_DIR
@click.option("--every", default="10m", show_default=True, help="Interval: 5m, 10m, 1h ...")
@VIA
def cron_install(sweep_dir: Path, every: str, via: str) -> None:
    """Install (or replace) this sweep's poll entry."""
    from hpc_sweep.sweep.sweepfile import load_sweep

    spec = load_sweep(sweep_dir)
    if via == "scrontab":
        from hpc_sweep.cron import scron_install

        profile = _profile_of(spec)
        block = scron_install(spec.root, every, f"hpcs-poll-{spec.name}", profile.partition, profile.account,
                              profile.qos, _slurm_version())
        _say("installed in scrontab:\n" + "\n".join(block))
        _say(f"the poll runs as a Slurm job; its output goes to {spec.root}/.hpc_sweep/scrontab-poll.out")
        return
    from hpc_sweep.cron import install

    _say(f"installed: {install(spec.root, every)}")
    _say("cron mails whatever a poll prints: errors and state changes. If polls fail, run the line by hand.")


@cron.command("remove")
@SWEEP_DIR
@VIA
def cron_remove(sweep_dir: Path, via: str) -> None:
    """Remove this sweep's poll entry."""
    if via == "scrontab":
        from hpc_sweep.cron import scron_remove

        _say("removed" if scron_remove(sweep_dir.resolve(), _slurm_version()) else "no entry for this sweep")
        return
    from hpc_sweep.cron import remove

    _say("removed" if remove(sweep_dir.resolve()) else "no line for this sweep")


@cron.command("show")
@SWEEP_DIR
@VIA
def cron_show(sweep_dir: Path, via: str) -> None:
    """Show this sweep's poll entry."""
    if via == "scrontab":
        from hpc_sweep.cron import scron_show

        _say(scron_show(sweep_dir.resolve()) or "no entry for this sweep")
        return
    from hpc_sweep.cron import show

    _say(show(sweep_dir.resolve()) or "no line for this sweep")


def _profile_of(spec):
    from hpc_sweep.sweep.sites import load_profile

    return load_profile(spec.site, spec.root)


def _slurm_version() -> Optional[tuple]:
    """The Slurm client's version (scrontab's way to take a new crontab changed in 21.08); None if unknown."""
    from hpc_sweep.common import shell
    from hpc_sweep.schedulers.detect import DETECT_ARGVS, slurm_version

    return slurm_version(shell.run(DETECT_ARGVS["slurm"], timeout=20))


@cli.command()
@SWEEP_DIR
@click.option("--site", help="Check this site profile (a name or a path) instead of the sweep's.")
def doctor(sweep_dir: Path, site: Optional[str]) -> None:
    """Check this cluster for a sweep, one line each: OK, WARN or FAIL with the fix.

    The scheduler and its version; the partition or queue; the limits; each resource shape of the sweep against
    the nodes (with the CPUs and memory per GPU chosen); account and QOS; the profile's setup lines in a clean
    shell with cron's environment, and the command's program found after them; free space; crontab or
    scrontab. Exit status 1 when any line FAILs. Works before 'generate', and outside a sweep with --site.

    \b
    Examples:
      hpc-sweep doctor my-sweep
      hpc-sweep doctor --site ~/.config/hpc-sweep/sites/mycluster.toml
    """
    from hpc_sweep.doctor import report
    from hpc_sweep.doctor_facts import examine

    text, status = report(examine(sweep_dir, site))
    click.echo(text, nl=False)
    if status:
        raise RuntimeFailure("doctor found problems: fix the FAIL lines above")


def _busy_database(exc: Exception) -> Optional[RuntimeFailure]:
    """SQLite's "database is locked" after the busy timeout, as the one-line failure it is (never corruption)."""
    if type(exc).__module__ != "sqlite3":
        return None
    from hpc_sweep.state.health import StateBusy, busy_timeout_s, is_busy

    if not is_busy(exc):
        return None
    return StateBusy(f"the state is being written by another hpc-sweep; try again (it was still busy after "
                     f"{busy_timeout_s():g} s)")


def main(argv: Optional[list] = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="hpc-sweep", standalone_mode=False)
    except click.exceptions.Abort:
        _say("hpc-sweep: aborted", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 2 else exc.exit_code)
    except (UserError, RuntimeFailure) as exc:
        if debug:
            raise
        _say(f"hpc-sweep: error: {one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _say("hpc-sweep: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug of ours: one line, the traceback behind --debug
        if debug:
            raise
        busy = _busy_database(exc)
        if busy is not None:  # another process held the state past the busy timeout, mid-command
            _say(f"hpc-sweep: error: {one_line(str(busy))}", err=True)
            sys.exit(busy.exit_code)
        _say(f"hpc-sweep: internal error: {type(exc).__name__}: {one_line(str(exc))} "
             "(run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
