"""`hpc-sweep generate`: one config file per parameter set, numbered by identity, written atomically.

Everything is validated before anything is written, so a bad sweep leaves no half-written configs. Config
numbers stick to parameter sets: generating again changes nothing, added values get new numbers.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hpc_sweep.common.atomicio import write_atomic
from hpc_sweep.common.dotted import get_dotted, has_dotted, nearest_keys, set_dotted
from hpc_sweep.common.errors import UserError
from hpc_sweep.common.formats import dump_structured, format_of, load_structured
from hpc_sweep.common.layout import SweepPaths
from hpc_sweep.state.store import Store
from hpc_sweep.sweep.expand import expand, params_key
from hpc_sweep.sweep.sweepfile import SweepSpec

# Keys holding paths, per program: relative values are made absolute against the base's folder (as DeepH
# resolves them), so a config works from any working directory.
PATH_KEYS = {
    "deeph": ("data.inputs_dir", "data.outputs_dir", "process.train.dataloader.dataset_split_json",
              "process.train.dataloader.dateset_split_json",  # the spelling of DeepH's official examples
              "process.train.continued.previous_output_dir"),
    "xequinet": ("data.db_path", "trainer.save_dir", "trainer.ckpt_file"),
    "generic": (),
}
DEFAULT_DEVICE = {"deeph": "gpu*8:0", "xequinet": "gpu*1", "generic": "cpu"}


@dataclass
class PlannedConfig:
    name: str
    idx: int
    params: dict
    key: str
    text: str
    digest: str
    device: str
    gpus: int
    shape: str
    path: Path
    log_context: str = "{}"
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


@dataclass
class GenerateResult:
    written: list = field(default_factory=list)
    unchanged: list = field(default_factory=list)
    forced: list = field(default_factory=list)
    retired: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def plain_copy(value: Any) -> Any:
    """A deep copy of parsed TOML/YAML data: dicts and lists are copied, everything else is immutable.
    (copy.deepcopy's generality costs a third of generating 10,000 configs.)"""
    if isinstance(value, dict):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_copy(v) for v in value]
    return value


def config_name(idx: int) -> str:
    return f"config{idx:03d}"


def load_base(spec: SweepSpec) -> dict:
    return load_structured(spec.base, "base config")


def check_params_against_base(spec: SweepSpec, base: dict, params: dict, where: str) -> None:
    """A swept or fixed key must exist in the base (unless allowed) and keep its type."""
    for key, value in params.items():
        if not has_dotted(base, key):
            if spec.allow_new_keys:
                continue
            near = nearest_keys(base, key)
            fix = f"did you mean {', '.join(repr(k) for k in near)}?" if near else "check the base config"
            raise UserError(f"'{key}' does not exist in the base {spec.base.name}", file=spec.path,
                            key=f"{where}.{key}", fix=fix + " (or set allow_new_keys = true under [sweep])")
        current = get_dotted(base, key)
        if not _same_type(current, value):
            raise UserError(f"value {value!r} is a {type(value).__name__} but the base has "
                            f"{type(current).__name__} {current!r}", file=spec.path, key=f"{where}.{key}",
                            fix=f"give a {type(current).__name__}")


def _same_type(current: Any, value: Any) -> bool:
    if current is None or value is None:
        return True
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, float) and isinstance(value, (int, float)):
        return True  # an int where the base has a float is fine (TOML 1 vs 1.0)
    if isinstance(current, (int, float)) and isinstance(value, (int, float)):
        return isinstance(value, int)  # a float where the base wants an int is not
    if isinstance(current, dict):
        return isinstance(value, dict)
    if isinstance(current, list):
        return isinstance(value, list)
    return type(current) is type(value)


def _resolve_paths(config: dict, program: str, base_dir: Path) -> None:
    for key in PATH_KEYS.get(program, ()):
        value = get_dotted(config, key, None)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            set_dotted(config, key, str((base_dir / value).resolve()))


def plan(spec: SweepSpec, store: Optional[Store], paths: SweepPaths, extra: list = ()) -> list[PlannedConfig]:
    """Build every config in memory and check it. Raises UserError on the first problem. A ``[search]`` sweep's
    parameter sets are its recorded trials' (:mod:`hpc_sweep.sweep.search`), then ``extra`` (the ones just
    asked for, checked before they are recorded)."""
    from hpc_sweep.sweep.device import DeviceError, parse_device
    from hpc_sweep.programs import get_program

    program = get_program(spec.program, spec.log)
    base = load_base(spec)
    fmt = format_of(spec.base)
    check_params_against_base(spec, base, spec.fixed, "fixed")
    if spec.search is not None:
        from hpc_sweep.sweep.search import recorded_param_sets

        param_sets = recorded_param_sets(store) + list(extra)
    else:
        param_sets = expand(spec)
    known = {} if store is None else {row.params_key: row for row in store.configs()}
    next_idx = max([row.idx for row in known.values()] or [0]) + 1
    resolved_base = plain_copy(base)
    _resolve_paths(resolved_base, spec.program, spec.base.parent)
    for key, value in spec.fixed.items():
        set_dotted(resolved_base, key, value)
    planned = []
    for params in param_sets:
        key = params_key(params)
        check_params_against_base(spec, base, params, _where(spec, params))
        if key in known:
            idx, name = known[key].idx, known[key].name
        else:
            idx, name = next_idx, config_name(next_idx)
            next_idx += 1
        config = plain_copy(resolved_base)
        for dotted, value in params.items():
            set_dotted(config, dotted, value)
        notes = list(program.prepare(config)) if hasattr(program, "prepare") else []
        outputs = paths.config_outputs(name)
        program.set_outputs(config, name, outputs)
        device_text = _device_of(spec, program, config)
        try:
            device = parse_device(device_text)
        except DeviceError as exc:
            where = program.device_key() or "sweep.device"
            in_sweep = where == "sweep.device" or where in params or where in spec.fixed
            raise UserError(str(exc), file=spec.path if in_sweep else spec.base, key=where) from None
        gpus = device.count if device.is_accelerator else 0
        errors, warnings = program.check(config, gpus)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise UserError(f"{name}: {errors[0]}{more}", file=spec.path, fix="change the base, [fixed] or the grid")
        text = dump_structured(config, fmt, like=spec.base)  # YAML: untouched keys keep the base's text
        planned.append(PlannedConfig(
            name=name, idx=idx, params=params, key=key, text=text,
            digest=hashlib.sha256(text.encode()).hexdigest(), device=device_text, gpus=gpus,
            shape=f"{device.type}:{gpus}" if device.is_accelerator else "cpu",
            path=paths.configs / f"{name}.{fmt}", log_context=json.dumps(program.log_context(config)), notes=notes,
            warnings=[f"{name}: {w}" for w in warnings]))
    return planned


def _where(spec: SweepSpec, params: dict) -> str:
    first = next(iter(params), "")
    if first in spec.grid:
        return "grid"
    for number, group in enumerate(spec.zips, 1):
        if first in group:
            return f"zip[{number}]"
    if any(p.key == first for p in spec.random_params):
        return "random.params"
    if spec.search is not None:
        return "search.params"
    return "configs"


def _device_of(spec: SweepSpec, program, config: dict) -> str:
    key = program.device_key()
    if key is not None:
        value = get_dotted(config, key, None)
        if value is not None:
            if not isinstance(value, str):
                raise UserError(f"device must be a string like 'gpu*8:0', not {value!r}", file=spec.base, key=key)
            return value
    return spec.device or DEFAULT_DEVICE[spec.program]


def generate(spec: SweepSpec, store: Store, paths: SweepPaths, force: bool = False,
             planned: Optional[list] = None) -> GenerateResult:
    """``planned``: the plan already made against an empty state (a first generate checks everything before it
    creates the state database, so bad input leaves no file behind)."""
    if planned is None or store.configs():
        planned = plan(spec, store, paths)
    existing = {row.name: row for row in store.configs()}
    result = GenerateResult()
    changed_submitted = [p.name for p in planned
                         if p.name in existing and existing[p.name].digest != p.digest
                         and existing[p.name].attempt > 0]
    if changed_submitted and not force:
        shown = ", ".join(changed_submitted[:5]) + (" ..." if len(changed_submitted) > 5 else "")
        raise UserError(f"would change {len(changed_submitted)} already-submitted config(s): {shown}",
                        file=spec.path, fix="revert the change, or pass --force to rewrite them (recorded)")
    paths.configs.mkdir(parents=True, exist_ok=True)
    to_write = [p for p in planned if p.name not in existing or existing[p.name].digest != p.digest
                or not p.path.exists()]
    # Files first (each atomic), then the database in one transaction: a crash in between leaves files the
    # next generate rewrites identically.
    creates_outputs = spec.program == "xequinet"  # its save_dir must exist; DeepH and others make their own
    for p in to_write:
        if creates_outputs:
            paths.config_outputs(p.name).mkdir(parents=True, exist_ok=True)
        write_atomic(p.path, p.text, fsync=False)
    now = time.time()
    wanted = {p.name for p in planned}
    with store.transaction() as conn:
        store.add_configs((p.name, p.idx, json.dumps(p.params), p.key, str(p.path), p.digest, p.device, p.gpus,
                           p.shape, 1, p.log_context) for p in planned if p.name not in existing)
        for p in planned:
            row = existing.get(p.name)
            if row is None:
                result.written.append(p.name)
            elif row.digest != p.digest:
                conn.execute("UPDATE configs SET digest = ?, device = ?, gpus = ?, shape = ?, path = ?, "
                             "log_context = ?, in_definition = 1, updated_at = ? WHERE name = ?",
                             (p.digest, p.device, p.gpus, p.shape, str(p.path), p.log_context, now, p.name))
                if row.attempt > 0:
                    store.add_event("forced_regenerate", f"rewritten with --force (was {row.digest[:12]})",
                                    p.name)
                    result.forced.append(p.name)
                else:
                    result.written.append(p.name)
            else:
                if not row.in_definition or row.log_context != p.log_context:
                    conn.execute("UPDATE configs SET in_definition = 1, log_context = ? WHERE name = ?",
                                 (p.log_context, p.name))
                result.unchanged.append(p.name)
        for name, row in existing.items():
            if name not in wanted and row.in_definition:
                conn.execute("UPDATE configs SET in_definition = 0 WHERE name = ?", (name,))
                result.retired.append(name)
        store.set_meta("last_generate", str(now))
        if store.get_meta("prefix") is None:  # a folder made without init: its job names are fixed from now on
            from hpc_sweep.sweep.init import new_prefix

            store.set_meta("prefix", new_prefix(spec.name))
    for p in planned:
        if p.name in result.written or p.name in result.forced:
            result.notes.extend(f"{p.name}: {n}" for n in p.notes)
        result.warnings.extend(p.warnings)
    result.notes = _dedupe_by_message(result.notes)
    result.warnings = _dedupe_by_message(result.warnings)
    return result


def _dedupe_by_message(lines: list) -> list:
    """The same note for 500 configs is one line with a count."""
    grouped: dict = {}
    for line in lines:
        name, _, message = line.partition(": ")
        grouped.setdefault(message, []).append(name)
    out = []
    for message, names in grouped.items():
        who = names[0] if len(names) == 1 else f"{len(names)} configs ({names[0]}...)"
        out.append(f"{who}: {message}")
    return out
