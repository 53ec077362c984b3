"""Keep the package files each `dvc.yaml` stage depends on equal to the code the stage runs.

A stage's code is what its rule files launch: the `scripts/*.py` they name, the `python -m gluerl.X`
modules they (or the `rules/common.smk` helpers they call) start, and every `gluerl` file those
import, followed through the package (subpackages and relative imports too). The package files
that plan the DAG (what the Snakefile and the rule files import, and their imports) are in every
stage's deps: a change there can change any stage's jobs.

    python .ci/dvc_deps.py            # rewrite the src/gluerl/*.py deps of every stage in dvc.yaml
    python .ci/dvc_deps.py --check    # exit 1, naming the stage and files, if dvc.yaml is stale

Only the `src/gluerl/**.py` lines of each `deps:` list are rewritten; the other deps (rules,
scripts, data, results, the schema, the task folder), comments and order are left as they are.
`tests/test_dvc.py` runs the check, so a new import fails the suite until this is run.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "gluerl"
# the workflow's files: the Snakefile includes every rule file, so planning any stage runs the gluerl
# imports of all of them (rules/common.smk imports config, tasks, scopes, tables, tracking, ...)
WORKFLOW_FILES = ("Snakefile", "rules/*.smk")
SMK_IMPORT = re.compile(r"^\s*(?:from\s+(gluerl(?:\.[\w.]+)?)\s+import\s+([\w, ]+)|import\s+(gluerl\.[\w.]+))", re.M)


def module_file(dotted: str) -> Path | None:
    """src/gluerl/... file of a dotted module below gluerl ('ppo.losses'), or None."""
    base = PACKAGE.joinpath(*dotted.split(".")) if dotted else PACKAGE
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def with_parents(dotted: str) -> list[Path]:
    """The module's file and the __init__.py of each package above it (importing it runs them)."""
    parts = dotted.split(".")
    files = [module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    return [f for f in files if f is not None]


def package_of(path: Path) -> list[str]:
    """Dotted package (below gluerl) that a file's relative imports start from."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    return list(rel.parts[:-1])


def import_targets(dotted: str, names=()) -> set[Path]:
    """Files that `from gluerl.<dotted> import <names>` (or `import gluerl.<dotted>`) runs: the module
    with its packages, and each name that is a submodule (`from gluerl.ppo import losses`)."""
    found: set[Path] = set()
    for name in names:
        sub = f"{dotted}.{name}" if dotted else name
        if module_file(sub) is not None:
            found.update(with_parents(sub))
    if dotted:
        found.update(with_parents(dotted))
    return found


def imported_files(path: Path) -> set[Path]:
    """Package files a file imports (at the top or inside functions)."""
    inside = path.is_relative_to(PACKAGE)
    found: set[Path] = set()

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level and inside:
                base = package_of(path)[: len(package_of(path)) - (node.level - 1)]
                dotted = ".".join(base + ([node.module] if node.module else []))
                found |= import_targets(dotted, names)
            elif node.module == "gluerl":
                found |= import_targets("", names)
            elif node.module and node.module.startswith("gluerl."):
                found |= import_targets(node.module.split(".", 1)[1], names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("gluerl."):
                    found |= import_targets(a.name.split(".", 1)[1])
    found.discard(PACKAGE / "__init__.py")  # the package's own __init__ is in every stage alike
    return found


def closure(files: list[Path]) -> set[Path]:
    todo = set().union(*(imported_files(f) for f in files)) if files else set()
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo |= imported_files(f) - seen
    return seen


@functools.cache
def helper_modules() -> dict[str, str]:
    """rules/common.smk helpers that launch `python -m gluerl.X` (e.g. gpu_slots -> gpus)."""
    out = {}
    for block in re.split(r"\n(?=def )", (REPO / "rules/common.smk").read_text()):
        m = re.match(r"def (\w+)", block)
        for mod in re.findall(r"python -m gluerl\.([\w.]+)", block):
            if m:
                out[m.group(1)] = mod
    return out


@functools.cache  # the same for every stage: read the workflow files once a run
def planning_files() -> set[Path]:
    """Package files every stage runs while Snakemake plans the DAG: the imports of the workflow files."""
    files: set[Path] = set()
    for pattern in WORKFLOW_FILES:
        for smk in sorted(REPO.glob(pattern)):
            for frm, names, imp in SMK_IMPORT.findall(smk.read_text()):
                files |= import_targets((frm or imp).partition(".")[2], [n.strip() for n in names.split(",") if frm])
    files.discard(PACKAGE / "__init__.py")
    return files | closure(sorted(files))


def stage_code(deps: list[str]) -> tuple[set[str], set[str]]:
    """(scripts the stage's rule files name, package .py files they run), as repository paths."""
    rules = [REPO / d for d in deps if d.startswith("rules/") and d != "rules/common.smk"]
    text = "\n".join(f.read_text() for f in rules)
    scripts = set(re.findall(r"scripts/\w+\.py", text))
    launched = set(re.findall(r"python -m gluerl\.([\w.]+)", text))
    launched |= {mod for helper, mod in helper_modules().items() if re.search(rf"\b{helper}\b", text)}
    files = [REPO / s for s in scripts]
    started = {f for mod in launched for f in with_parents(mod)}
    code = closure(files + sorted(started)) | started | planning_files()
    code.discard(PACKAGE / "__init__.py")
    paths = {f.relative_to(REPO).as_posix() for f in code}
    return scripts, paths


def is_code(dep: str) -> bool:
    return dep.startswith("src/gluerl/") and dep.endswith(".py")


def sync(text: str) -> tuple[str, list[str]]:
    """dvc.yaml text with each stage's package deps rewritten, and one line per stage changed."""
    stages = yaml.safe_load(text)["stages"]
    lines = text.splitlines(keepends=True)
    changes = []
    for name, stage in stages.items():
        deps = stage.get("deps", [])
        if not any(d.startswith("rules/") for d in deps):
            continue
        scripts, wanted = stage_code(deps)
        declared = {d for d in deps if is_code(d)}
        if {d for d in deps if d.startswith("scripts/")} != scripts:
            changes.append(f"stage {name}: its scripts deps should be {sorted(scripts)} (edit dvc.yaml)")
        if declared == wanted:
            continue
        changes.append(f"stage {name}: add {sorted(wanted - declared)}, remove {sorted(declared - wanted)}")
        start = next(i for i, line in enumerate(lines) if re.match(rf"  {re.escape(name)}:\s*$", line))
        i = next(j for j in range(start, len(lines)) if re.match(r"    deps:\s*$", lines[j])) + 1
        end = i
        while end < len(lines) and re.match(r"      - ", lines[end]):
            end += 1
        items = [lines[j][len("      - "):].strip() for j in range(i, end)]
        kept = [d for d in items if not is_code(d)]
        others = [d for d in kept if not d.startswith("src/gluerl/")]
        package = sorted([d for d in kept if d.startswith("src/gluerl/")] + sorted(wanted))
        lines[i:end] = [f"      - {d}\n" for d in others + package]
    return "".join(lines), changes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="report a stale dvc.yaml (exit 1) instead of rewriting it")
    p.add_argument("--dvc-yaml", type=Path, default=REPO / "dvc.yaml")
    args = p.parse_args(argv)
    text = args.dvc_yaml.read_text()
    new, changes = sync(text)
    for line in changes:
        print(f"{args.dvc_yaml}: {line}", file=sys.stderr if args.check else sys.stdout)
    if args.check:
        if changes:
            print(f"{args.dvc_yaml} is stale: run `python .ci/dvc_deps.py`", file=sys.stderr)
        return 1 if changes else 0
    if any("edit dvc.yaml" in c for c in changes):
        return 1
    if new != text:
        args.dvc_yaml.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
