"""Batched generation for evaluation: tokenise once, sort by length, left-pad, stop at the tag.

Prompts are tokenised once up front and grouped into batches of similar length (less padding);
each batch runs ``model.generate`` with the KV cache, greedy by default, and stops a sequence as
soon as its text holds ``</Judgement>`` (or EOS); the batch ends when all its sequences stopped.
Completions come back in the input order, cut after the stop string.

Shared prefix: the prompts of one file share their start (system prompt, instruction, and in
k-shot prompts the k demonstrations: most of each prompt). Its keys and values are computed once
and reused by every batch; each sequence is laid out as ``[prefix][padding][own suffix]`` with
the padding masked out, so positions (derived from the attention mask) stay those of the
unpadded prompt and the output is the same as without the cache.
"""

from __future__ import annotations

from typing import Sequence

from .parsing import CLOSE_TAG


def cut_at_stop(text: str, stop: str = CLOSE_TAG) -> str:
    i = text.find(stop)
    return text if i < 0 else text[: i + len(stop)]


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix, leaving every sequence at least one own token."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def prefix_cache(model, prefix_ids: Sequence[int]):
    """Keys and values of the shared prefix (batch of one)."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([list(prefix_ids)], device=device), use_cache=True)
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def _cache_kwarg() -> str:
    """``generate``'s name for a given cache: ``cache`` since transformers 5.24 (``past_key_values``,
    deprecated there, before)."""
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"


def _batch_inputs(tokenizer, seqs, prefix_len, device):
    """input_ids/attention_mask laid out as [prefix][left padding][suffix]."""
    import torch

    width = max(len(s) for s in seqs) - prefix_len
    ids = torch.full((len(seqs), prefix_len + width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        suffix = s[prefix_len:]
        ids[r, :prefix_len] = torch.tensor(s[:prefix_len], dtype=torch.long)
        ids[r, ids.shape[1] - len(suffix):] = torch.tensor(suffix, dtype=torch.long)
        mask[r, :prefix_len] = 1
        mask[r, ids.shape[1] - len(suffix):] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 12, batch_size: int = 16,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             stop: str = CLOSE_TAG, progress: bool = True, desc: str = "generating",
             share_prefix: bool = True, min_prefix: int = 16) -> list[str]:
    """Completions for ``prompts`` (texts already rendered, ending with the opening tag)."""
    import copy

    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    enc = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    prefix_len = common_prefix_length(enc) if share_prefix else 0
    cache = prefix_cache(model, enc[0][:prefix_len]) if prefix_len >= min_prefix else None
    if cache is None:
        prefix_len = 0
    out: list[str] = [""] * len(enc)
    gen_kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id,
                  stop_strings=[stop], tokenizer=tokenizer)
    if do_sample:
        gen_kw.update(temperature=temperature, top_p=top_p, top_k=0)
        torch.manual_seed(seed)
    else:
        gen_kw.update(temperature=None, top_p=None, top_k=None)
    bar = tqdm(total=len(enc), desc=desc, unit="ex", disable=not progress, mininterval=2.0)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            ids = order[b : b + batch_size]
            batch = _batch_inputs(tokenizer, [enc[i] for i in ids], prefix_len, device)
            if cache is not None:
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(ids))
                gen = model.generate(**batch, **{_cache_kwarg(): past}, **gen_kw)
            else:
                gen = model.generate(**batch, **gen_kw)
            new = gen[:, batch["input_ids"].shape[1]:]
            for i, text in zip(ids, tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = cut_at_stop(text, stop)
            bar.update(len(ids))
    bar.close()
    return out
