"""Pieces every training method shares: the LoRA config, the training records, seeding, the MLflow
run; and the plumbing of the two TRL-based methods (:mod:`gluerl.sft`, :mod:`gluerl.grpo`): the
tokens (no double BOS), the records' order, the common ``TrainingArguments``, the metrics file,
checkpoints and resuming, the adapter and the run summary.

A training run reads one or more zero-shot prompt files (``data/prompts/0shot/{task}/train.jsonl``;
several in multi-task mode), renders each prompt with the model's tokenizer, and yields records
``{"task", "idx", "prompt", "answer", "label"}``: ``prompt`` ends with ``<Judgement>`` and
``answer`` is the gold continuation ``word</Judgement>``.

Several tasks (``training.mode: multi``) are mixed by ``training.task_mixing`` (:func:`mix_tasks`):
``proportional`` keeps every task's rows as they are, so a task's share is its size (MNLI and QQP
would drown the rest of GLUE); ``uniform`` gives every task the same share; ``temperature`` gives
task t the share n_t^(1/T) / sum_s n_s^(1/T) with ``T = training.mixing_temperature`` (T = 1 is
proportional, T -> infinity uniform). The total stays the sum of the task sizes; a task is
down-sampled without replacement or up-sampled by whole repeats plus a sample of the rest, drawn
with the run's seed. The paper's code trains PPO on one task at a time and mixes tasks only for
multi-task SFT, repeating every task with fewer than 30,000 rows up to at least that many and
keeping the larger ones whole (close to ``temperature`` for the small tasks, ``proportional`` for
the large ones); the default here is ``proportional``, what this package did before the option.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import section
from .errors import ConfigError, DataError, TrainingError
from .io import write_json
from .prompts import read_prompt_file, render_prompt
from .tasks import get_task

log = logging.getLogger(__name__)

TASK_MIXING = ("proportional", "uniform", "temperature")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
CHECKPOINT_DIR = "checkpoints"


def lora_config(lora: dict[str, Any], task_type: str = "CAUSAL_LM"):
    """A PEFT LoraConfig from the config's ``lora`` section, its defaults (the paper's: r=16, alpha=32,
    0.05, rsLoRA) filled from the schema."""
    from peft import LoraConfig

    lora = section("lora", lora)
    return LoraConfig(
        r=int(lora["r"]),
        lora_alpha=float(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        use_rslora=bool(lora["use_rslora"]),
        target_modules=lora["target_modules"],
        bias="none",
        task_type=task_type,
    )


def parse_task_files(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """``["rte=data/prompts/0shot/rte/train.jsonl", ...]`` -> [(task, path)]."""
    out = []
    for s in specs:
        if "=" not in s:
            raise ConfigError(f"--prompts expects TASK=FILE, got {s!r}")
        task, path = s.split("=", 1)
        out.append((task, Path(path)))
    return out


def task_shares(sizes: dict[str, int], strategy: str = "proportional", temperature: float = 1.0) -> dict[str, float]:
    """Each task's share of the mixed records: size, 1 or size^(1/T), normalised."""
    if strategy not in TASK_MIXING:
        raise ConfigError(f"training.task_mixing: {strategy!r} is not one of {', '.join(TASK_MIXING)}")
    if strategy == "temperature" and not float(temperature) > 0:
        raise ConfigError(f"training.mixing_temperature must be > 0, got {temperature!r}")
    exponent = {"proportional": 1.0, "uniform": 0.0, "temperature": 1.0 / float(temperature)}[strategy]
    weights = {t: float(n) ** exponent for t, n in sizes.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()} if total else {}


def task_counts(sizes: dict[str, int], strategy: str = "proportional", temperature: float = 1.0) -> dict[str, int]:
    """Rows per task after mixing: the shares of the total (the sum of sizes), rounded by largest
    remainder so they add up to it; every task keeps at least one row."""
    total = sum(sizes.values())
    quotas = {t: total * p for t, p in task_shares(sizes, strategy, temperature).items()}
    counts = {t: math.floor(q) for t, q in quotas.items()}
    order = sorted(quotas, key=lambda t: (-(quotas[t] - counts[t]), list(quotas).index(t)))
    for t in order[: total - sum(counts.values())]:
        counts[t] += 1
    for t in counts:
        if counts[t] == 0:
            counts[max(counts, key=counts.get)] -= 1
            counts[t] = 1
    return counts


def mix_tasks(records: Sequence[dict[str, Any]], strategy: str = "proportional", temperature: float = 1.0,
              seed: int = 0) -> list[dict[str, Any]]:
    """``records`` of several tasks re-balanced by ``strategy`` (see the module docstring).

    Each task's rows are down-sampled without replacement or repeated whole and topped up with a
    sample without replacement, drawn with ``seed`` and the task's name; rows keep their file order
    within a task and tasks their first-appearance order (training shuffles afterwards). With one
    task, or ``proportional``, the records come back unchanged.
    """
    if strategy == "proportional":
        task_shares({}, strategy)  # the strategy name is still checked
        return list(records)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    sizes = {t: len(rows) for t, rows in by_task.items()}
    counts = task_counts(sizes, strategy, temperature)
    if counts == sizes:
        return list(records)
    out = []
    for task, rows in by_task.items():
        want, n = counts[task], len(rows)
        rng = random.Random(f"{seed}-{task}")
        repeats, extra = divmod(want, n)
        out += rows * repeats + [rows[i] for i in sorted(rng.sample(range(n), extra))]
    log.info("tasks mixed %s: %s", strategy if strategy != "temperature" else f"with temperature {temperature}",
             ", ".join(f"{t} {sizes[t]} -> {counts[t]}" for t in sizes))
    return out


def load_train_records(files: Iterable[tuple[str, str | Path]], tokenizer=None, chat_template: str = "auto",
                       task_files: Sequence[str] = (), task_mixing: str = "proportional",
                       mixing_temperature: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """Training records from prompt files, rendered for ``tokenizer``; unlabelled rows are refused.

    Several tasks are mixed by ``task_mixing`` and ``mixing_temperature`` with ``seed`` (:func:`mix_tasks`).
    """
    records = []
    for task_name, path in files:
        task = get_task(task_name, task_files)
        if task.evaluation_only:
            raise ConfigError(f"task {task_name!r} is evaluation-only: it has no train split to train on")
        rows = read_prompt_file(path)
        if not rows:
            raise DataError("no rows to train on", path)
        for n, row in enumerate(rows, 1):
            if row.get("answer") is None or row.get("label") is None:
                raise DataError("training row has no gold label", path, n)
            records.append({
                "task": task_name,
                "idx": row["idx"],
                "prompt": render_prompt(row["messages"], tokenizer, chat_template),
                "answer": row["answer"],
                "label": row["label"],
            })
    return mix_tasks(records, task_mixing, mixing_temperature, seed)


def mixing(cfg: dict[str, Any]) -> dict[str, Any]:
    """``load_train_records``'s mixing arguments from the config's ``training`` section (its defaults
    filled from the schema)."""
    training = section("training", cfg.get("training"))
    return {"task_mixing": training["task_mixing"], "mixing_temperature": training["mixing_temperature"]}


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def run_params(cfg: dict[str, Any], sections: Sequence[str], model_dir: str | Path, prompt_files: Sequence[str],
               seed: int, **extra: Any) -> dict[str, Any]:
    """MLflow params of a training run: its config sections (flattened), model, tasks, seed, rule."""
    import os

    from .tracking import flatten

    params: dict[str, Any] = {}
    for s in sections:
        params.update(flatten(cfg[s], s))
    tasks = [p.split("=", 1)[0] for p in prompt_files]
    params.update(model=Path(model_dir).name, tasks=",".join(tasks), seed=seed,
                  snakemake_rule=os.environ.get("GLUERL_RULE", ""), **extra)
    return params


def log_training_outputs(tracker, output_dir: str | Path, summary: dict[str, Any]) -> None:
    """Final numbers and files of a training run (best effort: tracking never loses the adapter)."""
    tracker.log_metrics({f"final.{k}": v for k, v in summary.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for name in (SUMMARY_FILE, METRICS_FILE):
        path = Path(output_dir) / name
        if path.is_file():
            tracker.log_artifact(path)
    # the adapter itself (and PPO's value head), so the run alone can be evaluated again
    for name in ("adapter_config.json", "adapter_model.safetensors", "value_head.safetensors", "README.md"):
        path = Path(output_dir) / name
        if path.is_file():
            tracker.log_artifact(path, "adapter")
    from .tracking import RUN_REFERENCE

    tracker.write_reference(Path(output_dir) / RUN_REFERENCE)


def tracked_run(cfg: dict[str, Any], method: str, args, sections: Sequence[str], **extra: Any):
    """The MLflow run of a training script (``args``: its model_dir, prompts and seed flags)."""
    from .tracking import start_run

    from .records import data_params

    files = dict(p.split("=", 1) for p in args.prompts)
    params = {**run_params(cfg, sections, args.model_dir, args.prompts, args.seed, **extra), **data_params(files)}
    tasks = "+".join(files)
    tracker = start_run(cfg["mlflow"], f"{method}-{Path(args.model_dir).name}-{tasks}-seed{args.seed}", method, params)
    tracker.log_datasets({f"{t}-train": f for t, f in files.items()}, "training")
    return tracker


def run_trainer_script(args, method: str, sections: Sequence[str], train, describe, **extra: Any) -> int:
    """The body of a TRL-based training script (SFT, GRPO): the config, its MLflow run, training,
    the outputs logged; a GlueRLError becomes one line on stderr and exit status 1.

    ``train(cfg, callbacks)`` runs the training and returns its summary; ``describe(summary)`` is
    the end of the closing log line.
    """
    import logging
    import sys

    from .config import load_config
    from .errors import GlueRLError
    from .scopes import restrict
    from .tracking import MlflowTrainerCallback

    from .cli import quiet_library_warnings

    quiet_library_warnings()
    try:
        cfg = restrict(load_config(args.config, args.config_json, check=False), f"train_{method}")
        with tracked_run(cfg, method, args, sections, **extra) as tracker:
            summary = train(cfg, [MlflowTrainerCallback(tracker)])
            log_training_outputs(tracker, args.output_dir, summary)
    except GlueRLError as e:
        logging.getLogger("gluerl").error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    logging.getLogger(f"gluerl.train_{method}").info("adapter in %s (%d steps, %s)", args.output_dir,
                                                     summary["steps"], describe(summary))
    return 0


# ---------------------------------------------------------------------------------------------
# TRL runs (SFT and GRPO): tokens, records' order, arguments, metrics, checkpoints, summary
# ---------------------------------------------------------------------------------------------
def adds_bos(tokenizer) -> bool:
    """Whether calling the tokenizer on text prepends a BOS token by itself."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos]


def strip_template_bos(prompt: str, tokenizer) -> str:
    """``prompt`` without a leading BOS text when the tokenizer adds one itself (no double BOS)."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and prompt.startswith(bos) and adds_bos(tokenizer):
        return prompt[len(bos):]
    return prompt


def mix_records(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Records of every task mixed in one order drawn with ``seed``."""
    out = list(records)
    random.Random(seed).shuffle(out)
    return out


def resolve_run_device() -> str:
    """The device kind a training process runs on: ``cuda`` when one is visible, else ``cpu``."""
    from .models import resolve_device

    return resolve_device("auto")


def precision_flags(dtype) -> dict[str, bool]:
    import torch

    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def _complete(ckpt: Path) -> bool:
    """Whether a Trainer checkpoint was written to the end: its trainer_state.json (written last) parses."""
    try:
        return isinstance(json.loads((ckpt / "trainer_state.json").read_text()), dict)
    except (OSError, ValueError):
        return False


def last_checkpoint(folder: str | Path) -> Path | None:
    """The complete checkpoint with the most steps in ``folder`` (one whose trainer_state.json, written last, parses).

    A checkpoint cut short by a kill (no or a torn trainer_state.json) is skipped with a warning.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir():
            if _complete(p):
                found.append((int(m.group(1)), p))
            else:
                log.warning("skipping incomplete checkpoint %s (interrupted while it was written)", p)
    return max(found)[1] if found else None


def _finite(v) -> bool:
    return not isinstance(v, (int, float)) or isinstance(v, bool) or math.isfinite(v)


def make_metrics_callback(path: str | Path, watch: Iterable[str] = ("loss", "grad_norm")):
    """A TrainerCallback appending every log (``step`` first) to a JSON Lines file.

    On a resumed run it keeps the lines up to the resumed step; a fresh run starts the file anew.
    A non-finite value of a ``watch`` key stops training with a TrainingError (on every process).
    The trainer's closing summary log (``train_runtime``...) is kept in ``.final`` instead.
    """
    from transformers import TrainerCallback

    watch = tuple(watch)

    class JsonlMetrics(TrainerCallback):
        def __init__(self):
            self.path = Path(path)
            self.rows: list[dict[str, Any]] = []
            self.final: dict[str, Any] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            kept = []
            if state.global_step > 0 and self.path.is_file():
                for line in self.path.read_text().splitlines():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        break  # a torn last line of an interrupted run
                    if row.get("step", 0) <= state.global_step:
                        kept.append(row)
            self.rows = kept
            if state.is_world_process_zero:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            if "train_runtime" in logs:
                self.final = logs
                return
            bad = [k for k in watch if k in logs and logs[k] is not None and not _finite(logs[k])]
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if k != "step"}}
            if state.is_world_process_zero:
                self.rows.append(row)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
            if bad:
                raise TrainingError(f"non-finite {', '.join(bad)} at step {state.global_step}: "
                                    f"{ {k: logs[k] for k in bad} }; lower the learning rate or check the data")

    return JsonlMetrics()


def save_adapter(trainer, output_dir: str | Path) -> None:
    """The trained LoRA adapter (``default`` only, no tokenizer) into ``output_dir``."""
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(str(output_dir), selected_adapters=["default"], safe_serialization=True)
        missing = [f for f in ADAPTER_FILES if not (Path(output_dir) / f).is_file()]
        if missing:
            raise TrainingError(f"saving the adapter to {output_dir} did not write {missing}")
    trainer.accelerator.wait_for_everyone()


def run_training(trainer, output_dir: Path, metrics, summary: dict[str, Any], keep_checkpoints: bool = False,
                 first_last_keys: Sequence[str] = ("loss",)) -> dict[str, Any]:
    """Train (resuming from the last checkpoint), save the adapter, write the summary; return it."""
    ckpt_dir = Path(trainer.args.output_dir)
    resume = last_checkpoint(ckpt_dir)
    if resume is not None:
        log.info("resuming from %s", resume)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - t0
    save_adapter(trainer, output_dir)
    final = {**metrics.final, **(out.metrics or {})}
    summary = dict(summary)
    summary.update({
        "steps": int(trainer.state.global_step),
        "max_steps": int(trainer.state.max_steps),
        "wall_seconds": round(wall, 3),
        "train_runtime": final.get("train_runtime"),
        "samples_per_second": final.get("train_samples_per_second"),
        "steps_per_second": final.get("train_steps_per_second"),
        "train_loss": final.get("train_loss"),
        "resumed_from": str(resume) if resume else None,
        "logged_steps": len(metrics.rows),
    })
    for key in first_last_keys:
        vals = [r[key] for r in metrics.rows if r.get(key) is not None]
        name = key.replace("/", "_")
        summary[f"first_{name}"] = vals[0] if vals else None
        summary[f"final_{name}"] = vals[-1] if vals else None
    if trainer.is_world_process_zero():
        write_json(output_dir / SUMMARY_FILE, summary)
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary


def common_args(section: dict[str, Any], output_dir: Path, seed: int, device: str, dtype) -> dict[str, Any]:
    """TrainingArguments shared by SFT and GRPO: logging, checkpoints, seed, precision, no reporting."""
    return dict(
        output_dir=str(output_dir / CHECKPOINT_DIR),
        learning_rate=float(section["learning_rate"]),
        max_steps=int(section["max_steps"]),
        per_device_train_batch_size=int(section["per_device_train_batch_size"]),
        gradient_accumulation_steps=int(section["gradient_accumulation_steps"]),
        logging_steps=int(section["logging_steps"]),
        logging_first_step=True,
        save_strategy="steps",
        save_steps=int(section["save_steps"]),
        save_total_limit=1,
        seed=int(seed),
        data_seed=int(seed),
        report_to=[],
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        # TRL turns this on by default; it trades compute for memory (7B models on GPUs), and with
        # it generation runs without the KV cache: off unless the config asks for it
        gradient_checkpointing=bool(section["gradient_checkpointing"]),
        **precision_flags(dtype),
    )


def load_base_model(model_dir: str | Path, dtype, trust_remote_code: bool = False):
    """The base model SFT and GRPO train (TRL's GRPO scores completions with ``logits_to_keep``)."""
    from transformers import AutoModelForCausalLM

    from .models import contiguous_output_layer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"model folder {model_dir} has no config.json; run the prepare_model step first")
    return contiguous_output_layer(AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True))


def load_run_tokenizer(model_dir: str | Path, trust_remote_code: bool = False):
    from .models import load_tokenizer

    return load_tokenizer(model_dir, trust_remote_code)
