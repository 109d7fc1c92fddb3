"""YAML configs read as the trainer reads them and written back keeping the text of what did not change.

XequiNet loads its config through OmegaConf, whose loader is PyYAML's safe loader with three changes: YAML 1.2
floats (``5e-4``, ``1e10``: no dot needed, sign of the exponent optional) are floats, dates stay strings, and a
key given twice is an error. :func:`load` applies the same rules, so a value has the type the trainer will see.

Writing: :func:`dump` quotes every string that the trainer's loader would read as something else (``'5e-4'``
stays a string), and floats are written so they read back as floats. :func:`dump_like` writes a config derived
from a source file by editing that file's text: values that changed are replaced in place, keys that were added
are appended to their section, everything else (comments, flow lists, ``5e-4`` spelt as the user spelt it) keeps
its text. The result is parsed again and compared with the data; when an edit cannot be made in place (a removed
key, anchors, a merge key...) or does not read back equal, the whole config is dumped instead.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Optional

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

FLOAT_TAG = "tag:yaml.org,2002:float"
STR_TAG = "tag:yaml.org,2002:str"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# OmegaConf's float rule (omegaconf/_utils.py, get_yaml_loader), which XequiNet's config loading goes through.
_FLOAT = re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_FLOAT_FIRST = list("-+0123456789.")
_WIDE = 1 << 30  # no line folding
TOKEN, INSERT, BLOCK = "token", "insert", "block"  # kinds of text edit: one flow value, added keys, a block


def _trainer_rules(cls: type) -> type:
    """``cls`` with OmegaConf's implicit types: its float rule added, timestamps dropped."""
    cls.add_implicit_resolver(FLOAT_TAG, _FLOAT, _FLOAT_FIRST)
    cls.yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers if tag != TIMESTAMP_TAG]
                                   for first, resolvers in cls.yaml_implicit_resolvers.items()}
    return cls


class _NoDuplicateKeys:
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:str":  # as OmegaConf checks
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"found duplicate key {key_node.value}",
                        key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


@_trainer_rules
class TrainerLoader(_NoDuplicateKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's parser where installed) with OmegaConf's types."""


@_trainer_rules
class _TextLoader(_NoDuplicateKeys, yaml.SafeLoader):  # type: ignore[misc]
    """The pure-Python parser: its marks are character offsets, which the text edits need."""


@_trainer_rules
class TrainerDumper(yaml.SafeDumper):
    """Quotes a string wherever the trainer's loader would read it plain as another type."""


# Characters YAML counts as line breaks. PyYAML writes them raw into a quoted string, over several lines (and the
# unicode ones, with unicode allowed, so that they read back as a plain break); in double quotes they are escaped
# and the string stays on one line.
_BREAKS = re.compile("[\n\r\x85\u2028\u2029]")


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = '"' if _BREAKS.search(data) else None
    return dumper.represent_scalar(STR_TAG, data, style=style)


TrainerDumper.add_representer(str, _represent_str)


_RESOLVER = _trainer_rules(type("_Resolver", (yaml.resolver.Resolver,), {}))()


def load(text: str) -> Any:
    return yaml.load(text, Loader=TrainerLoader)


def dump(data: Any) -> str:
    """``data`` as block YAML that reads back equal; unicode written as itself unless that would not read back
    (then as escapes)."""
    text = _dump(data, allow_unicode=True)
    try:
        if same(load(text), data):
            return text
    except yaml.YAMLError:
        pass
    return _dump(data, allow_unicode=False)


def _dump(data: Any, allow_unicode: bool) -> str:
    return yaml.dump(data, Dumper=TrainerDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=allow_unicode, width=_WIDE)


# -- writing a config derived from a source file --------------------------------------------------------------
class Source:
    """A YAML file's text, its data and its node tree (None when its text cannot be edited in place)."""

    def __init__(self, text: str):
        self.text = text
        self.data = load(text)
        root = yaml.compose(text, Loader=_TextLoader)
        self.root: Optional[Node] = root if isinstance(root, MappingNode) and _plain_tree(root) else None
        # Where and how edits were made and read back right. A sweep's configs differ from their base at the same
        # places: once one config's edits read back equal, the same places hold any other one-line values too
        # (a flow token reads as its value in any context), so only new patterns are parsed again.
        self.verified: set = set()


_SOURCES: dict = {}


def source_of(path: str) -> Source:
    """The parsed source at ``path``, read once per version of the file (a sweep writes thousands of configs
    from one base)."""
    stat = os.stat(path)
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    found = _SOURCES.get(key)
    if found is None:
        with open(path, encoding="utf-8") as handle:
            found = Source(handle.read())
        _SOURCES.clear()  # one base per sweep: keep only the latest
        _SOURCES[key] = found
    return found


def dump_like(data: dict, source: Source) -> str:
    """``data`` written as ``source``'s text with only the differences edited in; see the module's docstring."""
    if source.root is not None:
        edits: list = []
        if _diff(source.root, source.data, data, edits, source.text):
            text = _apply(source.text, edits)
            pattern = tuple((start, end, kind) for start, end, _, kind in edits)
            if pattern in source.verified:
                return text
            try:
                if same(load(text), data):
                    if BLOCK not in (kind for *_, kind in edits):
                        source.verified.add(pattern)
                    return text
            except yaml.YAMLError:
                pass
    return dump(data)


def _plain_tree(root: Node) -> bool:
    """No node reached twice (anchors and aliases), no merge keys: then every value has one place in the text."""
    seen: set = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            return False
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, ScalarNode):
                    return False
                stack.append(value)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return True


def _diff(node: Node, old: Any, new: Any, edits: list, text: str) -> bool:
    """Add to ``edits`` the text changes that turn ``node`` (holding ``old``) into ``new``; False if it cannot."""
    # Collections are walked (each leaf compared once), not compared whole at every level.
    if isinstance(node, MappingNode) and isinstance(old, dict) and isinstance(new, dict):
        return _diff_mapping(node, old, new, edits, text)
    if isinstance(node, SequenceNode) and isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return all(_diff(item, a, b, edits, text) for item, a, b in zip(node.value, old, new))
    return same(old, new) or _replace(node, new, edits)


def _diff_mapping(node: MappingNode, old: dict, new: dict, edits: list, text: str) -> bool:
    if len(node.value) != len(old):
        return False
    kept = [key for key in old if key in new]
    added = [key for key in new if key not in old]
    if len(kept) != len(old) or list(new) != kept + added:
        return False  # a removed key, or keys in another order: not an edit in place
    for (_, value_node), key in zip(node.value, old):
        if not _diff(value_node, old[key], new[key], edits, text):
            return False
    if added:
        if node.flow_style or not node.value:
            return False
        end = _end(node)
        if end is None:
            return False
        line_end = text.find("\n", end)
        at = len(text) if line_end < 0 else line_end
        indent = " " * node.value[0][0].start_mark.column
        pairs = [_flow({key: new[key]})[1:-1] for key in added]  # "{k: v}" -> "k: v"
        kind = (INSERT, *added) if not any("\n" in pair for pair in pairs) else BLOCK
        edits.append((at, at, "".join(f"\n{indent}{pair}" for pair in pairs), kind))
    return True


def _replace(node: Node, new: Any, edits: list) -> bool:
    start = node.start_mark.index
    if isinstance(node, ScalarNode) and node.style in ("|", ">"):
        return False  # a block scalar's extent runs to the next key: not worth the risk
    if isinstance(node, ScalarNode) or node.flow_style:
        token = _flow(new)
        edits.append((start, node.end_mark.index, token, TOKEN if "\n" not in token else BLOCK))
        return True
    if not isinstance(new, (dict, list)) or not new:
        return False  # a block collection turned into a scalar: its indentation may not allow one
    end = _end(node)
    if end is None:
        return False
    block = dump(new).rstrip("\n").split("\n")
    indent = " " * node.start_mark.column
    edits.append((start, end, "\n".join([block[0], *(indent + line for line in block[1:])]), BLOCK))
    return True


def _end(node: Node) -> Optional[int]:
    """Where the text of a block node's last value ends (its end mark runs past trailing blank lines)."""
    while isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style:
        if not node.value:
            return None
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    if isinstance(node, ScalarNode) and node.style in ("|", ">"):
        return None
    return node.end_mark.index


def _flow(value: Any) -> str:
    """``value`` in flow style on one line: valid wherever a plain scalar was, in block and in flow context."""
    token = _plain_token(value)
    if token is not None:
        return token
    text = yaml.dump([value], Dumper=TrainerDumper, default_flow_style=True, sort_keys=False, allow_unicode=True,
                     width=_WIDE).rstrip("\n")
    return text[1:-1]


_SAFE_PLAIN = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9_./+=-]*\Z")  # no YAML indicator, blank or comment in it
_TOKENS = {True: "true", False: "false", None: "null"}


def _plain_token(value: Any) -> Optional[str]:
    """The plain scalar of a common value (what the dumper writes, without the cost of running it), or None."""
    kind = type(value)
    if kind is bool or value is None:
        return _TOKENS[value]
    if kind is int:
        return str(value)
    if kind is float and math.isfinite(value):
        text = repr(value).lower()
        if "." not in text and "e" in text:
            text = text.replace("e", ".0e", 1)  # as PyYAML writes 1e-05: "1.0e-05", a float for every loader
        return text if _resolved(text) == FLOAT_TAG else None
    if kind is str and _SAFE_PLAIN.match(value) and _resolved(value) == STR_TAG:
        return value
    return None


def _resolved(text: str) -> str:
    return _RESOLVER.resolve(ScalarNode, text, (True, False))


def _apply(text: str, edits: list) -> str:
    """Edits from the end backwards, so earlier offsets stay right. Of two insertions at one place the later
    one (an outer section's new keys) goes in first and so ends up after the earlier (an inner section's)."""
    order = sorted(range(len(edits)), key=lambda n: (edits[n][0], n), reverse=True)
    for start, end, replacement, _ in (edits[n] for n in order):
        text = text[:start] + replacement + text[end:]
    return text


def same(a: Any, b: Any) -> bool:
    """Equal with types and key order: 1, 1.0 and True differ, as they do in the written file."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(ka == kb and same(a[ka], b[kb]) for ka, kb in zip(a, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b
