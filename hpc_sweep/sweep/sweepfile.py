"""Read and validate sweep.toml into a :class:`SweepSpec`. Every mistake is one UserError naming file and key."""

from __future__ import annotations

import difflib
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hpc_sweep.common.durations import parse_duration
from hpc_sweep.common.errors import UserError
from hpc_sweep.common.formats import parse_toml, read_text
from hpc_sweep.state.states import RESUMABLE, RESUMABLE_DEFAULT, ordered

SWEEP_FILE = "sweep.toml"
PROGRAMS = ("deeph", "xequinet", "generic")
DEFAULT_RESUME_STATES = ordered(RESUMABLE_DEFAULT)
COMMAND_FIELDS = ("config", "gpus", "nprocs", "device", "index", "port", "outputs_dir", "name", "sweep_dir")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
MAX_CONFIGS = 100_000  # one sweep; the generate and poll budgets are measured at 10,000

_SECTIONS = {
    "sweep": ("name", "program", "base", "command", "site", "walltime", "device", "max_retries", "resume_states",
              "allow_new_keys", "throttle", "cpus_per_gpu", "mem_per_gpu", "runs_per_gpu", "pack", "gpus_per_node",
              "pack_waves"),
    "grid": None, "zip": None, "configs": None, "random": ("count", "seed", "params"), "fixed": None,
    "smoke": ("count", "timeout", "walltime", "overrides"),
    "log": ("path", "epoch", "train_loss", "val_loss", "finished", "outputs_key", "max_epoch_key"),
    "poll": ("min_interval",),
    "early_stop": (), "search": (),  # their keys are checked by hpc_sweep.sweep.options
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")


@dataclass
class RandomParam:
    key: str
    dist: str
    low: Optional[float] = None
    high: Optional[float] = None
    values: Optional[list] = None


@dataclass
class SmokeSpec:
    count: int = 2
    timeout_s: int = 15 * 60
    walltime_s: int = 15 * 60
    overrides: dict = field(default_factory=dict)


@dataclass
class SweepSpec:
    path: Path                      # the sweep.toml
    root: Path                      # the sweep folder
    name: str
    program: str
    base: Path                      # absolute, inside root
    command: str
    site: Optional[str] = None      # None = detect
    walltime_s: Optional[int] = None
    device: Optional[str] = None
    max_retries: int = 2
    resume_states: tuple = DEFAULT_RESUME_STATES
    allow_new_keys: bool = False
    throttle: Optional[int] = None
    cpus_per_gpu: Optional[int] = None
    mem_per_gpu: Optional[str] = None
    packing: dict = field(default_factory=dict)       # the packing keys it sets (hpc_sweep.submit.packing checks them)
    grid: dict = field(default_factory=dict)          # dotted key -> list of values
    zips: list = field(default_factory=list)          # list of {dotted key -> list}
    explicit: list = field(default_factory=list)      # list of {dotted key -> value}
    random_count: int = 0
    random_seed: int = 0
    random_params: list = field(default_factory=list)  # list of RandomParam
    fixed: dict = field(default_factory=dict)
    smoke: SmokeSpec = field(default_factory=SmokeSpec)
    log: dict = field(default_factory=dict)
    poll_min_interval_s: Optional[int] = None
    early_stop: Optional[Any] = None                 # options.EarlyStopSpec: [early_stop]
    search: Optional[Any] = None                     # options.SearchSpec: [search]

    @property
    def swept_keys(self) -> list[str]:
        keys = list(self.grid)
        for group in self.zips:
            keys += list(group)
        for extra in self.explicit:
            keys += list(extra)
        keys += [p.key for p in self.random_params]
        if self.search is not None:
            keys += [p.key for p in self.search.params]
        return list(dict.fromkeys(keys))


def _nearest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(options)}"


class _Reader:
    """Small helpers that raise UserErrors naming this file."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str, fix: Optional[str] = None) -> UserError:
        return UserError(message, file=self.path, key=key, fix=fix)

    def typed(self, table: dict, section: str, key: str, kind, default=None, required=False):
        if key not in table:
            if required:
                raise self.fail(f"{section}.{key}", "is required", fix=f"add {key} = ... under [{section}]")
            return default
        value = table[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.fail(f"{section}.{key}", f"must be an integer, not {value!r}")
        if kind is not int and not isinstance(value, kind):
            raise self.fail(f"{section}.{key}", f"must be a {kind.__name__}, not {value!r}")
        return value

    def duration(self, table: dict, section: str, key: str) -> Optional[int]:
        if key not in table:
            return None
        try:
            return parse_duration(table[key])
        except ValueError as exc:
            raise self.fail(f"{section}.{key}", str(exc)) from None

    def dotted_table(self, table: Any, where: str) -> dict:
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table of \"dotted.key\" = value")
        flat: dict = {}
        for key, value in _flatten_quoted(table):
            if not _DOTTED.fullmatch(key):
                raise self.fail(f"{where}.{key}", "is not a valid dotted key", fix='write it as "section.sub.key"')
            flat[key] = value
        return flat


def _flatten_quoted(table: dict, prefix: str = ""):
    """Users write "a.b.c" = [...] (one quoted key) but TOML also allows a.b.c = [...] (nested tables):
    accept both by flattening nested tables that hold no list at their own level."""
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten_quoted(value, dotted + ".")
        else:
            yield dotted, value


def load_sweep(root: Path) -> SweepSpec:
    root = root.resolve()
    path = root / SWEEP_FILE
    if not path.is_file():
        raise UserError("no sweep.toml here", file=path,
                        fix="run 'hpc-sweep init DIR --base FILE' or pass the sweep folder")
    data = parse_toml(read_text(path, "sweep file"), path)
    return parse_sweep(data, path)


def parse_sweep(data: dict, path: Path) -> SweepSpec:
    reader = _Reader(path)
    root = path.parent.resolve()
    for section in data:
        if section not in _SECTIONS:
            raise reader.fail(section, "is not a known section", fix=_nearest(section, _SECTIONS))
    for section, allowed in _SECTIONS.items():
        table = data.get(section)
        if allowed and isinstance(table, dict):
            for key in table:
                if key not in allowed:
                    raise reader.fail(f"{section}.{key}", "is not a known key", fix=_nearest(key, allowed))
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        raise reader.fail("sweep", "section [sweep] is missing", fix="add [sweep] with name, program, base, command")
    spec = _parse_sweep_table(reader, sweep, root)
    _parse_space(reader, data, spec)
    _parse_extras(reader, data, spec)
    from hpc_sweep.sweep.options import parse_options  # it reads [search.params] with this module's parsers

    options = parse_options(data, path, spec)
    spec.early_stop, spec.search = options.early_stop, options.search
    return spec


def _parse_sweep_table(reader: _Reader, sweep: dict, root: Path) -> SweepSpec:
    name = reader.typed(sweep, "sweep", "name", str, required=True)
    if not _NAME.fullmatch(name):
        raise reader.fail("sweep.name", f"'{name}' is not a usable job name",
                          fix="use letters, digits, '-', '_' or '.', at most 64 characters")
    program = reader.typed(sweep, "sweep", "program", str, required=True)
    if program not in PROGRAMS:
        raise reader.fail("sweep.program", f"'{program}' is not a known program", fix=_nearest(program, PROGRAMS))
    base_text = reader.typed(sweep, "sweep", "base", str, required=True)
    base = (root / base_text).resolve()
    if root != base and root not in base.parents:
        raise reader.fail("sweep.base", f"'{base_text}' lies outside the sweep folder {root}",
                          fix="keep the base inside the sweep, e.g. configs/.base_config.toml")
    command = reader.typed(sweep, "sweep", "command", str, required=True)
    _check_command(reader, command)
    resume_states = reader.typed(sweep, "sweep", "resume_states", list, default=list(DEFAULT_RESUME_STATES))
    for state in resume_states:
        if state not in RESUMABLE:
            raise reader.fail("sweep.resume_states", f"'{state}' cannot be resumed",
                              fix=_nearest(str(state), ordered(RESUMABLE)))
    max_retries = reader.typed(sweep, "sweep", "max_retries", int, default=2)
    throttle = reader.typed(sweep, "sweep", "throttle", int)
    if max_retries < 0 or (throttle is not None and throttle < 1):
        key = "sweep.max_retries" if max_retries < 0 else "sweep.throttle"
        raise reader.fail(key, "must be a positive integer")
    device = reader.typed(sweep, "sweep", "device", str)
    if device is not None:
        _check_device(reader, "sweep.device", device)
    cpus_per_gpu = reader.typed(sweep, "sweep", "cpus_per_gpu", int)
    if cpus_per_gpu is not None and cpus_per_gpu < 1:
        raise reader.fail("sweep.cpus_per_gpu", "must be a positive integer")
    mem_per_gpu = reader.typed(sweep, "sweep", "mem_per_gpu", str)
    if mem_per_gpu is not None and not re.fullmatch(r"\d+(\.\d+)?[kmgtKMGT]?[bB]?", mem_per_gpu.strip()):
        raise reader.fail("sweep.mem_per_gpu", f"{mem_per_gpu!r} is not a memory size", fix="e.g. \"16G\" or \"500M\"")
    return SweepSpec(
        path=reader.path, root=root, name=name, program=program, base=base, command=command,
        site=reader.typed(sweep, "sweep", "site", str), walltime_s=reader.duration(sweep, "sweep", "walltime"),
        device=device, max_retries=max_retries, resume_states=tuple(resume_states),
        allow_new_keys=reader.typed(sweep, "sweep", "allow_new_keys", bool, default=False), throttle=throttle,
        cpus_per_gpu=cpus_per_gpu, mem_per_gpu=mem_per_gpu, packing=_packing_keys(reader, sweep),
    )


PACKING_KEYS = {"runs_per_gpu": int, "pack": str, "gpus_per_node": int, "pack_waves": int}


def _packing_keys(reader: _Reader, sweep: dict) -> dict:
    """The packing keys [sweep] sets, typed; how they go together is checked where they are used
    (:func:`hpc_sweep.submit.packing.session_packing`), with the site profile's."""
    return {key: reader.typed(sweep, "sweep", key, kind) for key, kind in PACKING_KEYS.items() if key in sweep}


def _check_command(reader: _Reader, command: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(command) if f is not None]
    except ValueError as exc:
        raise reader.fail("sweep.command", f"bad placeholder syntax: {exc}", fix="write {config}, {gpus}, ...; "
                          "double braces {{ }} for literal ones") from None
    for name in fields:
        if name not in COMMAND_FIELDS:
            raise reader.fail("sweep.command", f"unknown placeholder {{{name}}}", fix=_nearest(name, COMMAND_FIELDS))
    if "config" not in fields:
        raise reader.fail("sweep.command", "does not mention {config}", fix="e.g. command = \"deeph-train {config}\"")


def _check_device(reader: _Reader, key: str, text: str) -> None:
    from hpc_sweep.sweep.device import DeviceError, parse_device

    try:
        parse_device(text)
    except DeviceError as exc:
        raise reader.fail(key, str(exc)) from None


def _value_list(reader: _Reader, key: str, value: Any) -> list:
    if not isinstance(value, list):
        raise reader.fail(key, f"must be a list of values, not {value!r}", fix=f'write "{key.split(".", 1)[-1]}" = [..]')
    if not value:
        raise reader.fail(key, "has an empty list of values", fix="give at least one value or remove the key")
    return value


def _parse_space(reader: _Reader, data: dict, spec: SweepSpec) -> None:
    spec.grid = {k: _value_list(reader, f"grid.{k}", v)
                 for k, v in reader.dotted_table(data.get("grid", {}), "grid").items()}
    zips = data.get("zip", [])
    if not isinstance(zips, list):
        raise reader.fail("zip", "must be written as [[zip]] tables")
    seen = set(spec.grid)
    for number, group in enumerate(zips, 1):
        flat = {k: _value_list(reader, f"zip[{number}].{k}", v)
                for k, v in reader.dotted_table(group, f"zip[{number}]").items()}
        lengths = {k: len(v) for k, v in flat.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise reader.fail(f"zip[{number}]", f"lists of unequal length ({detail})",
                              fix="keys in one [[zip]] move together: give each the same number of values")
        for key in flat:
            if key in seen:
                raise reader.fail(f"zip[{number}].{key}", "is swept twice", fix="keep each key in one place")
            seen.add(key)
        spec.zips.append(flat)
    explicit = data.get("configs", [])
    if not isinstance(explicit, list):
        raise reader.fail("configs", "must be written as [[configs]] tables")
    spec.explicit = [reader.dotted_table(t, f"configs[{n}]") for n, t in enumerate(explicit, 1)]
    _parse_random(reader, data.get("random"), spec)
    _check_size(reader, spec)
    spec.fixed = reader.dotted_table(data.get("fixed", {}), "fixed")
    for key in spec.fixed:
        if key in seen:
            raise reader.fail(f"fixed.{key}", "is both swept and fixed", fix="remove it from one of them")


def _check_size(reader: _Reader, spec: SweepSpec) -> None:
    """Count before expanding: a grid of a few long lists can mean more configs than any cluster runs (and than
    memory holds while they are built)."""
    import math

    axes = [len(v) for v in spec.grid.values()] + [len(next(iter(g.values()))) for g in spec.zips if g]
    product = math.prod(axes) if axes else 0
    if product > MAX_CONFIGS:
        raise reader.fail("grid", f"the grid and [[zip]] lists make {product} configs, more than {MAX_CONFIGS}",
                          fix="sweep fewer values at once, or sample with [random]")
    if product + len(spec.explicit) + spec.random_count > MAX_CONFIGS:
        raise reader.fail("random.count", f"{spec.random_count} samples make more than {MAX_CONFIGS} configs",
                          fix="ask for fewer samples")


def _parse_random(reader: _Reader, table: Any, spec: SweepSpec) -> None:
    if table is None:
        return
    if not isinstance(table, dict):
        raise reader.fail("random", "must be a table")
    spec.random_count = reader.typed(table, "random", "count", int, required=True)
    spec.random_seed = reader.typed(table, "random", "seed", int, default=0)
    if spec.random_count < 1:
        raise reader.fail("random.count", "must be at least 1")
    params = table.get("params", {})
    if not isinstance(params, dict) or not params:
        raise reader.fail("random.params", "must list at least one parameter",
                          fix='"key" = { dist = "loguniform", low = 1e-4, high = 1e-2 }')
    for key, desc in params.items():
        where = f"random.params.{key}"
        if not isinstance(desc, dict):
            raise reader.fail(where, "must be an inline table with dist", fix='{ dist = "uniform", low = 0, high = 1 }')
        dist = desc.get("dist")
        if dist not in DISTRIBUTIONS:
            raise reader.fail(f"{where}.dist", f"'{dist}' is not a distribution", fix=_nearest(str(dist), DISTRIBUTIONS))
        param = RandomParam(key=key, dist=dist)
        if dist == "choice":
            param.values = _value_list(reader, f"{where}.values", desc.get("values"))
        else:
            low, high = desc.get("low"), desc.get("high")
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
            if not numbers or low >= high:
                raise reader.fail(where, "needs numbers low < high", fix="e.g. low = 1e-4, high = 1e-2")
            if dist == "loguniform" and low <= 0:
                raise reader.fail(f"{where}.low", "must be positive for loguniform")
            if dist == "int" and not all(isinstance(v, int) for v in (low, high)):
                raise reader.fail(where, "int needs integer bounds")
            param.low, param.high = low, high
        spec.random_params.append(param)


def _parse_extras(reader: _Reader, data: dict, spec: SweepSpec) -> None:
    smoke = data.get("smoke", {})
    if smoke:
        spec.smoke = SmokeSpec(
            count=reader.typed(smoke, "smoke", "count", int, default=2),
            timeout_s=reader.duration(smoke, "smoke", "timeout") or 15 * 60,
            walltime_s=reader.duration(smoke, "smoke", "walltime") or 15 * 60,
            overrides=reader.dotted_table(smoke.get("overrides", {}), "smoke.overrides"),
        )
    log = data.get("log", {})
    for key, value in log.items():
        if not isinstance(value, str):
            raise reader.fail(f"log.{key}", "must be a string")
        if key in ("epoch", "train_loss", "val_loss", "finished"):
            try:
                re.compile(value)
            except re.error as exc:
                raise reader.fail(f"log.{key}", f"is not a valid regular expression: {exc}") from None
    spec.log = dict(log)
    if spec.program == "generic" and not {"path", "epoch"} <= set(log):
        raise reader.fail("log", "a generic program needs [log] path and epoch (and train_loss/val_loss regexes)",
                          fix='add [log] path = "train.log", epoch = "epoch (\\d+)", val_loss = "val ([0-9.e+-]+)"')
    spec.poll_min_interval_s = reader.duration(data.get("poll", {}), "poll", "min_interval")
