# Helpers, target lists and wildcard constraints shared by every stage. Nothing here runs a job.
import json
import os
import time
import uuid

from gluerl.config import check_names, validate as validate_config
from gluerl.prompts import template_name
from gluerl.scopes import MLFLOW_ENV, scoped_json
from gluerl.tables import columns_for
from gluerl.tasks import registry

# The schema (defaults filled; one line a problem, with a did-you-mean for a mistyped key), then
# the checks a schema cannot express (task names, model folders), both before any job is planned.
validate_config(config, "config")
check_names(config, "config")

# one id per invocation: every MLflow run of the jobs it starts carries it (the jobs inherit it)
os.environ.setdefault("GLUERL_PIPELINE_ID", time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8])

REGISTRY = registry(config["task_files"])
TASKS = [REGISTRY[t] for t in config["tasks"]]
TRAINED = ("sft", "ppo", "sft_ppo", "grpo")


wildcard_constraints:
    task="|".join(sorted(REGISTRY)),
    split=r"[A-Za-z0-9_]+",
    template=r"\d+shot(-seed\d+)?",
    model="|".join(sorted(config["models"])),
    method="|".join(["zeroshot", "fewshot", *TRAINED]),
    train_set=r"[A-Za-z0-9_]+",
    seed=r"\d+",
    benchmark=r"[a-z0-9_]+",


# ---- config passed as params: exactly what each job's script reads (gluerl.scopes.READS) ----
# A change reruns the jobs that read it and no others. MLflow settings change no output: the jobs
# get them in the environment (set again in every job process, on SLURM too), not as params.
os.environ[MLFLOW_ENV] = json.dumps(config["mlflow"], sort_keys=True)


def stage_config(rule):
    """A params function: the config the rule's script reads, as the JSON its --config-json takes."""

    def config_for(wildcards):
        return scoped_json(config, rule, **dict(wildcards.items()))

    config_for.__name__ = f"{rule}_config"
    return config_for


# ---- data ----
def raw_split(task_name, split):
    return f"data/raw/{task_name}/{split}.jsonl"


def demo_source(task):
    """(task, split) whose train rows give few-shot demonstrations (ax borrows MNLI's)."""
    src = REGISTRY[task.train_task] if task.train_task else task
    return src.name, src.train_split


# ---- prompts ----
def template_for(method, seed):
    if method == "fewshot":
        return template_name(config["prompting"]["num_shots"], int(seed))
    return template_name(0)


def prompt_inputs(wildcards):
    task = REGISTRY[wildcards.task]
    inputs = {"split": raw_split(task.name, wildcards.split)}
    if not wildcards.template.startswith("0shot"):
        inputs["train"] = raw_split(*demo_source(task))
    return inputs


def train_flag(wildcards, input):
    return f"--train {input.train}" if "train" in input.keys() else ""


# ---- training ----
def train_set(task):
    """Folder name of the adapter a task is evaluated with: the task (single) or 'multi'."""
    if config["training"]["mode"] == "multi":
        return "multi"
    return task.train_task or task.name


def train_tasks(train_set_name):
    if train_set_name == "multi":
        return [t for t in TASKS if not t.evaluation_only]
    return [REGISTRY[train_set_name]]


def train_prompts(wildcards):
    return {t.name: f"data/prompts/0shot/{t.name}/{t.train_split}.jsonl" for t in train_tasks(wildcards.train_set)}


def prompts_flags(wildcards, input):
    return " ".join(f"--prompts {t}={input[t]}" for t in train_prompts(wildcards))


def adapter_file(method, model, set_name, seed):
    return f"results/checkpoints/{method}/{model}/{set_name}/seed{seed}/adapter_model.safetensors"


def sft_adapter(wildcards):
    return adapter_file("sft", wildcards.model, wildcards.train_set, wildcards.seed)


def init_adapter_flag(wildcards, input):
    """train_sft_ppo's start: the SFT adapter's folder (the shell takes the file's dirname, as for --output-dir)."""
    return f"--init-adapter $(dirname {input.init}) "


def launcher(wildcards, resources, threads):
    """Own GPU slots and `threads` CPU threads, then `accelerate launch` with one process per GPU (one CPU process without)."""
    acc = config["training"]["accelerate_config"]
    cfg = f" --accelerate-config {acc}" if acc else ""
    return f"python -m gluerl.gpus --count {resources.gpu} --threads {threads} --accelerate{cfg} --"


def gpu_slots(wildcards, resources, threads):
    """Own GPU slots (CUDA_VISIBLE_DEVICES set to them) and `threads` CPU threads for a single-process job."""
    return f"python -m gluerl.gpus --count {resources.gpu} --threads {threads} --"


# ---- evaluation ----
def split_inputs(splits_of):
    """Input function of a job that scores one method on the splits `splits_of(task)` lists: the model,
    each split's prompts (the method's template) and, for a trained method, its adapter."""

    def inputs(wildcards):
        task = REGISTRY[wildcards.task]
        tpl = template_for(wildcards.method, wildcards.seed)
        out = {"model": f"results/models/{wildcards.model}"}
        for split in splits_of(task):
            out[f"prompts_{split}"] = f"data/prompts/{tpl}/{task.name}/{split}.jsonl"
        if wildcards.method in TRAINED:
            out["adapter"] = adapter_file(wildcards.method, wildcards.model, train_set(task), wildcards.seed)
        return out

    return inputs


eval_inputs = split_inputs(lambda task: task.eval_splits)


def eval_flags(wildcards, input):
    flags = [f"--prompts {k[len('prompts_'):]}={v}" for k, v in input.items() if k.startswith("prompts_")]
    if "adapter" in input.keys():
        flags.append(f"--adapter {os.path.dirname(input.adapter)}")
    return " ".join(flags)


def eval_result(method, model, seed, task):
    return f"results/eval/{method}/{model}/seed{seed}/{task}.json"


# ---- tables ----
def benchmark_tasks(benchmark):
    return [t for t in TASKS if t.benchmark == benchmark and t.labelled]


def table_inputs(wildcards):
    return [
        eval_result(m, model, s, t.name)
        for m in config["methods"]
        for model in config["models"]
        for s in config["seeds"]
        for t in benchmark_tasks(wildcards.benchmark)
    ]


def table_predictions(wildcards):
    """The per-example predictions beside every table input (paired differences to the reference)."""
    return [r.removesuffix(".json") + ".predictions.jsonl" for r in table_inputs(wildcards)]


def training_summaries(wildcards=None):
    """train_summary.json of every training run the configured methods need."""
    sets = sorted({train_set(t) for t in TASKS if t.labelled})
    return [
        f"results/checkpoints/{m}/{model}/{s}/seed{seed}/train_summary.json"
        for m in config["methods"]
        if m in TRAINED
        for model in config["models"]
        for s in sets
        for seed in config["seeds"]
    ]


def table_targets():
    benches = sorted({t.benchmark for t in TASKS if t.labelled})
    targets = [f"results/tables/{b}.{ext}" for b in benches for ext in ("csv", "md", "png", "json")]
    if training_summaries():
        targets.append("results/plots/training_curves.png")
    return targets


# ---- leaderboard submissions (rules/submissions.smk) ----
def submission_tasks(benchmark):
    """Configured tasks of a benchmark that have a leaderboard file (a `submission:` block)."""
    return [t for t in TASKS if t.benchmark == benchmark and t.submission]


def test_predictions(method, model, seed, task):
    return f"results/test_predictions/{method}/{model}/seed{seed}/{task}.jsonl"


predict_inputs = split_inputs(lambda task: task.test_splits)


def submission_inputs(wildcards):
    inputs = {}
    for t in submission_tasks(wildcards.benchmark):
        inputs[f"pred_{t.name}"] = test_predictions(wildcards.method, wildcards.model, wildcards.seed, t.name)
        inputs[f"train_{t.name}"] = raw_split(*demo_source(t))
    return inputs


def submission_flags(wildcards, input):
    tasks = submission_tasks(wildcards.benchmark)
    return " ".join(
        f"--predictions {t.name}={input[f'pred_{t.name}']} --train {t.name}={input[f'train_{t.name}']}" for t in tasks
    )


def submission_targets():
    benches = sorted({t.benchmark for t in TASKS if t.submission})
    return [
        f"results/submissions/{m}/{model}/seed{s}/{b}.{ext}"
        for b in benches
        for m in config["methods"]
        for model in config["models"]
        for s in config["seeds"]
        for ext in ("zip", "json")
    ]


# ---- transfer evaluation (rules/transfer.smk) ----
from gluerl.transfer import check_targets

TRANSFER = {t.name: t for t in check_targets(config, REGISTRY)}


wildcard_constraints:
    target="|".join(sorted(TRANSFER)) or "(?!)",


def transfer_entry(name):
    return next(e for e in config["transfer"] if e["name"] == name)


def transfer_source(wildcards):
    return TRANSFER[wildcards.target].source_task


def transfer_prompt_inputs(wildcards):
    inputs = {"split": f"data/transfer/{wildcards.target}.jsonl"}
    if not wildcards.template.startswith("0shot"):
        inputs["train"] = raw_split(*demo_source(REGISTRY[transfer_source(wildcards)]))
    return inputs


def transfer_eval_inputs(wildcards):
    """Model, the target's prompts and, for a trained method, the source task's adapter."""
    source = REGISTRY[transfer_source(wildcards)]
    tpl = template_for(wildcards.method, wildcards.seed)
    inputs = {
        "model": f"results/models/{wildcards.model}",
        "prompts": f"data/transfer/prompts/{tpl}/{wildcards.target}.jsonl",
    }
    if wildcards.method in TRAINED:
        inputs["adapter"] = adapter_file(wildcards.method, wildcards.model, train_set(source), wildcards.seed)
    return inputs


def transfer_adapter_flag(wildcards, input):
    return f"--adapter {os.path.dirname(input.adapter)}" if "adapter" in input.keys() else ""


def transfer_result(method, model, seed, target):
    return f"results/transfer/{method}/{model}/seed{seed}/{target}.json"


def transfer_table_inputs(wildcards=None):
    return [
        transfer_result(m, model, s, t)
        for m in config["methods"]
        for model in config["models"]
        for s in config["seeds"]
        for t in TRANSFER
    ]


def transfer_targets():
    """The transfer table's files, when the config declares targets."""
    return [f"results/tables/transfer.{ext}" for ext in ("csv", "md", "png", "json")] if TRANSFER else []


# ---- MLflow: one parent run per invocation, every job's run nested under it (gluerl.tracking) ----
from gluerl.tracking import end_pipeline_run, flatten, start_pipeline_run


onstart:
    start_pipeline_run(config["mlflow"], params=flatten({k: v for k, v in config.items() if k != "mlflow"}))


onsuccess:
    end_pipeline_run("FINISHED")


onerror:
    end_pipeline_run("FAILED")


# ---- software: under --sdm conda the jobs import this checkout's gluerl (see envs/*.yaml) ----
from snakemake.settings.types import DeploymentMethod

SOURCE = os.path.join(workflow.basedir, "src")
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method and os.path.isdir(
    os.path.join(SOURCE, "gluerl")
):
    # set in every process that parses the workflow (the jobs' own too, on SLURM as well); a
    # setting, not a requirement, hence no envvars: directive
    os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (SOURCE, os.environ.get("PYTHONPATH")) if p))
