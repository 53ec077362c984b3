"""One shape for every stage (issue 18): rule X runs ``scripts/X.py``, whose ``main`` parses the flags,
loads the config (``cli.*``) and calls one package function, ``gluerl.<module>.X()``, where the
stage's orchestration lives.

Checked statically (AST; nothing is imported): for every rule of ``rules/*.smk`` that runs a
``scripts/<name>.py``, the calls that ``main`` makes (and the script's own helpers that it calls)
to names imported from ``gluerl`` are listed, leaving out ``gluerl.cli`` (the shared flag and
config plumbing) and ``gluerl.errors`` (a flag syntax error raised by the script). There must be
exactly one, to a function defined in the package and named after the rule or its script. The
README's stage table names that function in the rule's row.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "gluerl"
PLUMBING = {"gluerl.cli", "gluerl.errors"}
RULE = re.compile(r"^(?:rule (\w+)|use rule \w+ as (\w+) with):\n((?:[ \t]+.*\n|\n)+)", re.M)

# Rules whose scripts still compose several package calls, with the reason. The test fails when one
# of them gets the shape (take it off the list) as well as when another rule loses it.
COMPOSING = {
    # the training scripts wrap their stage function in gluerl.training's run_trainer_script /
    # tracked_run and parse_task_files (gluerl.training: another change is rewriting it)
    "train_sft": "run_trainer_script, parse_task_files",
    "train_ppo": "load_config, restrict, parse_task_files, tracked_run",
    "train_sft_ppo": "load_config, restrict, parse_task_files, tracked_run",
    "train_grpo": "run_trainer_script, parse_task_files",
}


def rule_scripts(repo: Path = REPO) -> dict[str, str]:
    """rule -> the script it runs (``scripts/<name>.py`` in its block, shell or params)."""
    out = {}
    for smk in sorted((repo / "rules").glob("*.smk")):
        for plain, used, body in RULE.findall(smk.read_text()):
            names = set(re.findall(r"scripts/(\w+)\.py", body))
            assert len(names) <= 1, (plain or used, names)
            if names:
                out[plain or used] = names.pop()
    return out


def module_file(dotted: str) -> Path | None:
    """src/gluerl file of ``gluerl.x.y`` (a module or a package's __init__.py)."""
    base = PACKAGE.parent.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def defined_in_package(module: str, name: str, depth: int = 3) -> str | None:
    """``gluerl.<module>.<name>`` when ``name`` is a function defined in the package's module
    ``module`` (or re-exported there from a module of the package), else None."""
    path = module_file(module)
    if path is None or depth == 0:
        return None
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return f"{module}.{name}"
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            orig = next(a.name for a in node.names if (a.asname or a.name) == name)
            pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
            src = node.module if not node.level else ".".join(
                pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([node.module] if node.module else []))
            return defined_in_package(src, orig, depth - 1)
    return None


def gluerl_names(tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """Local name -> (gluerl module, attribute or None for a module) of every gluerl import, anywhere."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gluerl":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                names[a.asname or a.name] = (sub, None) if module_file(sub) else (node.module, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "gluerl":
                    names[a.asname or a.name] = (a.name, None)
    return names


def package_calls(script: Path) -> list[tuple[str, str]]:
    """(gluerl module, function) of every call ``main`` makes to the package, following the script's
    own functions that it calls; ``gluerl.cli`` and ``gluerl.errors`` left out."""
    tree = ast.parse(script.read_text(), str(script))
    local = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    imported = gluerl_names(tree)
    calls, seen, todo = [], set(), ["main"]
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        for node in ast.walk(local[fn]):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Name) and f.id in local:
                todo.append(f.id)
                continue
            if isinstance(f, ast.Name) and f.id in imported:
                module, attr = imported[f.id]
                target = (module, attr) if attr else None
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in imported:
                module, attr = imported[f.value.id]
                target = (module, f.attr) if attr is None else None
            else:
                target = None
            if target and target[0] not in PLUMBING:
                calls.append(target)
    return sorted(calls)


def stage_shape(rule: str, script: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(``gluerl.<module>.<function>`` the script's main calls, or None; every package call it makes)."""
    calls = package_calls(REPO / "scripts" / f"{script}.py")
    named = [(m, f) for m, f in calls if f in (rule, script)]
    found = defined_in_package(*named[0]) if len(named) == 1 else None
    return found, calls


def test_every_rule_that_runs_a_script_is_found():
    scripts = rule_scripts()
    for rule in ("download_dataset", "format_prompts", "format_transfer_prompts", "evaluate_model",
                 "assemble_table", "assemble_transfer_table", "make_submission", "train_sft_ppo"):
        assert rule in scripts, rule
    assert scripts["evaluate_model"] == "evaluate" and scripts["train_sft_ppo"] == "train_ppo"
    assert scripts["format_transfer_prompts"] == "format_prompts"


@pytest.mark.parametrize("rule, script", sorted(rule_scripts().items()))
def test_script_main_calls_one_package_function(rule, script):
    """scripts/X.py's main: flags, cli.load and one call to gluerl.<module>.X (or the rule's name)."""
    found, calls = stage_shape(rule, script)
    if rule in COMPOSING:
        assert not (found and len(calls) == 1), \
            f"rule {rule} has the stage shape now ({found}): take it off COMPOSING"
        assert found, f"rule {rule}: scripts/{script}.py calls no package function named {rule} or {script}: {calls}"
        return
    assert len(calls) == 1, f"rule {rule}: scripts/{script}.py's main makes {len(calls)} package calls: {calls}"
    assert found, (f"rule {rule}: scripts/{script}.py's main calls {calls[0]}, not a package function named "
                   f"{rule!r} or {script!r}")


def test_readme_stage_table_names_each_rules_function():
    """The README's table (rule, command, package function) names the function the script calls."""
    rows = {}
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[2].startswith("`") and "scripts/" in cells[2]:
            for rule in re.findall(r"`(\w+)`", cells[1]):
                rows[rule] = cells[3]
    for rule, script in rule_scripts().items():
        found, _ = stage_shape(rule, script)
        assert rule in rows, f"README's stage table has no row for rule {rule}"
        assert f"`{found}()`" in rows[rule], f"README row of {rule}: {rows[rule]!r} should name `{found}()`"
