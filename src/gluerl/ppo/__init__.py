"""PPO for rule rewards, written on Accelerate + PEFT (TRL no longer ships a PPO trainer).

An episode is one training example: the prompt ends with ``<Judgement>``, the policy samples a
completion (stopped at ``</Judgement>`` or EOS) and the rule in :mod:`gluerl.rewards` scores it
(+1 right, -1 wrong, -3 unparseable; STS-B 2.5 - |pred - gold|). One PPO update (a *step*):

1. **rollout** - every process takes its own ``batch_size`` prompts from a shuffled stream and
   samples completions with ``generate`` (KV cache, left padding, ``max_new_tokens`` drawn per
   batch from ``[min_new_tokens, max_new_tokens]``, stopping once every sequence has stopped).
   The sampling pass also yields the policy's per-token log-probs (from the logits each token
   was sampled from) and values (a linear value head on the last hidden state of each step), so
   the policy never runs a second time over the rollout;
2. **scoring** - the rule reward, and the reference log-probs from one no-grad forward pass of
   the same model as the reference policy (no second copy of the base weights, see below);
3. **rewards and advantages** - ``-kl_coef * (logp - ref_logp)`` per token plus the rule score on
   the last response token (:func:`compute_rewards`), GAE (:func:`gae`), whitened advantages; or, with
   ``advantage: group`` and ``rollouts_per_prompt`` rollouts of each prompt, each rollout's summed reward
   against the mean of its prompt's other rollouts (:func:`group_advantages`, no value head);
4. **optimisation** - ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss plus
   ``vf_coef`` times the clipped value loss, gradient accumulation, grad-norm clipping (unless
   ``max_grad_norm`` is null), AdamW or Adafactor (``ppo.optimizer``);
   in eval mode like the rollout (no LoRA dropout), so the first ratio is exactly the rollout's.
   Under ``accelerate launch`` / ``torchrun`` DDP averages the gradients, so every process holds
   the same weights after every step;
5. the KL coefficient is adapted (Ziegler et al. 2019) from the KL averaged over all processes;
   metrics go to ``metrics.jsonl`` and to the ``on_step`` callbacks; a checkpoint is written
   every ``save_every`` steps and a run resumes from the latest one.

The reference policy (``ppo.reference``) is by default the starting policy, as in the paper's
code (which merges the SFT adapter and trains a fresh LoRA on top): for ``sft_ppo`` a frozen copy
of the starting adapter, loaded a second time under the name ``reference`` and switched in for the
reference pass; for ``ppo`` the base model (adapter off), which is what a fresh LoRA starts as.
``reference: base`` makes it the base model in both cases. Only the trained adapter (``default``)
is saved.
Response tensors are ``[batch, resp_len]`` with a float mask that is 1 on the response tokens
(up to and including the token that completes ``</Judgement>``, or EOS) and 0 after them.

The package, by role: :mod:`.losses` (masked statistics, GAE, the clipped losses, KL-shaped
rewards), :mod:`.kl` (KL controllers), :mod:`.policy` (the policy with its value head and their
forward passes), :mod:`.rollout` (the :class:`Rollout` record, the response mask, the sampling
settings, answer collapse), :mod:`.checkpoint` (checkpoints, resuming, the final files),
:mod:`.config` (the typed ``ppo`` section, :class:`PPOConfig`) and :mod:`.trainer` (the loop,
:class:`PPOTrainer`). :func:`train_ppo` is what ``scripts/train_ppo.py`` runs.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

from ..tasks import get_task
from .checkpoint import (METRICS_FILE, STATE_FILE, latest_checkpoint, model_identity, rng_state,
                         set_rng_state)
from .config import PPOConfig
from .kl import AdaptiveKLController, FixedKLController, kl_controller
from .losses import (compute_rewards, entropy_from_logits, explained_variance, gae, group_advantages, last_index,
                     logprobs_from_logits, masked_mean, masked_var, policy_loss, value_loss, whiten)
from .policy import REFERENCE_ADAPTER, PolicyWithValueHead, prefix_forward, shared_forward, trim_left_padding
from .rollout import (COLLAPSE_SHARE, MIN_SHARED_PREFIX, Rollout, collapsed_answer, response_mask,
                      sampling_config)
from .trainer import PPOTrainer, make_optimizer

__all__ = [
    "AdaptiveKLController", "COLLAPSE_SHARE", "FixedKLController", "METRICS_FILE", "MIN_SHARED_PREFIX",
    "PPOConfig", "PPOTrainer", "PolicyWithValueHead", "REFERENCE_ADAPTER", "Rollout", "STATE_FILE",
    "collapsed_answer", "compute_rewards", "entropy_from_logits", "explained_variance", "gae", "group_advantages",
    "kl_controller", "last_index", "latest_checkpoint", "logprobs_from_logits", "make_optimizer", "masked_mean",
    "masked_var", "model_identity", "policy_loss", "prefix_forward", "response_mask", "rng_state", "sampling_config",
    "set_rng_state", "shared_forward", "train_ppo", "trim_left_padding", "value_loss", "whiten",
]


def train_ppo(cfg: dict[str, Any], model_dir: str | Path, prompt_files: Sequence[tuple[str, str | Path]],
              output_dir: str | Path, seed: int = 1, init_adapter: str | Path | None = None,
              track: Callable[[], ContextManager[Any]] | None = None,
              dump_rank_state: str | Path | None = None) -> dict[str, Any]:
    """Train a LoRA adapter and a value head with PPO and the rule reward; write them to ``output_dir``
    (with ``metrics.jsonl``, ``train_summary.json`` and ``checkpoints/``); return the summary.

    ``prompt_files``: ``[(task, path), ...]`` (several tasks: mixed by ``training.task_mixing``).
    ``init_adapter``: start from this adapter (e.g. the SFT one) instead of a fresh LoRA.
    ``track``: opens the experiment-tracking run (``gluerl.training.tracked_run``); it is entered after
    the token budget is checked and the records are loaded, so bad input fails before any run starts,
    and it gets every step's metrics and the outputs. None: no tracking.
    ``dump_rank_state``: debugging, every process writes its trainable weights into this folder.
    A rerun with the same ``output_dir`` resumes from the latest checkpoint.
    """
    from ..budgets import check_token_budget
    from ..models import load_tokenizer
    from ..training import load_train_records, log_training_outputs, mixing

    tokenizer = load_tokenizer(model_dir)
    check_token_budget("ppo.min_new_tokens", cfg["ppo"]["min_new_tokens"],
                       [get_task(t, cfg["task_files"]) for t, _ in prompt_files], tokenizer)
    records = load_train_records(prompt_files, tokenizer, cfg["prompting"]["chat_template"], cfg["task_files"],
                                 seed=seed, **mixing(cfg))
    with track() if track is not None else nullcontext() as tracker:
        callbacks = [lambda m: tracker.log_metrics(m, step=m.get("step"))] if tracker is not None else []
        trainer = PPOTrainer(cfg, model_dir, records, output_dir, seed=seed, init_adapter=init_adapter,
                             tokenizer=tokenizer, callbacks=callbacks)
        if not trainer.main:
            logging.getLogger().setLevel(logging.WARNING)
        summary = trainer.train()
        if dump_rank_state:
            trainer.dump_rank_state(dump_rank_state)
        if tracker is not None:
            log_training_outputs(tracker, output_dir, summary)
    return summary
