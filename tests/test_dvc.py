"""DVC over the Snakemake workflow (dvc.yaml, .dvc/config): declarations, and the real pipeline on a tiny
model in a temporary git repository: repro, a second repro that runs nothing, metrics, push, pull."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["data", "model", "train", "evaluate", "tables"]
# what plans the DAG for every stage (Snakefile and rules/common.smk import these)
PLANNING = {"Snakefile", "rules/common.smk", "src/gluerl/schemas/config.schema.yaml", "src/gluerl/tasks",
            "src/gluerl/config.py", "src/gluerl/tasks.py"}


def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def out_paths(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", [])]


def resolve(path: str, variables: dict) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: str(variables[m.group(1)]), path)


def dvc_vars() -> dict:
    return {k: v for d in dvc_yaml()["vars"] for k, v in d.items()}


# ---------------------------------------------------------------- declarations (fast) ----

def dvc_deps_tool():
    """.ci/dvc_deps.py, which derives each stage's package deps from the code it runs."""
    spec = importlib.util.spec_from_file_location("dvc_deps", REPO / ".ci/dvc_deps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", STAGES)
def test_stage_code_deps_are_exactly_what_it_runs(name):
    stage = dvc_yaml()["stages"][name]
    deps = set(stage["deps"])
    assert PLANNING <= deps, f"stage {name}: add {sorted(PLANNING - deps)} to deps"
    assert any(d.startswith("rules/") and d != "rules/common.smk" for d in deps), name
    scripts, code = dvc_deps_tool().stage_code(sorted(deps))
    declared_scripts = {d for d in deps if d.startswith("scripts/")}
    assert declared_scripts == scripts, f"stage {name}: scripts deps should be {sorted(scripts)}"
    declared = {d for d in deps if d.startswith("src/gluerl/") and d.endswith(".py")}
    assert declared == code, (f"stage {name}: add {sorted(code - declared)}, remove {sorted(declared - code)}"
                              " (run `python .ci/dvc_deps.py`)")
    for d in deps:
        if not d.startswith(("data/", "results/")):
            assert (REPO / d).exists(), f"stage {name}: dependency {d} does not exist"


def test_dvc_deps_tool_rewrites_a_stale_stage_and_keeps_the_rest(tmp_path):
    """A dropped import dep and a stray one: --check names them, the rewrite restores the file exactly."""
    tool = dvc_deps_tool()
    text = (REPO / "dvc.yaml").read_text()
    stale = text.replace("      - src/gluerl/generation.py\n", "", 1)
    stale = stale.replace("      - src/gluerl/data.py\n", "      - src/gluerl/data.py\n      - src/gluerl/sft.py\n", 1)
    assert stale != text
    path = tmp_path / "dvc.yaml"
    path.write_text(stale)
    assert tool.main(["--check", "--dvc-yaml", str(path)]) == 1
    assert path.read_text() == stale
    assert tool.main(["--dvc-yaml", str(path)]) == 0
    assert path.read_text() == text
    assert tool.main(["--check", "--dvc-yaml", str(path)]) == 0


def test_what_the_rules_import_to_plan_is_in_every_stage():
    """rules/common.smk imports gluerl.tracking (and tables, transfer, ...) while planning any stage: a change
    there can change any stage's jobs, so every stage depends on it."""
    planning = {f.relative_to(REPO).as_posix() for f in dvc_deps_tool().planning_files()}
    assert {"src/gluerl/tracking/run.py", "src/gluerl/tables.py", "src/gluerl/scopes.py"} <= planning
    for name, stage in dvc_yaml()["stages"].items():
        assert planning <= set(stage["deps"]), f"stage {name}: lacks {sorted(planning - set(stage['deps']))}"


def test_stages_outputs_and_params():
    spec = dvc_yaml()
    vars_ = dvc_vars()
    assert vars_["config"] == "config/config.yaml"
    assert list(spec["stages"]) == STAGES
    produced = {}
    for name, stage in spec["stages"].items():
        assert f"--configfile ${{config}}" in stage["cmd"] and stage["cmd"].strip().startswith(
            ("${snakemake}", "mkdir")), name
        for out in stage.get("outs", []) + stage.get("metrics", []):
            path, opts = next(iter(out.items()))
            assert opts.get("persist") is True, f"{name}: {path} must be persist: true"
            assert opts.get("cache", True) is True, f"{name}: {path} must be cached (data/results are not in git)"
            produced[resolve(path, vars_)] = name
        # DAG edges: data and results a stage reads are outputs of an earlier stage
        for d in stage["deps"]:
            if d.startswith(("data/", "results/")):
                assert produced.get(d) not in (None, name), f"{name}: {d} is not an earlier stage's output"
    assert [resolve(next(iter(m)), vars_) for m in spec["stages"]["tables"]["metrics"]] == ["results/tables/glue.json"]
    assert "results/checkpoints" in produced and "results/tables/glue.csv" in produced
    plots = {next(iter(p)) if isinstance(p, dict) else p: next(iter(p.values())) if isinstance(p, dict) else None
             for p in spec["plots"]}
    # training curves: explicit x and y (no "last column" default), a line per run (template runs)
    for name in ("training_reward", "training_kl", "training_value_loss", "training_sft_loss"):
        assert plots[name]["x"] == "step" and plots[name]["template"] == "runs", name
        assert all(f.startswith("results/plots/training/") and f.endswith(".csv") for f in plots[name]["y"]), name
    assert plots["training_reward"]["y"]["results/plots/training/ppo.csv"] == "reward_mean"
    template = json.loads((REPO / ".dvc/plots/runs.json").read_text())
    assert template["encoding"]["color"]["field"] == "run"


@pytest.mark.parametrize("config", sorted(str(p.relative_to(REPO)) for p in (REPO / "config").rglob("*.yaml")
                                          if p.parent.name != "accelerate" and p.name != "offline.yaml"))
def test_every_shipped_experiment_has_the_params_dvc_tracks(config):
    """DVC refuses a params key the file lacks: every experiment names each stage's sections."""
    cfg = yaml.safe_load((REPO / config).read_text())
    for name, stage in dvc_yaml()["stages"].items():
        for entry in stage.get("params", []):
            (_, keys), = entry.items()
            missing = [k for k in keys or [] if k not in cfg]
            assert not missing, f"{config} lacks {missing}, which stage {name} tracks"


def test_git_ignores_what_dvc_versions():
    spec = dvc_yaml()
    vars_ = dvc_vars()
    paths = [resolve(p, vars_) for st in spec["stages"].values() for p in out_paths(st)]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
    assert sorted(proc.stdout.split()) == sorted(paths), f"not git-ignored: {sorted(set(paths) - set(proc.stdout.split()))}"
    assert {"/cache", "/tmp", "/config.local"} <= set((REPO / ".dvc/.gitignore").read_text().split())
    config = (REPO / ".dvc/config").read_text()
    assert re.search(r"^\s*remote = local$", config, re.M) and "url = ../../gluerl-dvc-storage" in config


# ---------------------------------------------------------------- the pipeline (slow) ----

COPY = ["Snakefile", "rules", "scripts", "profiles", "config", "envs", "dvc.yaml", ".dvcignore", ".gitignore",
        ".dvc/config", ".dvc/.gitignore", "data/README.md", "results/README.md"]


def run(cmd: list[str], cwd: Path, env: dict, timeout=900, merge=False) -> subprocess.CompletedProcess:
    """Run a command; merge=True interleaves stderr into stdout (stderr is then empty)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout,
                          stderr=subprocess.STDOUT if merge else subprocess.PIPE)
    print(f"{' '.join(cmd[2:] if cmd[0] == sys.executable else cmd)}: {time.perf_counter() - t0:.1f}s")
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{(proc.stderr or '')[-4000:]}")
    return proc


def both(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + (proc.stderr or "")


def dvc(*args, cwd, env, **kw):
    return run([sys.executable, "-m", "dvc", *args], cwd, env, **kw)


def file_hashes(work: Path) -> dict[str, str]:
    return {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in ("data", "results") for p in sorted((work / top).rglob("*")) if p.is_file()}


def dvc_env(root: Path) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1", DVC_STUDIO_OFFLINE="1",
                DVC_SITE_CACHE_DIR=str(root / "dvc-site"), DVC_GLOBAL_CONFIG_DIR=str(root / "dvc-global"),
                DVC_SYSTEM_CONFIG_DIR=str(root / "dvc-system"),
                PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
                GIT_COMMITTER_EMAIL="t@example.org")


def make_dvc_project(root: Path, cfg: dict, extra: dict[str, str] | None = None) -> tuple[Path, dict]:
    """The workflow and dvc.yaml in a git repository ``root/repo`` whose config/config.yaml is ``cfg``;
    ``extra``: more files (path -> text), committed with it. The tiny model and data are ``root``'s."""
    from gluerl.testing import fixture_texts, make_glue_fixture, make_tiny_model

    make_tiny_model(root / "tiny-src", fixture_texts())
    make_glue_fixture(root / "glue", ["rte"], n_train=30, n_eval=8)
    work = root / "repo"
    for name in COPY:
        src, dst = REPO / name, work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    shutil.copytree(REPO / "src/gluerl", work / "src/gluerl", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    for path, text in (extra or {}).items():
        (work / path).write_text(text)
    env = dvc_env(root)
    run(["git", "init", "-q"], work, env)
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-qm", "workflow"], work, env)
    return work, env


def tiny_dvc_config(root: Path, **over) -> dict:
    cfg = {
        "tasks": ["rte"],
        "methods": ["zeroshot", "fewshot"],
        "seeds": [1],
        "models": {"tiny": {"path": str(root / "tiny-src")}},
        "data": {"source": "local", "local_dir": str(root / "glue"), "max_samples": {"train": 24, "eval": 6}},
        "prompting": {"num_shots": 2},
        "evaluation": {"batch_size": 4, "max_new_tokens": 6},
        "tables": {"reference_method": "sft"},  # not among the methods: no difference columns
        "mlflow": {"enabled": False},
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvc")
    work, env = make_dvc_project(root, tiny_dvc_config(root))
    return root, work, env


@pytest.mark.slow
def test_repro_push_pull_round_trip(dvc_project):
    root, work, env = dvc_project

    # the default remote is the folder next to the repository (here: inside the temporary directory)
    remotes = dvc("remote", "list", cwd=work, env=env).stdout.split()
    assert remotes[:3] == ["local", str(root / "gluerl-dvc-storage"), "(default)"], remotes

    dry = dvc("repro", "--dry", "--force", cwd=work, env=env).stdout
    assert [f"Running stage '{s}'" in dry for s in STAGES] == [True] * len(STAGES), dry

    t0 = time.perf_counter()
    first = dvc("repro", cwd=work, env=env, merge=True).stdout
    print(f"first dvc repro: {time.perf_counter() - t0:.1f}s")
    for s in STAGES:
        assert f"Running stage '{s}'" in first, first[-3000:]
    train_log = first[first.index("Running stage 'train'"):first.index("Running stage 'evaluate'")]
    assert "--omit-from evaluate_model" in train_log and "Nothing to be done" in train_log  # no jobs, exit 0
    rows = (work / "results/tables/glue.csv").read_text().splitlines()
    assert rows[0] == "method,model,seeds,rte,rte_lo,rte_hi,average" and len(rows) == 3
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    # the params DVC recorded are the config's sections; train tracks the whole file
    assert set(lock["stages"]["data"]["params"]["config/config.yaml"]) == {"tasks", "methods", "seeds", "data",
                                                                          "prompting"}
    assert "mlflow" in lock["stages"]["train"]["params"]["config/config.yaml"]
    # git and DVC agree: everything produced is ignored, DVC wrote no .gitignore of its own
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], work, env).stdout.splitlines()
    assert status == ["?? dvc.lock"], status

    # a second repro runs nothing, DVC and Snakemake both see an up-to-date workspace
    second = dvc("repro", cwd=work, env=env, merge=True).stdout
    assert "Running stage" not in second, second
    assert all(f"Stage '{s}' didn't change, skipping" in second for s in STAGES), second
    assert "Data and pipelines are up to date." in dvc("status", cwd=work, env=env).stdout
    dry_smk = both(run([sys.executable, "-m", "snakemake", "-n"], work, env))
    assert "Nothing to be done" in dry_smk

    # metrics: the GLUE scores of the table
    shown = dvc("metrics", "show", cwd=work, env=env).stdout
    assert "results/tables/glue.json" in shown and "tiny.zeroshot.rte" in shown and "tiny.fewshot.average" in shown
    metrics = json.loads(dvc("metrics", "show", "--json", cwd=work, env=env).stdout)
    scores = metrics[""]["data"]["results/tables/glue.json"]["data"]
    assert scores == json.loads((work / "results/tables/glue.json").read_text())
    assert set(scores["tiny"]) == {"zeroshot", "fewshot"}
    # plots: the table's chart renders, the (absent) training curves are reported, not fatal
    plots = json.loads(dvc("plots", "show", "--json", cwd=work, env=env).stdout)
    assert plots["data"]["results/tables/glue.csv"]
    assert not (work / "results/plots/training").exists()

    # push, lose the cache and every produced file, pull: byte for byte the same files
    before = file_hashes(work)
    assert any(p.startswith("results/models/tiny/") for p in before) and "results/tables/glue.json" in before
    assert "data/raw/rte/validation.jsonl" in before and "data/prompts/2shot-seed1/rte/validation.jsonl" in before
    dvc("push", cwd=work, env=env)
    assert any((root / "gluerl-dvc-storage").rglob("*"))
    shutil.rmtree(work / ".dvc/cache")
    for top in ("data", "results"):
        for p in (work / top).iterdir():
            if p.name != "README.md":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    assert set(file_hashes(work)) == {"data/README.md", "results/README.md"}
    dvc("pull", cwd=work, env=env)
    after = file_hashes(work)
    assert after == before, sorted(set(before) ^ set(after))
    assert "Data and pipelines are up to date." in dvc("status", cwd=work, env=env).stdout

    # pulled files carry new times: the README's one Snakemake step after a pull makes Snakemake
    # agree (and record the current params), and leaves DVC's view unchanged
    run([sys.executable, "-m", "snakemake", "--touch", "--forceall", "--cores", "1"], work, env)
    assert "Nothing to be done" in both(run([sys.executable, "-m", "snakemake", "-n"], work, env))
    assert "Data and pipelines are up to date." in dvc("status", cwd=work, env=env).stdout
    assert file_hashes(work) == before


@pytest.mark.slow
def test_repro_after_snakemake_with_an_overlay_redoes_nothing(tmp_path):
    """`snakemake --configfile config/config.yaml config/overlay.yaml`, then `dvc repro` with `overlays` set to the
    same file: every stage's Snakemake has nothing to do, and DVC only hashes and caches what Snakemake built."""
    # the experiment reads a copy of the data; the overlay points it at the original (as config/offline.yaml
    # sets data.local_dir): the same rows, but a run without the overlay redoes every job from the download on
    cfg = tiny_dvc_config(tmp_path, methods=["zeroshot", "sft"], training={"mode": "single"},
                          sft={"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1})
    cfg["data"]["local_dir"] = str(tmp_path / "glue-copy")
    overlay = yaml.safe_dump({"data": {"local_dir": str(tmp_path / "glue")}})
    work, env = make_dvc_project(tmp_path, cfg, {"config/overlay.yaml": overlay})
    shutil.copytree(tmp_path / "glue", tmp_path / "glue-copy")
    spec = (work / "dvc.yaml").read_text()
    assert spec.count('- overlays: ""') == 1
    (work / "dvc.yaml").write_text(spec.replace('- overlays: ""', "- overlays: config/overlay.yaml"))

    smk = run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/config.yaml",
               "config/overlay.yaml"], work, env, merge=True).stdout
    assert "train_sft" in smk and "assemble_table" in smk, smk[-3000:]
    built = file_hashes(work)
    assert "results/tables/glue.csv" in built and "results/checkpoints/sft/tiny/rte/seed1/adapter_model.safetensors" in built

    out = dvc("repro", cwd=work, env=env, merge=True).stdout
    segments = out.split("Running stage '")[1:]
    assert [seg.split("'")[0] for seg in segments] == STAGES, out[-3000:]
    for seg in segments:  # Snakemake inside each stage planned no job
        stage = seg.split("'")[0]
        assert "Nothing to be done" in seg and "Job stats:" not in seg, f"stage {stage} ran jobs:\n{seg[:3000]}"
        assert re.search(r"^> .*snakemake .* --configfile config/config.yaml config/overlay.yaml$", seg, re.M), seg[:2000]
    # the same files, the same bytes (DVC copies a single-file output back from its cache: a new mtime,
    # which Snakemake does not mind, as the dry run shows)
    assert file_hashes(work) == built
    dry = both(run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/config.yaml",
                    "config/overlay.yaml"], work, env))
    assert "Nothing to be done" in dry, dry[-3000:]
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    again = dvc("repro", cwd=work, env=env, merge=True).stdout
    assert "Running stage" not in again and "Data and pipelines are up to date." in dvc(
        "status", cwd=work, env=env).stdout, again
