"""The command table. Each command parses its arguments, calls one function, prints. Heavy modules are
imported inside the commands: cron runs `hpc-sweep poll` every few minutes on a shared login node."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from hpc_sweep import __version__
from hpc_sweep.errors import RuntimeFailure, UserError

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
    from hpc_sweep.init import init_sweep

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
    from hpc_sweep.generate import generate as run_generate, plan
    from hpc_sweep.layout import SweepPaths
    from hpc_sweep.state import open_store, sweep_lock
    from hpc_sweep.sweepfile import load_sweep

    spec = load_sweep(sweep_dir)
    paths = SweepPaths.at(spec.root)
    if dry_run:
        store = open_store(paths, create=False) if paths.db.exists() else None
        planned = plan(spec, store, paths)
        _say(f"{len(planned)} configs would be generated (nothing written)")
        return
    with sweep_lock(paths):
        store = open_store(paths, create=True)
        try:
            result = run_generate(spec, store, paths, force=force)
        finally:
            store.close()
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
    from hpc_sweep.session import Session

    session = Session.open(sweep_dir)
    try:
        if refresh:
            from hpc_sweep.poll import poll as run_poll

            run_poll(session, verbose=False)
        _say(session.render_status(fmt, states, sort))
    finally:
        session.close()


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
        _say(f"hpc-sweep: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _say("hpc-sweep: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug of ours: one line, the traceback behind --debug
        if debug:
            raise
        _say(f"hpc-sweep: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
