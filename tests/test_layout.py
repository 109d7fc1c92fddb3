"""The house's rules, checked on the source: each module imports only from its own room and rooms below it
(README "Development", the module map), every package opens with a docstring saying what it owns, and
pyproject.toml maps every package into the wheel.

Imports are read with ``ast`` from every module, the lazy ones inside functions included; a test names each
offending import with its file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

import pytest

from hpc_sweep.common.formats import tomllib

REPO = Path(__file__).resolve().parents[1]

# Low to high: a module may import from its own room and from rooms earlier in this list.
ROOMS = ("common", "schedulers", "state", "programs", "sweep", "session", "local", "submit", "results", "track",
         "top")
# Data packages and the version every room may read.
ANY_ROOM = {"hpc_sweep", "hpc_sweep.job_templates", "hpc_sweep.site_configs"}


def source_files() -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) of every module pyproject maps into the hpc_sweep namespace."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in setup["packages"]:
        folder = REPO / setup["package-dir"].get(package, package.replace(".", "/"))
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            yield name, path


def room_of(module: str) -> Optional[str]:
    """The room of a dotted module name of ours; None for the names every room may import."""
    if module in ANY_ROOM or module.startswith(("hpc_sweep.job_templates.", "hpc_sweep.site_configs.")):
        return None
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ROOMS:
        return parts[1]
    return "top"


def imported(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every hpc_sweep module ``path`` imports; ``from hpc_sweep.x import y`` counts as
    hpc_sweep.x.y when that is a module, else hpc_sweep.x."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "hpc_sweep":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up node.level - 1 folders
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "hpc_sweep":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_module(candidate) else base


_MODULES = {name for name, _ in source_files()}


def _is_module(name: str) -> bool:
    return name in _MODULES


def test_no_room_imports_a_room_above_it():
    offences = []
    for module, path in source_files():
        own = room_of(module)
        if own is None:
            continue
        for line, name in imported(path, module):
            target = room_of(name)
            if target is not None and ROOMS.index(target) > ROOMS.index(own):
                offences.append(f"{path.relative_to(REPO)}:{line}: {module} ({own}) imports {name} ({target})")
    assert not offences, "imports against the house's order:\n" + "\n".join(offences)


def test_every_imported_module_exists():
    """A rename that missed a lazy import would only fail when that line runs."""
    missing = [f"{path.relative_to(REPO)}:{line}: {name}" for module, path in source_files()
               for line, name in imported(path, module) if name not in _MODULES and name not in ANY_ROOM]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("package", sorted(name for name, path in source_files() if path.stem == "__init__"))
def test_every_package_says_what_it_owns(package):
    path = next(p for name, p in source_files() if name == package and p.stem == "__init__")
    if package in ANY_ROOM - {"hpc_sweep"}:
        return  # data packages (templates, profiles)
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.split()) >= 8, f"{path.relative_to(REPO)}: no docstring saying what the package owns"


def test_pyproject_maps_every_package():
    """Every folder of modules is in pyproject's packages (tests/check_dist.py derives the wheel's files from it)."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {REPO / setup["package-dir"].get(p, p.replace(".", "/")) for p in setup["packages"]}
    folders = {init.parent for root in ("hpc_sweep", "schedulers") for init in (REPO / root).rglob("__init__.py")}
    assert sorted(map(str, folders - mapped)) == []
