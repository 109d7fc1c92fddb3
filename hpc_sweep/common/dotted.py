"""Dotted keys ("process.train.optimizer.init_learning_rate") into nested TOML tables and YAML mappings."""

from __future__ import annotations

import difflib
from typing import Any, Iterator

_MISSING = object()


def get_dotted(tree: dict, key: str, default: Any = _MISSING) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise KeyError(key)
            return default
        node = node[part]
    return node


def has_dotted(tree: dict, key: str) -> bool:
    return get_dotted(tree, key, None) is not None or _has_none_leaf(tree, key)


def _has_none_leaf(tree: dict, key: str) -> bool:
    parent_key, _, leaf = key.rpartition(".")
    parent = get_dotted(tree, parent_key, None) if parent_key else tree
    return isinstance(parent, dict) and leaf in parent


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """Set ``key``, creating intermediate tables. A non-table in the way is replaced only at the leaf."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def iter_leaves(tree: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) whose value is not a table."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from iter_leaves(value, dotted + ".")
        else:
            yield dotted, value


def nearest_keys(tree: dict, key: str, limit: int = 3) -> list[str]:
    """Existing dotted keys closest to ``key``: first by the last part, then by the whole string."""
    leaves = [k for k, _ in iter_leaves(tree)]
    last = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in leaves if k.rsplit(".", 1)[-1] == last]
    close = difflib.get_close_matches(key, leaves, n=limit, cutoff=0.5)
    ordered = list(dict.fromkeys(same_leaf + close))
    return ordered[:limit]
