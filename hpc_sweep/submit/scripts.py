"""Job scripts: Jinja templates (shipped in job_templates/, or a site's own extending them) → one script per
submission. The map from array index to config that the script reads is :mod:`hpc_sweep.common.jobmap`."""

from __future__ import annotations

import difflib
import re
import shlex
import string
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from hpc_sweep import __version__
from hpc_sweep.common.errors import UserError

if TYPE_CHECKING:
    from hpc_sweep.session import Session

# Each {placeholder} of sweep.command becomes a quoted reference to a variable the job script sets from the
# map: values never pass through the template text, so no parameter can inject shell.
PLACEHOLDER_VARS = {
    "config": '"$HPCS_CONFIG"', "gpus": '"$HPCS_GPUS"', "device": '"$HPCS_DEVICE"', "index": '"$HPCS_INDEX"',
    "port": '"$HPCS_PORT"', "outputs_dir": '"$HPCS_OUTPUTS"', "name": '"$HPCS_NAME"',
    "sweep_dir": '"$HPCS_SWEEP_DIR"', "nprocs": '"$HPCS_NPROCS"',
}
PORT_BASE, PORT_SPAN = 29500, 2000
_MEM = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)b?$", re.IGNORECASE)
_MEM_FACTOR = {"": 1 / 1024 / 1024, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def shell_command(template: str) -> str:
    """sweep.command with placeholders replaced by quoted variable references."""
    out = []
    for literal, name, spec, conv in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(PLACEHOLDER_VARS[name])
    return "".join(out)


def mem_mb(text: str, where: str) -> int:
    match = _MEM.match(text.strip())
    if not match:
        raise UserError(f"'{text}' is not a memory size like '16G' or '16gb'", key=where)
    return max(1, int(float(match.group(1)) * _MEM_FACTOR[match.group(2).lower()]))


_ENVIRONMENTS: dict = {}


def environment(profile):
    """The Jinja environment of a profile's template folders, one per process, so each template is compiled once
    (Jinja still checks its file's modification time on every use)."""
    key = tuple(map(str, profile.template_dirs))
    env = _ENVIRONMENTS.get(key)
    if env is not None:
        return env
    import jinja2

    from importlib import resources

    shipped = Path(str(resources.files("hpc_sweep.job_templates")))
    loader = jinja2.FileSystemLoader([*key, str(shipped)])
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    _ENVIRONMENTS[key] = env
    return env


def load_template(profile) -> None:
    """Load (compile) the profile's job template ahead of rendering; errors are left to :func:`render_script`."""
    try:
        environment(profile).get_template(profile.template_name)
    except Exception:
        pass


def check_directive_path(session: Session) -> None:
    """The log path goes into #SBATCH/#PBS lines, which split at blanks: sbatch would refuse the script. Checked
    before a submit asks the scheduler anything."""
    profile, paths = session.profile, session.paths
    if profile.scheduler != "local" and re.search(r"[\s\"'\\]", str(paths.logs)):
        raise UserError(f"the sweep folder's path has a blank, quote or backslash, which {profile.scheduler} job "
                        "directives cannot carry", file=paths.root, fix="move the sweep to a path without them")


def script_context(session: Session, job_name: str, array: Optional[str], ntasks: int, gpus: int, device_type: str,
                   walltime_s: int, map_file: Path) -> dict:
    from hpc_sweep.common.durations import format_hms
    from hpc_sweep.submit.resources import task_resources

    profile, spec, paths = session.profile, session.spec, session.paths
    check_directive_path(session)
    # CPUs and memory per task: the sweep's or profile's, else derived from the partition's nodes.
    resources = task_resources(session, gpus, device_type, walltime_s)
    cpus, memory = resources.cpus, resources.mem_mb
    adapter = session.scheduler
    return {
        "version": __version__, "sweep_name": spec.name, "job_name": job_name, "array": array, "ntasks": ntasks,
        "sweep_dir": str(paths.root), "map_file": str(map_file), "markers_dir": str(paths.markers),
        "logs_dir": str(paths.logs), "walltime": format_hms(walltime_s), "walltime_s": walltime_s,
        "gpus": gpus, "device_type": device_type,
        "gpu_resource": profile.gpu_resource.get(device_type, device_type), "gpu_type": profile.gpu_type,
        "gpu_request": profile.gpu_request, "cpus": cpus, "mem_mb": memory,
        "partition": profile.partition, "queue": profile.queue, "account": profile.account, "qos": profile.qos,
        "extra_directives": profile.extra_directives, "setup": profile.setup,
        "command": shell_command(spec.command), "index_var": adapter.index_env, "task_id_var": adapter.task_id_env,
        "submission_var": adapter.submission_env,
        "port_base": PORT_BASE, "port_span": PORT_SPAN, "scheduler": profile.scheduler,
    }


def render_script(session: Session, context: dict) -> str:
    import jinja2

    env = environment(session.profile)
    name = session.profile.template_name
    try:
        template = env.get_template(name)
        text = template.render(**context)
    except jinja2.TemplateNotFound as exc:
        raise UserError(f"job template '{exc.name}' not found", file=session.profile.path, key="template",
                        fix="put it beside the profile or name a shipped one (slurm.sh.j2, pbspro.sh.j2, ...)") \
            from None
    except jinja2.UndefinedError as exc:
        missing = re.findall(r"'(\w+)' is undefined", str(exc))
        near = difflib.get_close_matches(missing[0], list(context), n=1) if missing else []
        fix = f"did you mean '{near[0]}'?" if near else f"available: {', '.join(sorted(context))}"
        raise UserError(f"template {name}: {exc}", file=session.profile.path, key="template", fix=fix) from None
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"template {exc.name or name} line {exc.lineno}: {exc.message}", file=session.profile.path,
                        key="template") from None
    # Collapse the blank lines Jinja's blocks leave behind, but keep the directive block contiguous.
    return re.sub(r"\n{3,}", "\n\n", text)
