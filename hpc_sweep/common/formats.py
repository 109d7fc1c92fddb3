"""Reading and writing the structured files we deal with: TOML (sweep.toml, DeepH configs, site profiles) and
YAML (XequiNet configs). Parse errors become one-line UserErrors naming the file and position.

YAML is read with the rules of the trainer's own loader (OmegaConf: ``5e-4`` is a float) and written so that it
reads back the same (see :mod:`hpc_sweep.common.yamltext`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from hpc_sweep.common.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on old login nodes
    import tomli as tomllib

YAML_SUFFIXES = (".yaml", ".yml")
# Limits on what a parsed file may hold: deeper nesting, more values (a YAML alias bomb expands to billions) or
# integers outside 64 bits (TOML's own limit; schedulers and trainers choke on them) are refused as bad input.
MAX_DEPTH = 64
MAX_VALUES = 1_000_000
INT64 = (-(2 ** 63), 2 ** 63 - 1)


def format_of(path: Path) -> str:
    return "yaml" if path.suffix.lower() in YAML_SUFFIXES else "toml"


def read_text(path: Path, what: str = "file") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found", file=path, fix="check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} is not UTF-8 text", file=path, fix="save it as UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror}", file=path) from None


def _beyond_limits(exc: Exception, path: Path) -> UserError:
    """What a parser raises past Python's own limits, as a user error."""
    if isinstance(exc, RecursionError):
        return UserError(f"nested more than {MAX_DEPTH} levels deep", file=path, fix="flatten it")
    # e.g. an integer of thousands of digits (Python's int conversion limit)
    return UserError(f"unreadable value: {str(exc).split(';')[0]}", file=path,
                     fix="use a float (e.g. 1e30) or a smaller number")


def parse_toml(text: str, path: Path) -> dict:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"malformed TOML: {exc}", file=path, fix="correct the TOML syntax there") from None
    except (RecursionError, ValueError) as exc:
        raise _beyond_limits(exc, path) from None
    check_tree(data, path)
    return data


def parse_yaml(text: str, path: Path) -> dict:
    import yaml  # only XequiNet sweeps pay for it

    from hpc_sweep.common import yamltext

    try:
        data = yamltext.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"malformed YAML{where}: {problem}", file=path, fix="correct the YAML syntax there") from None
    except (RecursionError, ValueError) as exc:
        raise _beyond_limits(exc, path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError("the top level must be a mapping of sections", file=path)
    check_tree(data, path)
    return data


def check_tree(data: Any, path: Path) -> None:
    """Refuse what no config needs and what would hang or crash later steps: nesting deeper than MAX_DEPTH, more
    than MAX_VALUES values once aliases are expanded, integers outside 64 bits. Iterative, and stops early."""
    stack = [(data, "", 0)]
    seen = 0
    while stack:
        node, key, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise UserError(f"holds more than {MAX_VALUES} values (repeated YAML aliases?)", file=path,
                            fix="write the values out; anchors that expand to huge trees are refused")
        if depth > MAX_DEPTH:
            raise UserError(f"nested more than {MAX_DEPTH} levels deep", file=path, key=key, fix="flatten it")
        if isinstance(node, dict):
            stack.extend((value, f"{key}.{name}" if key else str(name), depth + 1) for name, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, f"{key}[{i}]", depth + 1) for i, value in enumerate(node))
        elif isinstance(node, int) and not isinstance(node, bool) and not INT64[0] <= node <= INT64[1]:
            raise UserError("integer outside the 64-bit range", file=path, key=key,
                            fix="use a float (e.g. 1e30) or a smaller number")


def load_structured(path: Path, what: str = "config") -> dict:
    text = read_text(path, what)
    if format_of(path) == "yaml":
        return parse_yaml(text, path)
    return parse_toml(text, path)


def dump_structured(data: dict, fmt: str, like: Optional[Path] = None) -> str:
    """``data`` as text. ``like``: the YAML file ``data`` was derived from (a base, a generated config); what did
    not change keeps that file's text, comments included. TOML is written whole."""
    if fmt == "yaml":
        import yaml

        from hpc_sweep.common import yamltext

        if like is not None:
            try:
                return yamltext.dump_like(data, yamltext.source_of(str(like)))
            except (OSError, ValueError, RecursionError, yaml.YAMLError):
                pass  # the source is gone or unreadable now: the data alone is enough
        return yamltext.dump(data)
    import tomli_w

    return tomli_w.dumps(data)
