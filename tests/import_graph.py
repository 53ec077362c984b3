"""Which gluerl modules a file imports, as files: modules (``gluerl/x.py``) and packages
(``gluerl/ppo/__init__.py`` and its modules), absolute and relative imports, lazy ones too.

The top package's ``gluerl/__init__.py`` is left out (every stage imports it; it is no stage's code).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_file(name: str) -> Path | None:
    """The file of module ``name`` (``gluerl.io``, ``gluerl.ppo``, ``gluerl.ppo.trainer``); None if not a module."""
    base = SRC.joinpath(*name.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def module_name(path: Path) -> str | None:
    """``gluerl.ppo.trainer`` of ``src/gluerl/ppo/trainer.py`` (``gluerl.ppo`` of its ``__init__.py``);
    None for a file outside ``src`` (a script)."""
    try:
        parts = list(path.resolve().relative_to(SRC).with_suffix("").parts)
    except ValueError:
        return None
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """gluerl modules ``path`` imports (top level or inside functions), with the packages above them:
    importing ``gluerl.ppo.trainer`` runs ``gluerl/ppo/__init__.py`` first."""
    name = module_name(path) or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y, from ..x import y, from . import x
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found |= {mod} | {f"{mod}.{a.name}" for a in node.names}  # a name may be a submodule
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    out = set()
    for mod in found:
        parts = mod.split(".")
        if parts[0] == "gluerl":
            out |= {m for i in range(2, len(parts) + 1) if module_file(m := ".".join(parts[:i]))}
    return out


def import_closure(files: list[Path]) -> set[str]:
    """Every gluerl module ``files`` import, directly or through each other."""
    todo = set().union(*(imported_modules(f) for f in files)) if files else set()
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo |= imported_modules(module_file(mod)) - seen
    return seen
