"""Batched generation for evaluation: tokenise once, sort by length, left-pad, stop at the tag.

Prompts are tokenised once up front and grouped into batches of similar length (less padding);
each batch runs ``model.generate`` with the KV cache, greedy by default, and stops a sequence as
soon as its text holds ``</Judgement>`` (or EOS); the batch ends when all its sequences stopped.
Completions come back in the input order, cut after the stop string.
"""

from __future__ import annotations

from typing import Sequence

from .parsing import CLOSE_TAG


def cut_at_stop(text: str, stop: str = CLOSE_TAG) -> str:
    i = text.find(stop)
    return text if i < 0 else text[: i + len(stop)]


def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 12, batch_size: int = 16,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             stop: str = CLOSE_TAG, progress: bool = True, desc: str = "generating") -> list[str]:
    """Completions for ``prompts`` (texts already rendered, ending with the opening tag)."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    enc = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
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
            batch = tokenizer.pad({"input_ids": [enc[i] for i in ids]}, padding=True, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            gen = model.generate(**batch, **gen_kw)
            new = gen[:, batch["input_ids"].shape[1]:]
            for i, text in zip(ids, tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = cut_at_stop(text, stop)
            bar.update(len(ids))
    bar.close()
    return out
