"""The conda environments (envs/*.yaml) that ``snakemake --sdm conda`` builds for the jobs: they
parse, pin packages that exist (at the versions this suite runs with), keep the light env light,
hold everything their stages import, and the jobs find the checkout's gluerl without installing it.

Conda's channels cannot be reached from the test machine, so the envs are not built here; instead
each stage runs with only its env's packages importable (``tests/env_guard.py``)."""

from __future__ import annotations

import ast
import importlib.util
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from env_guard import canonical, closure, pip_packages

REPO = Path(__file__).resolve().parents[1]
# .ci/dvc_deps.py follows gluerl's imports through the package (modules, subpackages, relative imports)
_spec = importlib.util.spec_from_file_location("dvc_deps", REPO / ".ci/dvc_deps.py")
DVC_DEPS = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(DVC_DEPS)
ENVS = sorted((REPO / "envs").glob("*.yaml"))
HEAVY = {"torch", "transformers", "peft", "trl", "accelerate"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.]*)$")


def rules() -> list[tuple[str, str, str]]:
    """(rule, env file, rule text) of every rule with a conda directive."""
    out = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            m = re.match(r"rule (\w+):", block)
            env = re.search(r'conda:\s*\n\s*"\.\./(envs/[\w.-]+\.yaml)"', block)
            if m and env:
                out.append((m.group(1), env.group(1), block))
    return out


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_file_parses_and_pins_installed_packages(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    deps = env["dependencies"]
    assert "python =3.11" in deps and "pip" in deps
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    assert pip and not [p for p in pip if not PIN.match(p)], "pip lines must be name==version (no -e, paths or URLs)"
    for line in pip:
        name, version = PIN.match(line).groups()
        from packaging.version import Version

        installed = md.version(name)  # PackageNotFoundError: a package that does not exist (or a typo)
        assert Version(installed).public == version, f"{env_file.name}: {name}=={version}, the suite runs {installed}"


def test_every_rule_has_an_env_and_the_light_env_is_light():
    found = rules()
    assert {env for _, env, _ in found} == {"envs/core.yaml", "envs/torch.yaml"}
    assert len(found) == sum(smk.read_text().count("\nrule ") + smk.read_text().startswith("rule ")
                             for smk in (REPO / "rules").glob("*.smk"))
    core = closure(pip_packages(REPO / "envs/core.yaml"))
    assert not core & HEAVY, f"envs/core.yaml pulls in {sorted(core & HEAVY)}"


def third_party(files: list[Path]) -> set[str]:
    """Distributions imported (anywhere, function bodies too) by the files and the gluerl modules they
    import, transitively."""
    owners = md.packages_distributions()
    found, todo, seen = set(), list(files), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += sorted(DVC_DEPS.imported_files(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "gluerl" and top not in sys.stdlib_module_names:
                    found |= {canonical(d) for d in owners.get(top, [top])}
    return found


def test_model_env_has_every_package_its_stages_import():
    """Static and generous: every import anywhere in a torch-env stage's code, lazy ones included."""
    allowed = closure(pip_packages(REPO / "envs/torch.yaml"))
    optional = {"pynvml", "nvidia-ml-py"}  # GPU system metrics, when installed (gluerl.tracking)
    for rule, env, text in rules():
        if env != "envs/torch.yaml":
            continue
        files = [REPO / s for s in re.findall(r"scripts/\w+\.py", text)]
        files += [DVC_DEPS.module_file(m) for m in re.findall(r"python -m gluerl\.(\w+)", text)]
        missing = third_party(files) - allowed - optional
        assert not missing, f"rule {rule}: envs/torch.yaml lacks {sorted(missing)}"


def guarded(env_file: str, script: str, args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("GLUERL_PARENT_RUN_ID", None)
    return subprocess.run([sys.executable, str(REPO / "tests/env_guard.py"), str(REPO / env_file),
                           str(REPO / script), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_stages_run_with_only_their_envs_packages(tiny_model, tmp_path):
    """download -> prompts -> evaluation -> table -> training plot, each importing only its env's
    packages, MLflow on (SQLite); evaluation under the light env fails on transformers or torch (the
    guard bites)."""
    mlflow = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "envs"}
    cfg = json.dumps({"mlflow": mlflow, "tasks": ["sst2"], "data": {"source": "embedded", "max_samples": {"eval": 4}},
                      "evaluation": {"batch_size": 2, "device": "cpu", "bootstrap_resamples": 20}})

    def ok(proc):
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    raw, prompts = tmp_path / "raw/sst2/validation.jsonl", tmp_path / "prompts/0shot/sst2/validation.jsonl"
    ok(guarded("envs/core.yaml", "scripts/download_dataset.py",
               ["--config-json", cfg, "--task", "sst2", "--split", "validation", "--output", raw], tmp_path))
    ok(guarded("envs/core.yaml", "scripts/format_prompts.py",
               ["--config-json", cfg, "--task", "sst2", "--template", "0shot", "--input", raw, "--output", prompts],
               tmp_path))
    out = tmp_path / "eval/zeroshot/tiny/seed1"
    evaluate = ["--config-json", cfg, "--task", "sst2", "--method", "zeroshot", "--model", "tiny", "--model-dir",
                tiny_model, "--prompts", f"validation={prompts}", "--output", out / "sst2.json", "--predictions",
                out / "sst2.predictions.jsonl"]
    light = guarded("envs/core.yaml", "scripts/evaluate.py", evaluate, tmp_path)
    assert light.returncode != 0 and re.search(r"env_guard: blocked (torch|transformers) ", light.stderr), \
        light.stderr[-2000:]
    ok(guarded("envs/torch.yaml", "scripts/evaluate.py", evaluate, tmp_path))
    assert json.loads((out / "sst2.json").read_text())["columns"]["sst2"]["n"] == 4
    tables = tmp_path / "tables"
    ok(guarded("envs/core.yaml", "scripts/assemble_table.py",
               ["--config-json", cfg, "--benchmark", "glue", "--csv", tables / "glue.csv", "--markdown",
                tables / "glue.md", "--png", tables / "glue.png", "--metrics", tables / "glue.json",
                out / "sst2.json", out / "sst2.predictions.jsonl"], tmp_path))
    assert (tables / "glue.csv").read_text().startswith("method,model,seeds,sst2")
    run = tmp_path / "results/checkpoints/sft/tiny/sst2/seed1"
    run.mkdir(parents=True)
    (run / "train_summary.json").write_text("{}\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in (1, 2)))
    ok(guarded("envs/core.yaml", "scripts/plot_training.py",
               ["--out-dir", tmp_path / "plots", "--png", tmp_path / "curves.png", run / "train_summary.json"],
               tmp_path))
    assert (tmp_path / "plots" / "sft-tiny-sst2-seed1.csv").is_file()


@pytest.mark.parametrize("conda", [True, False])
def test_jobs_import_the_checkout_under_conda(tmp_path, conda):
    """Parsing the workflow with --sdm conda puts {workflow.basedir}/src first on PYTHONPATH (jobs
    inherit it, and every job process parses the workflow again); without conda nothing changes."""
    for name in ("Snakefile", "rules", "config", "envs", "report"):
        src = REPO / name
        dest = tmp_path / name
        (dest.symlink_to(src, target_is_directory=src.is_dir()))
    (tmp_path / "src").symlink_to(REPO / "src", target_is_directory=True)
    (tmp_path / "model").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):  # parsing checks names, loads nothing
        (tmp_path / "model" / name).write_text("{}")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"tasks": ["sst2"], "methods": ["zeroshot"], "models": {"m": {"path": str(tmp_path / "model")}},
                                   "data": {"source": "embedded"}, "mlflow": {"enabled": False}}))
    code = f"""
import os
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (ConfigSettings, DeploymentMethod, DeploymentSettings, OutputSettings,
                                      ResourceSettings, StorageSettings, WorkflowSettings)
with SnakemakeApi(OutputSettings(quiet=True)) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(),
                      storage_settings=StorageSettings(), workflow_settings=WorkflowSettings(),
                      deployment_settings=DeploymentSettings(deployment_method={'{DeploymentMethod.CONDA}' if conda else 'set()'}),
                      snakefile=Path("Snakefile"))
    wf._workflow  # parses the Snakefile and rules/common.smk
    print("PYTHONPATH=" + os.environ.get("PYTHONPATH", ""))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GLUERL_CONFIG": str(cfg)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = proc.stdout.strip().splitlines()[-1].removeprefix("PYTHONPATH=").split(os.pathsep)
    assert path == ([str(tmp_path / "src"), str(REPO / "src")] if conda else [str(REPO / "src")])
