"""Check the built sdist and wheel hold what users need: ``python tests/check_dist.py REPO DIST_DIR``.

The wheel must hold every module and data file that pyproject.toml maps into the ``hpc_sweep`` namespace (the job
templates ``*.j2`` and site profiles ``*.toml`` included), ``python -m hpc_sweep``, the ``hpc-sweep`` command and the
SPDX license, and nothing outside ``hpc_sweep`` (no top-level ``schedulers`` package); the sdist must hold the
sources those come from. Run by tests/run-all.sh after the build; exit status 1 with one line per problem.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Dict, List

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib


def expected_files(repo: Path) -> Dict[str, str]:
    """Installed path -> source path (relative to the repository) of every file the packages should carry."""
    setup = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: Dict[str, str] = setup.get("package-dir", {})
    data: Dict[str, List[str]] = setup.get("package-data", {})
    files: Dict[str, str] = {}
    for package in setup["packages"]:
        source = Path(package_dir.get(package, package.replace(".", "/")))
        patterns = ["*.py", *data.get(package, [])]
        for path in sorted((repo / source).iterdir()):
            if path.is_file() and any(fnmatch(path.name, p) for p in patterns):
                files[f"{package.replace('.', '/')}/{path.name}"] = f"{source.as_posix()}/{path.name}"
    return files


def wheel_problems(wheel: Path, expected: Dict[str, str]) -> List[str]:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        metadata = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    problems = [f"wheel lacks {name} (from {src})" for name, src in expected.items() if name not in names]
    tops = {n.split("/")[0] for n in names} - {info}
    problems += [f"wheel has a top-level {top!r} besides hpc_sweep" for top in sorted(tops - {"hpc_sweep"})]
    for kind in ("job_templates/*.j2", "site_configs/*.toml"):
        if not any(fnmatch(n, f"hpc_sweep/{kind}") for n in names):
            problems.append(f"wheel holds no hpc_sweep/{kind}")
    if "hpc_sweep/__main__.py" not in names:
        problems.append("wheel lacks hpc_sweep/__main__.py (python -m hpc_sweep)")
    if "hpc-sweep = hpc_sweep.cli:main" not in entry_points:
        problems.append("wheel declares no hpc-sweep command")
    if "License-Expression: MIT" not in metadata:
        problems.append("wheel metadata has no License-Expression: MIT")
    return problems


def sdist_problems(sdist: Path, expected: Dict[str, str]) -> List[str]:
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    needed = ["pyproject.toml", "README.md", *expected.values()]
    return [f"sdist lacks {name}" for name in needed if name not in names]


def main(argv: List[str]) -> int:
    repo, dist = Path(argv[1]), Path(argv[2])
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    expected = expected_files(repo)
    problems = wheel_problems(wheel, expected) + sdist_problems(sdist, expected)
    for line in problems:
        print(f"check_dist: {line}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {wheel.name} and {sdist.name} hold all {len(expected)} files of the package")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
