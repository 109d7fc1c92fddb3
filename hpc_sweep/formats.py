"""Reading and writing the structured files we deal with: TOML (sweep.toml, DeepH configs, site profiles) and
YAML (XequiNet configs). Parse errors become one-line UserErrors naming the file and position."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hpc_sweep.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on old login nodes
    import tomli as tomllib

YAML_SUFFIXES = (".yaml", ".yml")


def format_of(path: Path) -> str:
    return "yaml" if path.suffix.lower() in YAML_SUFFIXES else "toml"


def read_text(path: Path, what: str = "file") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found", file=path, fix="check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} is not UTF-8 text", file=path) from None
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror}", file=path) from None


def parse_toml(text: str, path: Path) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"malformed TOML: {exc}", file=path, fix="correct the TOML syntax there") from None


def parse_yaml(text: str, path: Path) -> dict:
    import yaml  # only XequiNet sweeps pay for it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"malformed YAML{where}: {problem}", file=path, fix="correct the YAML syntax there") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError("the top level must be a mapping of sections", file=path)
    return data


def load_structured(path: Path, what: str = "config") -> dict:
    text = read_text(path, what)
    if format_of(path) == "yaml":
        return parse_yaml(text, path)
    return parse_toml(text, path)


def dump_structured(data: dict, fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    import tomli_w

    return tomli_w.dumps(data)
