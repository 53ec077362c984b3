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
   the last response token (:func:`compute_rewards`), GAE (:func:`gae`), whitened advantages;
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
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .errors import ConfigError, TrainingError
from .io import write_json
from .parsing import CLOSE_TAG, parse_answer
from .rewards import RewardRule, score_prediction
from .tasks import get_task

if TYPE_CHECKING:
    from transformers import GenerationConfig

log = logging.getLogger(__name__)

REFERENCE_ADAPTER = "reference"  # PEFT name of the frozen copy of the starting adapter (sft_ppo)
MIN_SHARED_PREFIX = 8  # shorter shared starts are not worth a pass of their own (ppo.share_prefix)

# --------------------------------------------------------------------------------------------
# Pure functions: tensors [batch, resp_len] with a float mask
# --------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 when nothing is unmasked)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1e-8)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1e-8)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the unmasked positions (Bessel-corrected when ``unbiased``)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the unmasked positions; masked positions become 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last unmasked position of each row ([batch]; 0 for an all-zero row)."""
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (pos * (mask > 0)).argmax(dim=1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; returns ``(advantages, returns)``, 0 where masked.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``, where
    ``V_{t+1}`` and ``A_{t+1}`` are 0 past the last unmasked token; ``returns = A + V``.
    """
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_mask = mask[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        running = delta + gamma * lam * running * next_mask
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages.detach(), (advantages + values).detach()


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped PPO surrogate ``mean(max(-A r, -A clip(r, 1-c, 1+c)))`` with ``r = exp(logp - old)``.

    Returns ``(loss, clipfrac, approx_kl)``: the fraction of tokens where the clipped term is the
    larger one, and ``0.5 * mean((logp - old)^2)``.
    """
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss ``0.5 * mean(max((V - R)^2, (V_clip - R)^2))``; returns ``(loss, clipfrac)``.

    ``V_clip = old_V + clip(V - old_V, -c, c)``.
    """
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    sq, sq_clipped = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(sq, sq_clipped), mask)
    clipfrac = masked_mean((sq_clipped > sq).float(), mask)
    return loss, clipfrac.detach()


def compute_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                    kl_coef: float) -> torch.Tensor:
    """Per-token rewards: ``-kl_coef * (logp - ref_logp)``, plus ``scores[b]`` on row b's last unmasked token."""
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_index(mask)] += scores.to(rewards.dtype)
    return rewards


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``tokens`` [B, T] under ``logits`` [B, T, V] (computed in fp32)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at every position ([B, T])."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(returns - values) / Var(returns)`` over the unmasked positions (NaN if Var(returns) = 0)."""
    var_returns = masked_var(returns, mask)
    if var_returns <= 0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_returns)


COLLAPSE_SHARE = 0.95  # one answer in more than this share of a task's episodes, gold labels mixed: collapse


def collapsed_answer(pred_counts: Mapping[str, float], gold_counts: Mapping[str, float], n: float,
                     share: float = COLLAPSE_SHARE) -> str | None:
    """The label word that took over ``n`` episodes: predicted in more than ``share`` of them while no
    gold label is that frequent (the gold labels are mixed); None when there is no such word.

    ``pred_counts`` and ``gold_counts`` map label words to counts among the ``n`` episodes.
    """
    if n <= 0 or not pred_counts:
        return None
    word, count = max(pred_counts.items(), key=lambda kv: kv[1])
    if count / n > share and max(gold_counts.values(), default=0) / n <= share:
        return word
    return None


def response_mask(response_ids: torch.Tensor, tokenizer, stop: str = CLOSE_TAG,
                  eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None) -> torch.Tensor:
    """Float mask [B, T] of the response tokens that count.

    A row ends at its first EOS token or at the first token whose decoded prefix contains ``stop``
    (``</Judgement>`` is usually several tokens; those that complete it are kept); the end token is
    kept, everything after it is masked. A row with neither ends at its last non-padding token.
    """
    if eos_token_id is None:
        eos_token_id = tokenizer.eos_token_id
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
    pad = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    rows = response_ids.tolist()
    mask = torch.zeros(response_ids.shape, dtype=torch.float32)

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    for b, row in enumerate(rows):
        end = next((i for i, t in enumerate(row) if t in eos), None)
        head = row if end is None else row[: end + 1]
        if stop and stop in decode(head):
            end = next(i for i in range(len(head)) if stop in decode(head[: i + 1]))
        if end is None:
            n = len(row)
            while n > 0 and row[n - 1] == pad:
                n -= 1
            end = n - 1
        mask[b, : end + 1] = 1.0
    return mask.to(response_ids.device)


# --------------------------------------------------------------------------------------------
# KL controllers
# --------------------------------------------------------------------------------------------


class AdaptiveKLController:
    """Ziegler et al. (2019): ``coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon``."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"type": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"type": "fixed", "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


def kl_controller(ppo: dict[str, Any]) -> AdaptiveKLController | FixedKLController:
    if ppo["adaptive_kl"]:
        return AdaptiveKLController(ppo["kl_coef"], ppo["target_kl"], ppo["kl_horizon"])
    return FixedKLController(ppo["kl_coef"])


# --------------------------------------------------------------------------------------------
# The model: LoRA policy + value head, one backbone forward for both
# --------------------------------------------------------------------------------------------


class PolicyWithValueHead(nn.Module):
    """A PEFT causal LM and a fp32 ``Linear(hidden, 1)`` value head on its last hidden state.

    One module, so ``accelerator.prepare`` (DDP) syncs the adapter and the value head together.
    ``value_head_init``: ``zero`` (weight and bias 0: every first value is 0, inside the range of the
    returns) or ``normal`` (weight drawn with std ``1/sqrt(hidden+1)``, bias 0).
    """

    def __init__(self, policy: nn.Module, hidden_size: int, value_head_init: str = "zero"):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(hidden_size, 1, dtype=torch.float32)
        if value_head_init == "zero":
            nn.init.zeros_(self.value_head.weight)
        elif value_head_init == "normal":
            nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden_size + 1))
        else:
            raise ConfigError(f"ppo.value_head_init must be zero or normal, not {value_head_init!r}")
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int,
                prefix_len: int = 0):
        """Logits [B, R, V] and values [B, R] for the last ``n_response`` tokens of ``input_ids``.

        Position ``t`` of the outputs is the prediction *for* response token ``t`` (made from the
        state before it). Position ids follow the attention mask, as in ``generate`` (left padding).
        ``prefix_len``: the first columns are the same tokens in every row (:func:`shared_forward`).
        """
        out = shared_forward(self.policy, input_ids, attention_mask, prefix_len, output_hidden_states=True,
                             logits_to_keep=n_response + 1)
        hidden = out.hidden_states[-1][:, -(n_response + 1):-1]
        values = self.value_head(hidden.float()).squeeze(-1)
        return out.logits[:, :-1], values

    def reference_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int,
                         prefix_len: int = 0):
        """Logits [B, R, V] of the reference policy for the last ``n_response`` tokens; no values.

        The reference is the frozen ``reference`` adapter when the model has one, else the base model
        (adapter off). Call it without gradients: the adapters' ``requires_grad`` are switched for the pass.
        """
        with self.reference_policy():
            out = shared_forward(self.policy, input_ids, attention_mask, prefix_len,
                                 logits_to_keep=n_response + 1)
        return out.logits[:, :-1]

    @contextmanager
    def reference_policy(self) -> Iterator[None]:
        """Within the block the policy is the reference: the ``reference`` adapter, or no adapter."""
        if REFERENCE_ADAPTER not in self.policy.peft_config:
            with self.policy.disable_adapter():
                yield
            return
        active = self.policy.active_adapter
        self.policy.set_adapter(REFERENCE_ADAPTER, inference_mode=True)  # every adapter frozen meanwhile
        try:
            yield
        finally:
            self.policy.set_adapter(active)  # trainable again, the reference frozen

    def generate(self, prefix_len: int = 0, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``policy.generate(**kwargs)`` that also returns, for every generated token, the raw logits it
        was sampled from and the value of the state it was sampled in: ``(sequences, logits [B, R, V],
        values [B, R])``, where R is the number of generated tokens.

        The value head reads the input of the output layer (the last hidden state, as in
        :meth:`forward`) at the last position of every forward pass of ``generate`` (prefill, then
        one decoding step per token): the same numbers a separate forward pass over the finished
        sequences gives, up to floating-point rounding, without running it.

        ``prefix_len``: the first columns of ``input_ids`` are the same tokens in every row; their keys
        and values are computed once (a batch of one) and copied into every row's cache, and attention
        reads them once per layer (:func:`gluerl.generation.cascade`).
        """
        from .generation import batch_cache, cascade, cache_kwarg

        if prefix_len > 0:
            rows, width = kwargs["input_ids"].shape
            with torch.no_grad():
                prefix = prefix_forward(self.policy, kwargs["input_ids"][:1, :prefix_len])
            capacity = width + int(kwargs["generation_config"].max_new_tokens)
            kwargs[cache_kwarg()] = batch_cache(prefix, rows, capacity)
        head = self.policy.get_output_embeddings()
        states: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda _module, args: states.append(args[0][:, -1].detach()))
        try:
            with cascade(self.policy, prefix_len):
                out = self.policy.generate(**kwargs, return_dict_in_generate=True, output_logits=True)
        finally:
            hook.remove()
        n = len(out.logits)
        if len(states) != n:
            raise TrainingError(f"generate ran {len(states)} forward passes for {n} new tokens")
        values = self.value_head(torch.stack(states, 1).float()).squeeze(-1)
        return out.sequences, torch.stack(out.logits, 1), values


def trim_left_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row (left padding of a sub-batch, or the padding
    between a shared prefix and the rows' own tokens).

    Positions come from the attention mask, so the outputs of the remaining tokens do not change.
    """
    keep = attention_mask.bool().any(dim=0)
    if bool(keep.all()) or not bool(keep.any()):
        return input_ids, attention_mask
    return input_ids[:, keep], attention_mask[:, keep]


def prefix_forward(policy: nn.Module, prefix_ids: torch.Tensor):
    """The cache (keys and values) of ``prefix_ids`` [1, P]: one row, positions 0..P-1."""
    out = policy(input_ids=prefix_ids, use_cache=True, logits_to_keep=1)
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def shared_forward(policy: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_len: int = 0,
                   **kwargs):
    """``policy(...)`` over left-padded rows (no cache kept), positions from the attention mask.

    With ``prefix_len`` > 0 the first ``prefix_len`` columns are the same tokens in every row
    (``[prefix][padding][own tokens]``): the prefix runs once, as a batch of one, its keys and values
    are expanded to every row and the rest runs on top of them. The outputs (logits, hidden states)
    are those of the rows' own columns, the same numbers as the whole rows give up to float
    rounding; under autograd the gradient flows back through the expanded keys and values into the
    prefix's pass, so it is the whole rows' gradient too. Columns that are padding in every row are
    dropped first (:func:`trim_left_padding`).
    """
    from transformers.cache_utils import DynamicCache

    from .generation import cache_kwarg

    rows = input_ids.shape[0]
    if prefix_len > 0:  # the prefix columns must survive the trim: they are never padding
        head, tail = trim_left_padding(input_ids[:, prefix_len:], attention_mask[:, prefix_len:])
        input_ids = torch.cat([input_ids[:, :prefix_len], head], 1)
        attention_mask = torch.cat([attention_mask[:, :prefix_len], tail], 1)
    else:
        input_ids, attention_mask = trim_left_padding(input_ids, attention_mask)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if prefix_len <= 0:
        return policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False, **kwargs)
    prefix = prefix_forward(policy, input_ids[:1, :prefix_len])
    layers = getattr(prefix, "layers", None)
    if type(prefix) is not DynamicCache or not layers or any(getattr(l, "keys", None) is None for l in layers):
        # a cache of another kind (sliding windows, ...): the whole rows, as without a shared prefix
        return policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False, **kwargs)
    past = DynamicCache(ddp_cache_data=[(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1))
                                        for layer in layers])
    return policy(input_ids=input_ids[:, prefix_len:], attention_mask=attention_mask,
                  position_ids=position_ids[:, prefix_len:], use_cache=True, **{cache_kwarg(): past}, **kwargs)


def sampling_config(ppo: dict[str, Any], eos_token_id: Sequence[int], pad_token_id: int | None,
                    max_new_tokens: int) -> GenerationConfig:
    """The rollout's ``GenerationConfig``, from the ``ppo`` config alone.

    Sampling with ``temperature``, ``top_k`` and ``top_p``, stopping at ``</Judgement>`` or EOS after at
    most ``max_new_tokens``; no repetition penalty or any other logits processor. The old log-probs
    are ``log_softmax(logits / temperature)``, so the tokens must be drawn from that distribution
    (with ``top_k: 0`` and ``top_p: 1``, exactly).
    """
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=True, temperature=float(ppo["temperature"]), top_k=int(ppo["top_k"]),
                            top_p=float(ppo["top_p"]), repetition_penalty=1.0, max_new_tokens=int(max_new_tokens),
                            min_new_tokens=0, stop_strings=[CLOSE_TAG], eos_token_id=list(eos_token_id),
                            pad_token_id=pad_token_id, num_beams=1, num_return_sequences=1)


def make_optimizer(params: Iterable[nn.Parameter], ppo: dict[str, Any]) -> torch.optim.Optimizer:
    """``ppo.optimizer`` at the constant ``ppo.learning_rate``: AdamW, or Adafactor as the paper's code
    (``scale_parameter=False, relative_step=False, warmup_init=False``: no relative step size)."""
    if ppo["optimizer"] == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=ppo["learning_rate"], scale_parameter=False, relative_step=False,
                         warmup_init=False)
    if ppo["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=ppo["learning_rate"])
    raise ConfigError(f"ppo.optimizer must be adamw or adafactor, not {ppo['optimizer']!r}")


def model_identity(config, model_dir: str | Path) -> dict[str, str]:
    """Name and config hash of the base model, stored in checkpoints so a resume can refuse another model."""
    cfg = config.to_dict()
    volatile = ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache", "_attn_implementation")
    for key in volatile:
        cfg.pop(key, None)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
    info = Path(model_dir) / "gluerl_model.json"
    name = json.loads(info.read_text()).get("name") if info.is_file() else None
    return {"name": name or Path(model_dir).name, "config_sha256": digest}


# --------------------------------------------------------------------------------------------
# Checkpoint helpers
# --------------------------------------------------------------------------------------------

STATE_FILE = "trainer_state.json"


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) RNG states as plain JSON-able values."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"python": [version, list(internal), gauss_next],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint (``checkpoints/step-N`` holding its state file) with the largest N."""
    root = Path(output_dir) / "checkpoints"
    found = []
    for d in root.glob("step-*") if root.is_dir() else ():
        if d.name[5:].isdigit() and (d / STATE_FILE).is_file():
            found.append((int(d.name[5:]), d))
    return max(found)[1] if found else None


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------

METRICS_FILE = "metrics.jsonl"


class PPOTrainer:
    """PPO on ``records`` (from :func:`gluerl.training.load_train_records`) with the config's ``ppo`` section.

    >>> trainer = PPOTrainer(cfg, "results/models/m", records, "out", seed=1)   # doctest: +SKIP
    >>> summary = trainer.train()                                                # doctest: +SKIP
    """

    def __init__(self, cfg: dict[str, Any], model_dir: str | Path, records: Sequence[dict[str, Any]],
                 output_dir: str | Path, seed: int = 1, init_adapter: str | Path | None = None,
                 callbacks: Iterable[Callable[[dict], None]] = (), tokenizer=None, accelerator=None):
        from accelerate import Accelerator
        from peft import PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM

        from .models import load_tokenizer, resolve_dtype
        from .training import lora_config, set_seed

        self.cfg, self.ppo = cfg, cfg["ppo"]
        if self.ppo["min_new_tokens"] > self.ppo["max_new_tokens"]:
            raise ConfigError("ppo.min_new_tokens must not exceed ppo.max_new_tokens")
        if not records:
            raise ConfigError("no training records")
        self.records, self.output_dir, self.seed = list(records), Path(output_dir), int(seed)
        self.callbacks = list(callbacks)
        self.rule = RewardRule(**self.ppo["reward"])
        self.tasks = {r["task"]: get_task(r["task"], cfg.get("task_files", ())) for r in self.records}
        # (task, label id) of every classification task, in one order on every process (answer shares)
        self.label_keys = [(name, label) for name, task in sorted(self.tasks.items()) if not task.is_regression
                           for label in sorted(task.labels)]
        self.collapse: list[dict[str, Any]] = []  # answer collapses seen (collapsed_answer), for the summary
        # on a machine without CUDA, accelerate only sets up multi-process (gloo) training when told cpu=True
        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.main, self.rank, self.world = self.acc.is_main_process, self.acc.process_index, self.acc.num_processes
        self.device = self.acc.device

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ConfigError(f"model folder {model_dir} has no config.json; run the prepare_model step first")
        self.tok = tokenizer or load_tokenizer(model_dir)
        dtype = resolve_dtype(cfg["training"]["dtype"], str(self.device))
        set_seed(self.seed)  # the same initial adapter and value head on every process
        base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, use_safetensors=True)
        self.model_id = model_identity(base.config, model_dir)
        if init_adapter is not None:
            if not (Path(init_adapter) / "adapter_config.json").is_file():
                raise ConfigError(f"--init-adapter {init_adapter} has no adapter_config.json")
            policy = PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
            if self.ppo["reference"] == "initial":  # a frozen copy of the starting adapter is the reference
                policy.load_adapter(str(init_adapter), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        else:
            policy = get_peft_model(base, lora_config(cfg["lora"]))
        gen_eos = policy.generation_config.eos_token_id
        self.eos_ids = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [self.tok.eos_token_id])
        # generate fills every setting its generation_config leaves unset from the model's own (a hub model's
        # repetition_penalty, temperature, top_k, ...): the rollout inherits none of them
        base.generation_config = sampling_config(self.ppo, self.eos_ids, self.tok.pad_token_id,
                                                 self.ppo["max_new_tokens"])
        net = PolicyWithValueHead(policy, base.config.get_text_config().hidden_size,
                                  self.ppo["value_head_init"]).to(self.device)
        opt = make_optimizer([p for p in net.parameters() if p.requires_grad], self.ppo)
        self.net, self.opt = self.acc.prepare(net, opt)
        self.kl_ctl = kl_controller(self.ppo)
        self.step, self.cursor, self.train_seconds = 0, 0, 0.0
        self.last_metrics: dict[str, Any] = {}
        self.resumed_from: int | None = None
        set_seed(self.seed + self.rank)  # sampling differs between processes
        self._perm_cache: tuple[int, list[int]] | None = None
        self._resume()

    # -- small helpers ------------------------------------------------------------------------
    @property
    def model(self) -> PolicyWithValueHead:
        return self.acc.unwrap_model(self.net)

    def _info(self, msg, *args):
        if self.main:
            log.info(msg, *args)

    def _reduce(self, values: Sequence[float], op: str = "sum") -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        if self.world > 1:
            t = self.acc.reduce(t, reduction=op)
        return t.tolist()

    def _fail_if(self, bad: bool, what: str) -> None:
        """Raise TrainingError on every process when any process saw a non-finite value."""
        if self._reduce([float(bad)], "sum")[0] > 0:
            raise TrainingError(f"non-finite {what} at step {self.step + 1}; the last good checkpoint is kept "
                                f"(last metrics: {json.dumps(self.last_metrics)})")

    def episode_indices(self, cursor: int, count: int) -> list[int]:
        """Records at positions ``cursor .. cursor+count`` of the stream: epochs of shuffled records."""
        out = []
        for k in range(cursor, cursor + count):
            epoch, pos = divmod(k, len(self.records))
            if self._perm_cache is None or self._perm_cache[0] != epoch:
                order = list(range(len(self.records)))
                random.Random(f"{self.seed}-{epoch}").shuffle(order)
                self._perm_cache = (epoch, order)
            out.append(self._perm_cache[1][pos])
        return out

    def _answer_shares(self, records: Sequence[dict[str, Any]], preds: Sequence[Any]) -> dict[str, float | None]:
        """``pred_frac/<task>/<label word>`` and ``pred_frac/<task>/invalid`` over this step's episodes of all
        processes (None for a task without episodes this step); warns of and records answer collapse."""
        tasks = sorted({t for t, _ in self.label_keys})
        if not tasks:  # regression only (STS-B): no label words
            return {}
        n = {t: 0 for t in tasks}
        invalid = dict(n)
        pred, gold = {k: 0 for k in self.label_keys}, {k: 0 for k in self.label_keys}
        for p, r in zip(preds, records):
            if r["task"] not in n:
                continue
            n[r["task"]] += 1
            if p is None:
                invalid[r["task"]] += 1
            elif (r["task"], int(p)) in pred:
                pred[r["task"], int(p)] += 1
            if (r["task"], int(r["label"])) in gold:
                gold[r["task"], int(r["label"])] += 1
        keys = list(self.label_keys)
        sums = self._reduce([n[t] for t in tasks] + [invalid[t] for t in tasks] + [pred[k] for k in keys]
                            + [gold[k] for k in keys])
        n = dict(zip(tasks, sums[:len(tasks)]))
        invalid = dict(zip(tasks, sums[len(tasks):2 * len(tasks)]))
        pred = dict(zip(keys, sums[2 * len(tasks):2 * len(tasks) + len(keys)]))
        gold = dict(zip(keys, sums[2 * len(tasks) + len(keys):]))
        out: dict[str, float | None] = {}
        for t in tasks:
            words = self.tasks[t].labels
            pred_words = {words[lab]: pred[t, lab] for tt, lab in keys if tt == t}
            gold_words = {words[lab]: gold[t, lab] for tt, lab in keys if tt == t}
            for word, count in pred_words.items():
                out[f"pred_frac/{t}/{word}"] = count / n[t] if n[t] else None
            out[f"pred_frac/{t}/invalid"] = invalid[t] / n[t] if n[t] else None
            word = collapsed_answer(pred_words, gold_words, n[t])
            if word is not None:
                self._note_collapse(t, word, pred_words[word] / n[t], max(gold_words.values()) / n[t], int(n[t]))
        return out

    def _task_metrics(self, records: Sequence[dict[str, Any]], preds: Sequence[Any], scores) -> dict[str, float | None]:
        """Multi-task training: ``task/<task>/reward_mean``, ``/accuracy`` (classification) and
        ``/invalid_rate`` over this step's episodes of that task on all processes (None without any)."""
        names = sorted(self.tasks)
        acc = {t: [0.0, 0, 0, 0] for t in names}  # reward sum, episodes, right answers, invalid
        for r, p, sc in zip(records, preds, scores.tolist()):
            a = acc[r["task"]]
            a[0] += sc
            a[1] += 1
            a[2] += int(p is not None and not self.tasks[r["task"]].is_regression and int(p) == int(r["label"]))
            a[3] += int(p is None)
        sums = self._reduce([v for t in names for v in acc[t]])
        out: dict[str, float | None] = {}
        for i, t in enumerate(names):
            total, n, right, invalid = sums[4 * i: 4 * i + 4]
            out[f"task/{t}/reward_mean"] = total / n if n else None
            out[f"task/{t}/accuracy"] = None if not n or self.tasks[t].is_regression else right / n
            out[f"task/{t}/invalid_rate"] = invalid / n if n else None
        return out

    def _note_collapse(self, task: str, word: str, share: float, gold_share: float, n: int) -> None:
        """Record that ``task``'s answers collapsed onto ``word`` at this step; warn when it starts."""
        entry = next((e for e in self.collapse if e["task"] == task and e["label"] == word), None)
        if entry is None or entry["last_step"] != self.step - 1:
            if self.main:
                log.warning("step %d: answer collapse on %s: %.0f%% of %d episodes answered %r while the gold "
                            "labels are mixed (the most frequent one %.0f%%)", self.step, task, 100 * share, n,
                            word, 100 * gold_share)
        if entry is None:
            entry = {"task": task, "label": word, "first_step": self.step, "last_step": self.step, "steps": 0}
            self.collapse.append(entry)
        entry.update(last_step=self.step, steps=entry["steps"] + 1, share=share)

    # -- one step -----------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> tuple[dict[str, torch.Tensor], int]:
        """``input_ids``/``attention_mask`` of ``prompts`` and the length of the start they share.

        With ``ppo.share_prefix`` (and a shared start of at least :data:`MIN_SHARED_PREFIX` tokens)
        the rows are laid out as ``[shared prefix][padding][own tokens]``, else left-padded (prefix 0).
        """
        from .generation import common_prefix_length, shared_prefix_batch

        ids = self.tok(list(prompts), add_special_tokens=False)["input_ids"]
        prefix_len = common_prefix_length(ids) if self.ppo["share_prefix"] else 0
        if prefix_len < MIN_SHARED_PREFIX:
            prefix_len = 0
        return shared_prefix_batch(self.tok, ids, prefix_len, self.device), prefix_len

    @torch.no_grad()
    def rollout(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Sample completions for ``records`` and score them: everything the update needs."""
        ppo, model = self.ppo, self.model
        t0 = time.perf_counter()
        model.eval()
        enc, prefix_len = self.encode_prompts([r["prompt"] for r in records])
        max_new = random.randint(ppo["min_new_tokens"], ppo["max_new_tokens"])
        # the sampling pass also gives the policy's log-probs (its logits) and the values (value head on
        # its last hidden states): no second forward pass of the policy over the rollout
        gen_config = sampling_config(ppo, self.eos_ids, self.tok.pad_token_id, max_new)
        sequences, gen_logits, values = model.generate(prefix_len, **enc, generation_config=gen_config,
                                                       tokenizer=self.tok)
        response = sequences[:, enc["input_ids"].shape[1]:]
        mask = response_mask(response, self.tok, CLOSE_TAG, self.eos_ids)
        R, T, mb = response.shape[1], ppo["temperature"], ppo["mini_batch_size"]
        # log-probs of the sampling distribution (logits / temperature), in eval mode (no dropout)
        gen_logits = gen_logits.float() / T
        logprobs, entropy = logprobs_from_logits(gen_logits, response), entropy_from_logits(gen_logits)
        del gen_logits
        t1 = time.perf_counter()

        texts = [self.tok.decode(response[b][mask[b] > 0], skip_special_tokens=True) for b in range(len(records))]
        preds = [parse_answer(text, self.tasks[r["task"]]) for text, r in zip(texts, records)]
        scores = [score_prediction(p, r["label"], self.tasks[r["task"]], self.rule) for p, r in zip(preds, records)]
        input_ids = torch.cat([enc["input_ids"], response], dim=1)
        attention_mask = torch.cat([enc["attention_mask"], torch.ones_like(response)], dim=1)
        # the reference is the same model with the reference adapter (or none), in chunks of mini_batch_size
        ref_logprobs = []
        for chunk in (slice(s, s + mb) for s in range(0, len(records), mb)):
            ref_logits = model.reference_logits(input_ids[chunk], attention_mask[chunk], R, prefix_len)
            ref_logprobs.append(logprobs_from_logits(ref_logits.float() / T, response[chunk]))
        t2 = time.perf_counter()
        return {
            "input_ids": input_ids, "attention_mask": attention_mask, "response": response, "mask": mask.float(),
            "logprobs": logprobs, "ref_logprobs": torch.cat(ref_logprobs), "values": values, "entropy": entropy,
            "scores": torch.tensor(scores, dtype=torch.float32, device=self.device),
            "texts": texts, "preds": preds, "max_new_tokens": max_new, "prefix_len": prefix_len,
            "seconds_generation": t1 - t0, "seconds_scoring": t2 - t1,
        }

    def optimise(self, roll: dict[str, Any]) -> dict[str, float]:
        """KL-shaped rewards, GAE, then ``ppo_epochs`` of clipped PPO on shuffled minibatches."""
        ppo, mask = self.ppo, roll["mask"]
        rewards = compute_rewards(roll["scores"], roll["logprobs"], roll["ref_logprobs"], mask, self.kl_ctl.value)
        advantages, returns = gae(rewards, roll["values"], mask, ppo["gamma"], ppo["lam"])
        if ppo["whiten_advantages"]:
            advantages = whiten(advantages, mask)
        B, R, T = mask.shape[0], mask.shape[1], ppo["temperature"]
        mb, ga = ppo["mini_batch_size"], ppo["gradient_accumulation_steps"]
        n_mb = math.ceil(B / mb)
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "clipfrac", "value_clipfrac",
                                                          "approx_kl", "grad_norm")}
        # eval mode, as the rollout (and TRL 0.11's PPO): with LoRA dropout on here the first ratio would not be 1
        self.net.eval()
        for _ in range(ppo["ppo_epochs"]):
            perm = torch.randperm(B, device=self.device)
            for k in range(n_mb):
                idx = perm[k * mb:(k + 1) * mb]
                group_start = (k // ga) * ga
                group_size = min(ga, n_mb - group_start)
                sync = k == group_start + group_size - 1
                with nullcontext() if sync else self.acc.no_sync(self.net):
                    logits, values = self.net(roll["input_ids"][idx], roll["attention_mask"][idx], R,
                                              roll["prefix_len"])
                    logprobs = logprobs_from_logits(logits.float() / T, roll["response"][idx])
                    m = mask[idx]
                    pl, clipfrac, approx_kl = policy_loss(logprobs, roll["logprobs"][idx], advantages[idx], m,
                                                          ppo["cliprange"])
                    vl, vclipfrac = value_loss(values, roll["values"][idx], returns[idx], m, ppo["cliprange_value"])
                    loss = pl + ppo["vf_coef"] * vl
                    self._fail_if(not torch.isfinite(loss).item(), "loss")
                    self.acc.backward(loss / group_size)
                if sync:  # max_grad_norm null: no clipping (an infinite bound scales by 1), the norm is still logged
                    max_norm = math.inf if ppo["max_grad_norm"] is None else ppo["max_grad_norm"]
                    norm = self.acc.clip_grad_norm_(self.net.parameters(), max_norm)
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
                    stats["grad_norm"].append(float(norm))
                for key, val in (("policy_loss", pl), ("value_loss", vl), ("clipfrac", clipfrac),
                                 ("value_clipfrac", vclipfrac), ("approx_kl", approx_kl)):
                    stats[key].append(float(val.detach()))
        out = {k: sum(v) / len(v) for k, v in stats.items()}
        out["explained_variance"] = explained_variance(roll["values"], returns, mask)
        out["return_mean"] = float(masked_mean(returns, mask))
        return out

    def train_step(self) -> dict[str, Any]:
        """One PPO update on every process; returns its metrics, over the episodes of all processes.

        ``reward_mean``: mean rule score; ``accuracy``: right answers among classification episodes
        (None without any); ``invalid_rate``: unparseable answers; ``kl``: mean over episodes of the
        summed per-token ``logp - ref_logp``; ``kl_coef``: the coefficient used for this step's
        rewards (``kl_coef_next`` after the controller update); ``entropy``: mean per-token entropy of
        the sampling distribution; losses, clip fractions, ``approx_kl`` and ``grad_norm``: means over
        minibatches; ``tokens_per_second``: response tokens of all processes per second of the step;
        ``seconds_*``: generation (sampling, which also gives the policy's log-probs and values), scoring
        (rule reward and the reference forward),
        optimisation (GAE and the PPO epochs); ``pred_frac/<task>/<label word>`` and ``pred_frac/<task>/invalid``:
        shares of the task's episodes per answer (classification tasks; a warning when one answer takes
        over, see :func:`collapsed_answer`); with several tasks, ``task/<task>/reward_mean``,
        ``/accuracy`` and ``/invalid_rate`` per task (:meth:`_task_metrics`).
        """
        t0 = time.perf_counter()
        bs = self.ppo["batch_size"]
        idx = self.episode_indices(self.cursor + self.rank * bs, bs)
        records = [self.records[i] for i in idx]
        roll = self.rollout(records)
        scores = roll["scores"]
        self._fail_if(not torch.isfinite(scores).all().item(), "reward")
        kl_coef = self.kl_ctl.value
        t1 = time.perf_counter()
        opt_stats = self.optimise(roll)
        t2 = time.perf_counter()

        mask = roll["mask"]
        seq_kl = ((roll["logprobs"] - roll["ref_logprobs"]) * mask).sum(1)
        classif = [(p, r["label"]) for p, r in zip(roll["preds"], records) if not self.tasks[r["task"]].is_regression]
        sums = self._reduce([
            float(scores.sum()), len(records),
            sum(p is not None and int(p) == int(g) for p, g in classif), len(classif),
            sum(p is None for p in roll["preds"]), float(mask.sum()), float(seq_kl.sum()),
            float((roll["entropy"] * mask).sum()),
        ])
        n, n_tokens = sums[1], sums[5]
        means = self._reduce(list(opt_stats.values()) + [roll["seconds_generation"], roll["seconds_scoring"], t2 - t1,
                                                         roll["max_new_tokens"]], "mean")
        opt_stats = dict(zip(opt_stats, means))
        kl = sums[6] / n
        self.kl_ctl.update(kl, int(n))  # n_steps: episodes of this update, all processes
        step_seconds = time.perf_counter() - t0
        self.step += 1
        self.cursor += bs * self.world
        shares = self._answer_shares(records, roll["preds"])
        per_task = self._task_metrics(records, roll["preds"], scores) if len(self.tasks) > 1 else {}
        metrics = {
            "step": self.step, "reward_mean": sums[0] / n,
            "accuracy": sums[2] / sums[3] if sums[3] else None, "invalid_rate": sums[4] / n,
            "kl": kl, "kl_coef": kl_coef, "kl_coef_next": self.kl_ctl.value, "entropy": sums[7] / max(n_tokens, 1),
            **{k: opt_stats[k] for k in ("policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl",
                                         "grad_norm", "explained_variance", "return_mean")},
            "response_length": n_tokens / n, "max_new_tokens": means[-1], "episodes": int(n),
            "tokens_per_second": n_tokens / step_seconds, "seconds_generation": means[-4],
            "seconds_scoring": means[-3], "seconds_optimisation": means[-2], "seconds_step": step_seconds,
            **per_task, **shares,
        }
        metrics = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self.train_seconds += step_seconds
        self.last_metrics = metrics
        return metrics

    # -- the loop -----------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        steps, save_every = self.ppo["steps"], self.ppo["save_every"]
        if self.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        start_step, t_start = self.step, time.perf_counter()
        self._info("PPO: %d records, %d process(es) x %d rollouts per step, steps %d -> %d, device %s",
                   len(self.records), self.world, self.ppo["batch_size"], start_step, steps, self.device)
        bar = tqdm(total=steps, initial=start_step, desc="ppo", unit="step", disable=not self.main, mininterval=1.0)
        while self.step < steps:
            metrics = self.train_step()
            if self.main:
                with open(self.output_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(metrics) + "\n")
                for cb in self.callbacks:
                    cb(metrics)
                bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", kl=f"{metrics['kl']:.3f}")
            bar.update(1)
            if self.step % save_every == 0 or self.step == steps:
                self.save_checkpoint()
        bar.close()
        wall = time.perf_counter() - t_start
        ran = self.step - start_step
        summary = {
            "steps": self.step, "resumed_from_step": self.resumed_from, "steps_this_run": ran,
            "final_metrics": self.last_metrics, "wall_time_seconds": wall, "train_seconds_total": self.train_seconds,
            "seconds_per_step": wall / ran if ran else None,
            "episodes_per_second": ran * self.ppo["batch_size"] * self.world / wall if ran else None,
            "num_processes": self.world, "batch_size_per_process": self.ppo["batch_size"], "seed": self.seed,
            "model": self.model_id, "device": str(self.device), "collapse": self.collapse,
        }
        self.save_final(summary)
        return summary

    # -- files --------------------------------------------------------------------------------
    def _value_head_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().cpu().contiguous() for k, v in self.model.value_head.state_dict().items()}

    def save_checkpoint(self) -> None:
        """``checkpoints/step-N/``: adapter, value head, optimizer, KL controller, RNG of every process, data position.

        Written to a temporary folder and renamed (a crash leaves no half checkpoint); keeps the last two.
        """
        from accelerate.utils import gather_object
        from safetensors.torch import save_file

        rng = gather_object([rng_state()]) if self.world > 1 else [rng_state()]
        if self.main:
            root = self.output_dir / "checkpoints"
            final, tmp = root / f"step-{self.step}", root / f".step-{self.step}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.model.policy.save_pretrained(tmp / "adapter", selected_adapters=["default"])
            save_file(self._value_head_tensors(), tmp / "value_head.safetensors")
            torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
            write_json(tmp / "rng.json", rng)
            write_json(tmp / STATE_FILE, {
                "step": self.step, "cursor": self.cursor, "kl_controller": self.kl_ctl.state_dict(),
                "model": self.model_id, "seed": self.seed, "num_processes": self.world,
                "train_seconds": self.train_seconds, "last_metrics": self.last_metrics, "collapse": self.collapse,
            })
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            done = sorted((int(d.name[5:]), d) for d in root.glob("step-*") if d.name[5:].isdigit())
            for _, old in done[:-2]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("saved checkpoint %s", final)
        self.acc.wait_for_everyone()

    def _resume(self) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        ckpt = latest_checkpoint(self.output_dir)
        if ckpt is None:
            if self.main:  # metrics of an earlier attempt that crashed before its first checkpoint
                (self.output_dir / METRICS_FILE).unlink(missing_ok=True)
            return
        state = json.loads((ckpt / STATE_FILE).read_text())
        if state.get("model") != self.model_id:
            raise TrainingError(f"checkpoint {ckpt} was trained from another model ({state.get('model')}), not "
                                f"{self.model_id}; use another output folder or delete {ckpt.parent}")
        try:
            adapter = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
            result = set_peft_model_state_dict(self.model.policy, adapter)
            if getattr(result, "unexpected_keys", None):
                raise TrainingError(f"unexpected adapter weights {result.unexpected_keys[:3]}")
            self.model.value_head.load_state_dict(load_file(str(ckpt / "value_head.safetensors")))
            self.opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
        except (RuntimeError, ValueError, KeyError, TrainingError) as e:
            raise TrainingError(f"checkpoint {ckpt} does not fit this run (another LoRA config?): {e}") from e
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.step, self.cursor = int(state["step"]), int(state["cursor"])
        self.train_seconds, self.last_metrics = float(state.get("train_seconds", 0.0)), state.get("last_metrics", {})
        self.collapse = state.get("collapse", [])
        rng = json.loads((ckpt / "rng.json").read_text())
        if len(rng) == self.world:
            set_rng_state(rng[self.rank])
        else:
            log.warning("checkpoint has RNG states of %d processes, this run has %d: reseeding", len(rng), self.world)
            from .training import set_seed

            set_seed(self.seed + self.rank + 1_000_003 * self.step)
        self.resumed_from = self.step
        if self.main:  # metrics of steps after the checkpoint (a crash between them) are dropped
            path = self.output_dir / METRICS_FILE
            if path.is_file():
                lines = [ln for ln in path.read_text().splitlines()
                         if ln.strip() and json.loads(ln)["step"] <= self.step]
                path.write_text("".join(ln + "\n" for ln in lines))
        self._info("resuming from checkpoint %s at step %d", ckpt, self.step)

    def save_final(self, summary: dict[str, Any]) -> None:
        """The adapter (``save_pretrained``), ``value_head.safetensors`` and ``train_summary.json``."""
        from safetensors.torch import save_file

        if self.main:
            self.model.policy.save_pretrained(self.output_dir, selected_adapters=["default"])
            save_file(self._value_head_tensors(), self.output_dir / "value_head.safetensors")
            write_json(self.output_dir / "train_summary.json", summary)
            self._info("saved adapter, value head and summary to %s", self.output_dir)
        self.acc.wait_for_everyone()

    def dump_rank_state(self, out_dir: str | Path) -> Path:
        """Debugging: every process writes its trainable parameters to ``out_dir/rank{N}.safetensors``."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
        path = out / f"rank{self.rank}.safetensors"
        save_file(tensors, path)
        self.acc.wait_for_everyone()
        return path
