"""Run a script as if only a conda env file's packages were installed (tests/test_envs.py).

    python tests/env_guard.py envs/core.yaml scripts/format_prompts.py --task ... --output ...

The env's pip packages and everything they require (installed metadata, markers evaluated here)
are allowed; any other installed distribution's modules are not found, as in the env
(``import`` raises ModuleNotFoundError, ``importlib.util.find_spec`` answers None), and each one
asked for is listed on stderr (``env_guard: blocked <module> (<distribution>)``).
``gluerl`` itself is allowed: the workflow puts the checkout's ``src/`` on the jobs' PYTHONPATH.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata as md
import re
import runpy
import sys
from pathlib import Path

import yaml

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_packages(env_file: str | Path) -> list[str]:
    """The distribution names an env file's pip section installs (``name==version`` lines)."""
    deps = yaml.safe_load(Path(env_file).read_text())["dependencies"]
    pip = next((d["pip"] for d in deps if isinstance(d, dict) and "pip" in d), [])
    return [NAME.match(p).group(0) for p in pip]


def requirements(dist: str) -> list[str]:
    """Names a distribution requires here (no extras; environment markers evaluated)."""
    from packaging.requirements import Requirement

    out = []
    for line in md.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req.name)
    return out


def closure(names: list[str]) -> set[str]:
    """The distributions and all they require, transitively (canonical names; installed ones only)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += requirements(name)
        except md.PackageNotFoundError:
            continue
    return seen


class Guard(importlib.abc.MetaPathFinder):
    """Python's path finder, blind to the top-level modules of distributions outside ``allowed``
    (so ``importlib.util.find_spec`` answers None and ``import`` raises ModuleNotFoundError, as for a
    package that is not installed)."""

    def __init__(self, inner, allowed: set[str]):
        self.inner = inner
        self.allowed = allowed
        self.owners = {mod: {canonical(d) for d in dists} for mod, dists in md.packages_distributions().items()}
        self.blocked: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        owners = self.owners.get(fullname)
        if path is None and owners and fullname != "gluerl" and fullname not in sys.stdlib_module_names \
                and not owners & self.allowed:
            if fullname not in self.blocked:
                self.blocked.append(fullname)
                print(f"env_guard: blocked {fullname} ({', '.join(sorted(owners))})", file=sys.stderr)
            return None
        return self.inner.find_spec(fullname, path, target)

    def invalidate_caches(self):
        self.inner.invalidate_caches()

    def find_distributions(self, *args, **kwargs):  # importlib.metadata asks the path finder too
        return self.inner.find_distributions(*args, **kwargs)


def main() -> None:
    env_file, script, *args = sys.argv[1:]
    allowed = closure(pip_packages(env_file))
    sys.meta_path[:] = [Guard(f, allowed) if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
