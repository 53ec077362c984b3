"""GRPO with the rule reward: TRL's ``GRPOTrainer`` and a LoRA adapter.

The dataset has one row per training record: ``prompt`` (the rendered prompt text ending with
``<Judgement>``, tokenized as evaluation tokenizes it, see :func:`gluerl.training.strip_template_bos`),
``label`` and ``task``. For each prompt the trainer samples ``grpo.num_generations`` completions;
:func:`make_reward_function` scores each with the paper's rule (``ppo.reward``: +1 right, -1
wrong, -3 invalid; STS-B 2.5 - |error|), and GRPO's group-normalised advantages train the adapter.

Stopping at ``</Judgement>``: TRL 1.16 builds a ``GenerationConfig`` from ``generation_kwargs`` but
calls ``generate`` without the tokenizer, which transformers needs for ``stop_strings``, so a
stop string cannot be set through the config. :class:`RuleGRPOTrainer` instead (1) lets
``generate`` stop a sequence at the tag (it passes the tokenizer) and (2) cuts every completion
after the first ``</Judgement>`` token, so the tokens the policy gradient sees are exactly the
answer the reward read; completions without the tag run to ``grpo.max_completion_length``.

Other GRPO settings are TRL 1.16's defaults: ``loss_type="dapo"`` (token-level normalisation),
``scale_rewards="group"``, one optimisation pass per generation batch (``num_iterations=1``),
``top_p=1``, no top-k; with ``beta > 0`` the KL reference is the base model (adapter disabled), or
a frozen copy of ``init_adapter`` when training starts from one. Gradient checkpointing is on (TRL's
default), as in SFT.

Output, in ``output_dir``: the adapter (``adapter_config.json``, ``adapter_model.safetensors``),
``metrics.jsonl`` (per logging step: ``reward``, ``reward_std``, ``loss``, ``kl``,
``completions/mean_length``, ``rule/correct_rate``, ``rule/invalid_rate``, ...) and
``train_summary.json``; checkpoints and resuming as SFT's (:mod:`gluerl.training`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from .budgets import check_token_budget
from .errors import ConfigError
from .parsing import CLOSE_TAG
from .rewards import RewardRule, reward
from .tasks import get_task
from .training import (METRICS_FILE, common_args, load_base_model, load_run_tokenizer, load_train_records,
                       lora_config, make_metrics_callback, mix_records, mixing, resolve_run_device, run_training,
                       set_seed, strip_template_bos)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# reward
# ---------------------------------------------------------------------------------------------
def make_reward_function(rule: RewardRule | dict[str, Any] | None = None, task_files: Sequence[str] = ()) -> Callable:
    """A TRL reward function: ``f(completions, label, task, **kwargs) -> [reward per completion]``.

    ``label`` and ``task`` are the dataset columns TRL passes along; the reward is
    :func:`gluerl.rewards.reward` of the registry's task under ``rule`` (the config's ``ppo.reward``).
    It also logs the share of right and of invalid answers when TRL offers ``log_metric``.
    """
    if rule is None:
        rule = RewardRule()
    elif isinstance(rule, dict):
        rule = RewardRule(**rule)
    task_files = tuple(task_files)

    def rule_reward(completions, label, task, **kwargs) -> list[float]:
        out, right, invalid, n_cls = [], 0, 0, 0
        for completion, gold, name in zip(completions, label, task, strict=True):
            t = get_task(name, task_files)
            if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
                completion = completion[-1]["content"] if completion else ""
            r = reward(completion, gold, t, rule)
            out.append(float(r))
            if not t.is_regression:
                n_cls += 1
                right += r == rule.correct
                invalid += r == rule.invalid
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and n_cls:
            log_metric("rule/correct_rate", right / n_cls)
            log_metric("rule/invalid_rate", invalid / n_cls)
        return out

    return rule_reward


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def grpo_dataset(records: Sequence[dict[str, Any]], tokenizer, seed: int = 1):
    """A ``datasets.Dataset`` with ``prompt`` (rendered text), ``label``, ``task`` (and ``idx``)."""
    from datasets import Dataset

    rows = [{"prompt": strip_template_bos(r["prompt"], tokenizer), "label": float(r["label"]), "task": r["task"],
             "idx": r["idx"]} for r in mix_records(list(records), seed)]
    return Dataset.from_list(rows)


def cut_after_stop(ids: list[int], tokenizer, stop: str = CLOSE_TAG) -> list[int]:
    """``ids`` up to and including the token that completes ``stop`` (all of them when it never does)."""
    if stop not in tokenizer.decode(ids, skip_special_tokens=False):
        return list(ids)
    lo, hi = 1, len(ids)
    while lo < hi:  # the shortest prefix whose text holds the stop string
        mid = (lo + hi) // 2
        if stop in tokenizer.decode(ids[:mid], skip_special_tokens=False):
            hi = mid
        else:
            lo = mid + 1
    return list(ids[:lo])


# ---------------------------------------------------------------------------------------------
# trainer
# ---------------------------------------------------------------------------------------------
def _trainer_class():
    from trl import GRPOTrainer

    class RuleGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose completions stop at ``</Judgement>`` (see the module docstring)."""

        stop_string = CLOSE_TAG

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not self.use_vllm and self.stop_string:
                self.generation_config.stop_strings = [self.stop_string]
                model = self.accelerator.unwrap_model(self.model)
                model.generate = functools.partial(model.generate, tokenizer=self._tokenizer)

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs)
            if self.stop_string:
                cut = [cut_after_stop(ids, self._tokenizer, self.stop_string) for ids in completion_ids]
                if logprobs is not None:
                    logprobs = [lp[: len(c)] for lp, c in zip(logprobs, cut, strict=True)]
                completion_ids = cut
            return completion_ids, logprobs

    return RuleGRPOTrainer


def grpo_args(cfg: dict[str, Any], output_dir: str | Path, seed: int = 1, device: str | None = None):
    """A ``GRPOConfig`` from the config's ``grpo`` and ``training`` sections."""
    from trl import GRPOConfig

    from .models import resolve_dtype

    device = device or resolve_run_device()
    g = cfg["grpo"]
    dtype = resolve_dtype(cfg["training"]["dtype"], device)
    try:
        return GRPOConfig(
            **common_args(g, Path(output_dir), seed, device, dtype),
            num_generations=int(g["num_generations"]),
            max_completion_length=int(g["max_completion_length"]),
            temperature=float(g["temperature"]),
            top_p=1.0,
            top_k=0,
            beta=float(g["beta"]),
            shuffle_dataset=True,
            # completions cut at </Judgement> end without EOS: TRL counts them as "clipped"
            # (completions/clipped_ratio), so they must not be masked out of the loss
            mask_truncated_completions=False,
            log_completions=False,
        )
    except ValueError as e:
        raise ConfigError(f"grpo: {e} (check grpo.per_device_train_batch_size, "
                          f"grpo.gradient_accumulation_steps and grpo.num_generations)") from None


def build_grpo_trainer(cfg: dict[str, Any], model_dir: str | Path, prompt_files: Sequence[tuple[str, str | Path]],
                       output_dir: str | Path, seed: int = 1, callbacks: Sequence[Any] = (),
                       init_adapter: str | Path | None = None, trust_remote_code: bool = False):
    """(trainer, metrics callback, run info) ready to train; nothing is written yet."""
    from .models import resolve_dtype

    output_dir = Path(output_dir)
    set_seed(seed)
    device = resolve_run_device()
    dtype = resolve_dtype(cfg["training"]["dtype"], device)
    tok = load_run_tokenizer(model_dir, trust_remote_code)
    check_token_budget("grpo.max_completion_length", cfg["grpo"]["max_completion_length"],
                       [get_task(t, cfg["task_files"]) for t, _ in prompt_files], tok)
    records = load_train_records(prompt_files, tok, cfg["prompting"]["chat_template"], cfg["task_files"],
                                 seed=seed, **mixing(cfg))
    dataset = grpo_dataset(records, tok, seed)
    args = grpo_args(cfg, output_dir, seed, device)
    model = load_base_model(model_dir, dtype, trust_remote_code)
    peft_config = lora_config(cfg["lora"])
    if init_adapter is not None:
        from peft import PeftModel

        init_adapter = Path(init_adapter)
        if not (init_adapter / "adapter_config.json").is_file():
            raise ConfigError(f"--init-adapter {init_adapter} has no adapter_config.json")
        # the trainer copies it into a frozen "ref" adapter: the KL is taken against the start point
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        peft_config = None
    metrics = make_metrics_callback(output_dir / METRICS_FILE, watch=("loss", "reward", "grad_norm"))
    reward_fn = make_reward_function(cfg["ppo"]["reward"], cfg["task_files"])
    trainer = _trainer_class()(model=model, reward_funcs=[reward_fn], args=args, train_dataset=dataset,
                               processing_class=tok, peft_config=peft_config, callbacks=[metrics, *callbacks])
    tasks = sorted({t for t, _ in prompt_files})
    info = {"method": "grpo", "tasks": tasks, "prompt_files": {t: str(p) for t, p in prompt_files},
            "model_dir": str(model_dir), "init_adapter": str(init_adapter) if init_adapter else None,
            "seed": int(seed), "device": device, "dtype": str(dtype).replace("torch.", ""), "records": len(records),
            "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "config": {k: cfg[k] for k in ("grpo", "lora", "training", "prompting") if k in cfg},
            "reward_rule": dict(cfg["ppo"]["reward"])}
    return trainer, metrics, info


def train_grpo(cfg: dict[str, Any], model_dir: str | Path, prompt_files: Sequence[tuple[str, str | Path]],
               output_dir: str | Path, seed: int = 1, callbacks: Sequence[Any] = (),
               init_adapter: str | Path | None = None, trust_remote_code: bool = False,
               keep_checkpoints: bool = False) -> dict[str, Any]:
    """Train a LoRA adapter with GRPO and the rule reward; write it to ``output_dir``; return the summary.

    ``prompt_files``: ``[(task, path), ...]`` (several tasks: prompts mixed and shuffled with ``seed``).
    ``init_adapter``: start from this adapter (e.g. the SFT one) instead of a fresh LoRA.
    ``callbacks``: extra ``transformers.TrainerCallback`` objects (e.g. experiment tracking).
    """
    output_dir = Path(output_dir)
    if not prompt_files:
        raise ConfigError("no prompt files to train on (give --prompts TASK=FILE)")
    trainer, metrics, info = build_grpo_trainer(cfg, model_dir, prompt_files, output_dir, seed, callbacks,
                                                init_adapter, trust_remote_code)
    log.info("GRPO on %s: %d prompts, %d trainable parameters, %s/%s", ",".join(info["tasks"]), info["records"],
             info["trainable_parameters"], info["device"], info["dtype"])
    summary = run_training(trainer, output_dir, metrics, info, keep_checkpoints,
                           ("reward", "reward_std", "loss", "kl", "rule/correct_rate", "rule/invalid_rate"))
    log.info("GRPO done: %d steps, reward %s -> %s, %.1fs", summary["steps"], summary["first_reward"],
             summary["final_reward"], summary["wall_seconds"])
    return summary
