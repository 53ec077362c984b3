"""Reruns do exactly the work a change needs: for each config key, changing it plans the rules that read it.

A tiny project's every output is made up to date with ``snakemake --touch`` (which records each
job's params as a real run would); then each case overlays one changed key and ``snakemake
--summary`` says, file by file, whether its job would run ("update pending") and whether its own
params changed. "Direct" are the jobs whose params changed (or whose output is new); the others
run because an input of theirs would be rebuilt. (A dry run's "reason" names only the first cause,
so it cannot tell a job that reads the key from one downstream of it.) The expected table is
written by hand from what each stage reads: a rule that does not read a key must not rerun.
"""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from test_workflow import copy_workflow

TRAIN = {"train_sft", "train_ppo", "train_sft_ppo", "train_grpo"}
TRAINED_DOWNSTREAM = {"evaluate_model", "plot_training", "assemble_table"}

# key changed (overlay) -> (rules rerun directly, every rule planned)
CASES = [
    ("data.subsample_seed", {"data": {"subsample_seed": 7}},
     {"download_dataset"}, {"download_dataset", "format_prompts", *TRAIN, *TRAINED_DOWNSTREAM}),
    ("prompting.balanced", {"prompting": {"balanced": False}},
     {"format_prompts"}, {"format_prompts", "evaluate_model", "assemble_table"}),
    ("prompting.num_shots", {"prompting": {"num_shots": 3}},
     {"format_prompts", "evaluate_model"}, {"format_prompts", "evaluate_model", "assemble_table"}),
    ("prompting.chat_template", {"prompting": {"chat_template": "never"}},
     {*TRAIN, "evaluate_model"}, {*TRAIN, *TRAINED_DOWNSTREAM}),
    ("models.tiny.trust_remote_code", {"models": {"tiny": {"path": "@MODEL@", "trust_remote_code": True}}},
     {"prepare_model", "evaluate_model"}, {"prepare_model", *TRAIN, *TRAINED_DOWNSTREAM}),
    ("evaluation.batch_size", {"evaluation": {"batch_size": 3}},
     {"evaluate_model"}, {"evaluate_model", "assemble_table"}),
    ("evaluation.bootstrap_seed", {"evaluation": {"bootstrap_seed": 5}},
     {"evaluate_model", "assemble_table"}, {"evaluate_model", "assemble_table"}),
    ("lora.r", {"lora": {"r": 4}}, TRAIN, {*TRAIN, *TRAINED_DOWNSTREAM}),
    ("training.dtype", {"training": {"dtype": "float32"}}, TRAIN, {*TRAIN, *TRAINED_DOWNSTREAM}),
    ("training.accelerate_config", {"training": {"accelerate_config": "config/accelerate/single.yaml"}},
     TRAIN, {*TRAIN, *TRAINED_DOWNSTREAM}),
    ("sft.learning_rate", {"sft": {"learning_rate": 1e-3}},
     {"train_sft"}, {"train_sft", "train_sft_ppo", *TRAINED_DOWNSTREAM}),
    ("ppo.learning_rate", {"ppo": {"learning_rate": 1e-5}},
     {"train_ppo", "train_sft_ppo"}, {"train_ppo", "train_sft_ppo", *TRAINED_DOWNSTREAM}),
    ("ppo.reward.invalid", {"ppo": {"reward": {"invalid": -2.0}}},
     {"train_ppo", "train_sft_ppo", "train_grpo"}, {"train_ppo", "train_sft_ppo", "train_grpo", *TRAINED_DOWNSTREAM}),
    ("grpo.learning_rate", {"grpo": {"learning_rate": 2e-5}}, {"train_grpo"}, {"train_grpo", *TRAINED_DOWNSTREAM}),
    ("tables.reference_method", {"tables": {"reference_method": "zeroshot"}}, {"assemble_table"}, {"assemble_table"}),
    ("mlflow.enabled", {"mlflow": {"enabled": True}}, set(), set()),
    ("mlflow.experiment", {"mlflow": {"enabled": False, "experiment": "other"}}, set(), set()),
]


def _smk(work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--replace-workflow-config", *args]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# statuses of a job that itself reads what changed (its params, or which file it reads or writes)
DIRECT = ("params changed", "missing", "set of input files changed")
OUTPUTS_PER_JOB = {"evaluate_model": 2, "train_sft": 2, "train_ppo": 2, "train_sft_ppo": 2, "train_grpo": 2,
                   "assemble_table": 4, "plot_training": 2}


def summary(work: Path, *configs: str) -> list[tuple[str, str, str, str]]:
    """(file, rule, status, plan) of every output ``snakemake --summary`` lists."""
    args = ["--configfile", *configs, "--summary"]
    return [tuple(line.split("\t")[i] for i in (0, 2, 4, 5))
            for line in _smk(work, *args).stdout.splitlines()[1:] if line.strip()]


@pytest.fixture(scope="module")
def touched(tmp_path_factory):
    """A project whose every output exists and is up to date for config/test.yaml (params recorded)."""
    root = tmp_path_factory.mktemp("scope")
    model = root / "tiny-src"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (model / name).write_text("{}")
    (root / "glue").mkdir()
    work = copy_workflow(root / "work")
    cfg = {"tasks": ["rte"], "methods": ["zeroshot", "fewshot", "sft", "ppo", "sft_ppo", "grpo"], "seeds": [1],
           "models": {"tiny": {"path": str(model)}},
           "data": {"source": "local", "local_dir": str(root / "glue"), "max_samples": {"train": 24, "eval": 6}},
           "prompting": {"num_shots": 2}, "training": {"mode": "single"}, "mlflow": {"enabled": False}}
    (work / "config" / "test.yaml").write_text(yaml.safe_dump(cfg))
    for name, *_ in summary(work, "config/test.yaml"):
        out = work / name
        if "." in out.name:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.touch()
        else:
            out.mkdir(parents=True, exist_ok=True)  # directory() outputs: the model, the curves folder
    _smk(work, "--configfile", "config/test.yaml", "--touch", "--forceall")
    assert {plan for *_, plan in summary(work, "config/test.yaml")} == {"no update"}
    return work, str(model)


def test_every_key_reruns_exactly_its_readers(touched, capsys):
    work, model = touched
    rows, failures = [], []
    for key, overlay, direct, planned_rules in CASES:
        text = yaml.safe_dump(overlay).replace("@MODEL@", model)
        (work / "config" / "overlay.yaml").write_text(text)
        files = summary(work, "config/test.yaml", "config/overlay.yaml")
        got_direct = {rule for _, rule, status, _ in files if status in DIRECT}
        pending = [rule for _, rule, _, plan in files if plan == "update pending"]
        got_all = set(pending)
        counts = {r: n // OUTPUTS_PER_JOB.get(r, 1) for r, n in Counter(pending).items()}
        rows.append(f"| `{key}` | {', '.join(sorted(got_direct)) or '-'} | "
                    f"{', '.join(f'{r} {n}' for r, n in sorted(counts.items())) or 'nothing'} |")
        if got_direct != set(direct) or got_all != set(planned_rules):
            failures.append(f"{key}: direct {sorted(got_direct)} (expected {sorted(direct)}), "
                            f"planned {sorted(got_all)} (expected {sorted(planned_rules)})")
    with capsys.disabled():
        print("\n| key changed | rules rerun directly (they read it) | jobs planned |\n|---|---|---|")
        print("\n".join(rows))
    assert not failures, "\n".join(failures)
