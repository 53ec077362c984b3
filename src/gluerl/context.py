"""Prompts longer than the model's context: a stated policy, counted and reported, never a silent cut.

A prompt fits when its tokens plus the answer budget (``max_new_tokens``) are within the model's
context (``max_position_embeddings`` of its config, or ``evaluation.max_prompt_tokens`` when set).
``evaluation.context_overflow`` says what happens to one that does not:

- ``error``: stop, naming the prompt file and line and both lengths;
- ``truncate_middle`` (default): keep the first and the last tokens, drop the middle: the
  instruction at the start and the question's end with the answer format (and ``<Judgement>``)
  survive, part of the longest middle stretch (a long passage or the demonstrations) goes;
- ``truncate_left``: drop tokens from the start (the instruction and demonstrations go first).

Every cut is counted; evaluation writes the count and the policy into each column of its JSON and
logs a warning naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

POLICIES = ("error", "truncate_middle", "truncate_left")


@dataclass
class ContextReport:
    policy: str
    limit: int | None
    truncated: int = 0
    lines: list[int] = field(default_factory=list)  # 1-based rows of the prompt file that were cut
    longest: int = 0

    def as_dict(self) -> dict:
        return {"context_overflow": self.policy, "max_prompt_tokens": self.limit, "prompts_truncated": self.truncated}


def model_context(model) -> int | None:
    """The longest sequence the model takes (``max_position_embeddings`` or ``n_positions``), if it says."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def prompt_budget(model, max_new_tokens: int, max_prompt_tokens: int | None = None) -> int | None:
    """Tokens a prompt may take: ``max_prompt_tokens`` if set, else the context minus the answer budget."""
    if max_prompt_tokens is not None:
        return int(max_prompt_tokens)
    ctx = model_context(model)
    if ctx is None:
        return None
    if ctx <= max_new_tokens:
        raise ConfigError(f"evaluation.max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                          f"context of {ctx} tokens")
    return ctx - max_new_tokens


def cut_ids(ids: Sequence[int], limit: int, policy: str) -> list[int]:
    """``ids`` shortened to ``limit`` tokens by ``policy`` (``truncate_middle`` or ``truncate_left``)."""
    ids = list(ids)
    if len(ids) <= limit:
        return ids
    if limit <= 0:
        return []
    if policy == "truncate_left":
        return ids[len(ids) - limit:]
    if policy == "truncate_middle":
        head = limit // 2
        tail = limit - head
        return ids[:head] + ids[len(ids) - tail:]
    raise ConfigError(f"evaluation.context_overflow must be one of {list(POLICIES)}, not {policy!r}")


def fit_prompts(prompts: Sequence[str], tokenizer, limit: int | None, policy: str = "truncate_middle",
                source: str | Path | None = None) -> tuple[list[str], ContextReport]:
    """The prompts, those over ``limit`` tokens cut by ``policy``, and a report of what was cut.

    ``source`` (the prompt file) names where an over-long prompt came from; prompt ``i`` is its line ``i + 1``.
    Cut prompts are decoded back to text; a cut that re-encodes longer (a character split in two)
    drops one more token until it fits.
    """
    if policy not in POLICIES:
        raise ConfigError(f"evaluation.context_overflow must be one of {list(POLICIES)}, not {policy!r}")
    report = ContextReport(policy, limit)
    if limit is None or not prompts:
        return list(prompts), report
    enc = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    out = list(prompts)
    where = source if source is not None else "prompts"
    for i, ids in enumerate(enc):
        report.longest = max(report.longest, len(ids))
        if len(ids) <= limit:
            continue
        if policy == "error":
            raise DataError(f"prompt has {len(ids)} tokens, more than the {limit} the model's context leaves "
                            f"(evaluation.context_overflow: error; choose truncate_middle or truncate_left, "
                            f"or fewer shots)", where, i + 1)
        budget = limit
        while True:
            text = tokenizer.decode(cut_ids(ids, budget, policy), skip_special_tokens=False)
            if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= limit or budget <= 1:
                break
            budget -= 1
        out[i] = text
        report.truncated += 1
        report.lines.append(i + 1)
    if report.truncated:
        shown = ", ".join(map(str, report.lines[:10])) + (" ..." if len(report.lines) > 10 else "")
        log.warning("%s: %d of %d prompts longer than %d tokens (longest %d) cut by %s (lines %s)", where,
                    report.truncated, len(prompts), limit, report.longest, policy, shown)
    return out, report
