"""Supervised warm start: TRL's ``SFTTrainer`` with a LoRA adapter, loss on the answer only.

Each training record becomes a prompt-completion pair: ``prompt`` is the rendered prompt (chat
template applied by :func:`gluerl.training.load_train_records`, ending with ``<Judgement>``) and
``completion`` is ``word</Judgement>`` followed by the tokenizer's EOS. Because the prompt is
plain text (not a list of messages), TRL does not apply the chat template again; it tokenizes
prompt and prompt+completion and masks the prompt tokens (label -100), so the loss is on the
answer and the EOS only (TRL's completion-only loss).

Tokens: TRL calls the tokenizer with its special tokens on, evaluation without them. A tokenizer
that adds a BOS by itself would then double the BOS that a chat template already writes as text;
that text BOS is removed (:func:`gluerl.training.strip_template_bos`), so training sees exactly the tokens
evaluation feeds the model. (Plain prompts, without a chat template, get the tokenizer's own BOS
in training and none in evaluation, for tokenizers that add one.)

A run writes, in ``output_dir``:

- ``adapter_config.json`` and ``adapter_model.safetensors``: the LoRA adapter (no tokenizer);
- ``metrics.jsonl``: one line per logging step (``step``, ``loss``, ``learning_rate``, ...);
- ``train_summary.json``: steps, first and final loss, wall time, samples per second, ...;
- ``checkpoints/checkpoint-N`` while it runs (every ``sft.save_steps`` steps); a rerun resumes from
  the last complete one, and they are removed once the adapter is written.

The run plumbing (metrics callback, checkpoints, adapter, summary) is :mod:`gluerl.training`'s,
shared with :mod:`gluerl.grpo`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError
from .training import (METRICS_FILE, common_args, load_base_model, load_run_tokenizer, load_train_records,
                       lora_config, make_metrics_callback, mix_records, mixing, resolve_run_device, run_training,
                       set_seed, strip_template_bos)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
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
    records = load_train_records(prompt_files, tok, cfg["prompting"]["chat_template"], cfg["task_files"],
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
