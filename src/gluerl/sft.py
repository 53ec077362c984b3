"""Supervised warm start: TRL's ``SFTTrainer`` with a LoRA adapter, loss on the answer only.

Each training record becomes a prompt-completion pair: ``prompt`` is the rendered prompt (chat
template applied by :func:`gluerl.training.load_train_records`, ending with ``<Judgement>``) and
``completion`` is ``word</Judgement>`` followed by the tokenizer's EOS. Because the prompt is
plain text (not a list of messages), TRL does not apply the chat template again; it tokenizes
prompt and prompt+completion and masks the prompt tokens (label -100), so the loss is on the
answer and the EOS only (TRL's completion-only loss).

Tokens: TRL calls the tokenizer with its special tokens on, evaluation without them. A tokenizer
that adds a BOS by itself would then double the BOS that a chat template already writes as text;
that text BOS is removed (:func:`strip_template_bos`), so training sees exactly the tokens
evaluation feeds the model. (Plain prompts, without a chat template, get the tokenizer's own BOS
in training and none in evaluation, for tokenizers that add one.)

A run writes, in ``output_dir``:

- ``adapter_config.json`` and ``adapter_model.safetensors``: the LoRA adapter (no tokenizer);
- ``metrics.jsonl``: one line per logging step (``step``, ``loss``, ``learning_rate``, ...);
- ``train_summary.json``: steps, first and final loss, wall time, samples per second, ...;
- ``checkpoints/checkpoint-N`` while it runs (every ``sft.save_steps`` steps); a rerun resumes from
  the last complete one, and they are removed once the adapter is written.

The helpers below the trainer builders (metrics callback, checkpoints, summary) are shared by
:mod:`gluerl.grpo`.
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

from .errors import ConfigError, TrainingError
from .io import write_json
from .training import load_train_records, lora_config, mixing, set_seed

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
CHECKPOINT_DIR = "checkpoints"


# ---------------------------------------------------------------------------------------------
# tokens and data
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


def sft_dataset(records: Sequence[dict[str, Any]], tokenizer, seed: int = 1):
    """A prompt-completion ``datasets.Dataset``: ``prompt`` text, ``completion`` = answer + EOS.

    Also keeps ``task`` and ``idx`` (dropped by the trainer before batching).
    """
    from datasets import Dataset

    eos = tokenizer.eos_token
    if not eos:
        raise ConfigError("the model's tokenizer has no EOS token; SFT needs one to teach the model to stop")
    rows = []
    for r in mix_records(list(records), seed):
        completion = r["answer"] if r["answer"].endswith(eos) else r["answer"] + eos
        rows.append({"prompt": strip_template_bos(r["prompt"], tokenizer), "completion": completion,
                     "task": r["task"], "idx": r["idx"]})
    return Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------
# shared run plumbing (SFT and GRPO)
# ---------------------------------------------------------------------------------------------
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
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"model folder {model_dir} has no config.json; run the prepare_model step first")
    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, trust_remote_code=trust_remote_code,
                                                use_safetensors=True)


def load_run_tokenizer(model_dir: str | Path, trust_remote_code: bool = False):
    from .models import load_tokenizer

    return load_tokenizer(model_dir, trust_remote_code)


# ---------------------------------------------------------------------------------------------
# SFT
# ---------------------------------------------------------------------------------------------
def sft_args(cfg: dict[str, Any], output_dir: str | Path, seed: int = 1, device: str | None = None):
    """An ``SFTConfig`` from the config's ``sft`` and ``training`` sections."""
    from trl import SFTConfig

    from .models import resolve_dtype

    device = device or resolve_run_device()
    s = cfg["sft"]
    dtype = resolve_dtype(cfg["training"]["dtype"], device)
    try:
        return SFTConfig(
            **common_args(s, Path(output_dir), seed, device, dtype),
            num_train_epochs=float(s["num_train_epochs"]),
            warmup_steps=float(s["warmup_ratio"]) if s["warmup_ratio"] < 1 else int(s["warmup_ratio"]),
            lr_scheduler_type="linear",
            max_length=int(s["max_length"]),
            completion_only_loss=True,
            packing=False,
            dataset_num_proc=None,
        )
    except ValueError as e:
        raise ConfigError(f"sft: {e}") from None


def build_sft_trainer(cfg: dict[str, Any], model_dir: str | Path, prompt_files: Sequence[tuple[str, str | Path]],
                      output_dir: str | Path, seed: int = 1, callbacks: Sequence[Any] = (),
                      trust_remote_code: bool = False):
    """(trainer, metrics callback, run info) ready to train; nothing is written yet."""
    from trl import SFTTrainer

    from .models import resolve_dtype

    output_dir = Path(output_dir)
    set_seed(seed)
    device = resolve_run_device()
    dtype = resolve_dtype(cfg["training"]["dtype"], device)
    tok = load_run_tokenizer(model_dir, trust_remote_code)
    records = load_train_records(prompt_files, tok, cfg["prompting"]["chat_template"], cfg.get("task_files", []),
                                 seed=seed, **mixing(cfg))
    dataset = sft_dataset(records, tok, seed)
    args = sft_args(cfg, output_dir, seed, device)
    model = load_base_model(model_dir, dtype, trust_remote_code)
    metrics = make_metrics_callback(output_dir / METRICS_FILE)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         peft_config=lora_config(cfg["lora"]), callbacks=[metrics, *callbacks])
    n_kept = len(trainer.train_dataset)
    if n_kept == 0:
        raise ConfigError(f"sft.max_length={args.max_length}: every prompt is longer than it; nothing left to train on")
    if n_kept < len(records):
        log.warning("%d of %d records dropped: their prompt alone fills sft.max_length=%d",
                    len(records) - n_kept, len(records), args.max_length)
    n_cut = sum(len(ids) >= args.max_length for ids in trainer.train_dataset["input_ids"])
    if n_cut:
        log.warning("%d records cut at sft.max_length=%d (their answer is partly lost)", n_cut, args.max_length)
    tasks = sorted({t for t, _ in prompt_files})
    info = {"method": "sft", "tasks": tasks, "prompt_files": {t: str(p) for t, p in prompt_files},
            "model_dir": str(model_dir), "seed": int(seed), "device": device, "dtype": str(dtype).replace("torch.", ""),
            "records": len(records), "records_trained": n_kept, "records_truncated": n_cut,
            "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "config": {k: cfg[k] for k in ("sft", "lora", "training", "prompting") if k in cfg}}
    return trainer, metrics, info


def train_sft(cfg: dict[str, Any], model_dir: str | Path, prompt_files: Sequence[tuple[str, str | Path]],
              output_dir: str | Path, seed: int = 1, callbacks: Sequence[Any] = (),
              trust_remote_code: bool = False, keep_checkpoints: bool = False) -> dict[str, Any]:
    """Train a LoRA adapter on the prompt files' answers; write it to ``output_dir``; return the summary.

    ``prompt_files``: ``[(task, path), ...]`` (several tasks: records mixed and shuffled with ``seed``).
    ``callbacks``: extra ``transformers.TrainerCallback`` objects (e.g. experiment tracking).
    """
    output_dir = Path(output_dir)
    if not prompt_files:
        raise ConfigError("no prompt files to train on (give --prompts TASK=FILE)")
    trainer, metrics, info = build_sft_trainer(cfg, model_dir, prompt_files, output_dir, seed, callbacks,
                                               trust_remote_code)
    log.info("SFT on %s: %d records, %d trainable parameters, %s/%s", ",".join(info["tasks"]), info["records"],
             info["trainable_parameters"], info["device"], info["dtype"])
    summary = run_training(trainer, output_dir, metrics, info, keep_checkpoints, ("loss",))
    log.info("SFT done: %d steps, loss %s -> %s, %.1fs", summary["steps"], summary["first_loss"],
             summary["final_loss"], summary["wall_seconds"])
    return summary
