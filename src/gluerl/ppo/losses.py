"""PPO's pure functions: tensors ``[batch, resp_len]`` with a float mask (1 on the response tokens).

Masked statistics, GAE, the clipped policy and value losses, the KL-shaped per-token rewards, and
log-probs and entropies from logits. No state, no devices: everything here is unit-tested against
hand-computed numbers (``tests/test_ppo_math.py``).
"""

from __future__ import annotations

import torch

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


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out advantages of rollouts in groups of ``group_size`` consecutive rows (one prompt each).

    A row's return is its summed per-token reward (rule score and KL terms); its advantage, the same on
    every unmasked token, is that return minus the mean return of the other rows of its group (RLOO,
    Ahmadian et al. 2024): a prompt whose rollouts all score alike teaches nothing, and each prompt has
    its own baseline. Returns ``(advantages, returns)``, 0 where masked.
    """
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"group_advantages needs groups of at least 2 rows that divide the batch "
                         f"({rewards.shape[0]} rows, group size {group_size})")
    seq = (rewards * mask).sum(1).view(-1, group_size)
    baseline = (seq.sum(1, keepdim=True) - seq) / (group_size - 1)
    advantages = (seq - baseline).reshape(-1, 1) * mask
    returns = seq.reshape(-1, 1) * mask
    return advantages.detach(), returns.detach()


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


def compute_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None,
                    mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: ``-kl_coef * (logp - ref_logp)``, plus ``scores[b]`` on row b's last unmasked token
    (``ref_logprobs`` None: no KL term, as with ``kl_coef`` 0)."""
    if ref_logprobs is None:
        rewards = torch.zeros_like(logprobs)
    else:
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
