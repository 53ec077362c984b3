"""Answer drafts: exact greedy decoding that checks the task's own answers in one forward pass.

An evaluated model mostly writes one of a few known answers (``positive</Judgement>``,
``not_entailment</Judgement>``...), 5 to 10 tokens, and each greedy decoding step reads all the
weights for one token per row. Here, after the prefill gives each row its first greedy token, the
row's *draft* is the rest of the first answer whose tokens start with what the row has written;
one forward pass over every row's draft (with the KV cache) gives the greedy token after each
draft position. A row keeps the draft tokens as long as each equals the greedy token before it,
then the greedy token after the last kept one (speculative decoding whose draft model is the
answer list: the output is the greedy output, up to float rounding). The rejected draft positions
stay in the cache but are masked out (positions come from the mask, as for left padding), and the
row goes on from there: its next draft is again the rest of an answer that starts with what it
wrote (``1.`` then ``5</Judgement>``), or none, which is one ordinary decoding step. A row ends as
``generate`` ends it: end-of-sequence, the stop string (the same ``StopStringCriteria`` on the
prompt plus the tokens written) or ``max_new_tokens``.

Rows that are done stay in the batch (masked, their tokens ignored) until the batch ends: taking
them out would copy the cache. Greedy only; sampling keeps ``model.generate``.
"""

from __future__ import annotations

import inspect
from typing import Sequence

# generation_config fields whose other values add a logits processor at greedy (the draft path
# takes a plain argmax, so a model configured with one of them keeps model.generate)
_NEUTRAL = {"repetition_penalty": (1.0,), "encoder_repetition_penalty": (1.0,), "no_repeat_ngram_size": (0,),
            "encoder_no_repeat_ngram_size": (0,), "bad_words_ids": (), "min_length": (0,), "min_new_tokens": (0,),
            "forced_bos_token_id": (), "forced_eos_token_id": (), "suppress_tokens": (), "begin_suppress_tokens": (),
            "sequence_bias": (), "exponential_decay_length_penalty": (), "guidance_scale": (1.0,),
            "watermarking_config": (), "num_beams": (1,), "penalty_alpha": (), "dola_layers": (), "max_time": (),
            "stop_strings": ()}


def plain_greedy(model) -> bool:
    """Whether ``model.generate`` at greedy is a plain argmax for this model's generation config."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return True
    return all(getattr(config, k, None) in (None, *ok) for k, ok in _NEUTRAL.items())


def draft_sequences(tokenizer, drafts: Sequence[str], tail: str = "") -> list[tuple[int, ...]]:
    """Token sequences of the draft texts, each as tokenised alone and as tokenised after ``tail``
    (the prompts' end, e.g. the opening tag: a BPE merge across it can differ); no duplicates."""
    def enc(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    head = enc(tail) if tail else []
    seqs: list[tuple[int, ...]] = []
    for text in drafts:
        variants = [enc(text)]
        joined = enc(tail + text) if tail else []
        if head and joined[: len(head)] == head:
            variants.append(joined[len(head):])
        for v in map(tuple, variants):
            if v and v not in seqs:
                seqs.append(v)
    return seqs


def proposal(seqs: Sequence[tuple[int, ...]], written: Sequence[int], room: int) -> list[int]:
    """At most ``room`` draft tokens after ``written``: the rest of the first sequence that starts
    with it (and is longer), or none."""
    n, have = len(written), tuple(written)
    for s in seqs:
        if len(s) > n and s[:n] == have:
            return list(s[n : n + room])
    return []


def _forward(model, ids, mask, positions, past, keep: int):
    """(logits, cache) of one forward pass over ``ids`` after the cache ``past`` (None: a new one)."""
    from .generation import cache_kwarg

    kw = {cache_kwarg(): past} if past is not None else {}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if keep and "logits_to_keep" in inspect.signature(base.forward).parameters:
        kw["logits_to_keep"] = keep
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, return_dict=True, **kw)
    cache = getattr(out, "cache", None)
    return out.logits, (cache if cache is not None else out.past_key_values)


def _positions(mask, width: int):
    """Position ids of the last ``width`` columns of a 2D mask: valid positions counted, as
    ``generate`` derives them (masked columns get 0)."""
    pos = mask.long().cumsum(-1)[:, -width:] - 1
    return pos.masked_fill(mask[:, -width:] == 0, 0)


def greedy_with_drafts(model, ids, mask, past, seqs: Sequence[tuple[int, ...]], max_new_tokens: int,
                       stopping, eos: Sequence[int], pad_id: int, stats: dict | None = None) -> list[list[int]]:
    """The greedy tokens each row of ``ids``/``mask`` (a padded batch; ``past`` a cache holding its
    first positions, or None) generates, checked against the drafts ``seqs``: each row's list ends
    where ``model.generate`` would stop it (end-of-sequence ``eos``, ``stopping`` (a stopping
    criterion called on the prompt plus the tokens) or ``max_new_tokens``). ``stats`` (optional)
    counts forward passes (``forwards``), draft tokens kept (``accepted``) and drafts cut short
    (``rejected``: the row goes on from the tokens that agreed)."""
    import torch

    stats = stats if stats is not None else {}
    rows, eos = ids.shape[0], set(eos)
    n_past = past.get_seq_length() if past is not None else 0
    logits, past = _forward(model, ids[:, n_past:], mask, _positions(mask, ids.shape[1] - n_past), past, keep=1)
    stats["forwards"] = stats.get("forwards", 0) + 1
    tokens: list[list[int]] = [[t] for t in logits[:, -1].argmax(-1).tolist()]
    prompt = ids.cpu()

    def finished(r: int) -> bool:
        seq = tokens[r]
        if seq[-1] in eos or len(seq) >= max_new_tokens:
            return True
        whole = torch.cat([prompt[r], torch.tensor(seq, dtype=prompt.dtype)])[None]
        return bool(stopping(whole, None)[0])

    done = [finished(r) for r in range(rows)]
    while not all(done):
        fed, props = {}, {}
        for r in (r for r in range(rows) if not done[r]):
            props[r] = proposal(seqs, tokens[r], max_new_tokens - len(tokens[r]))
            fed[r] = [tokens[r][-1], *props[r][:-1]]  # the last draft token is only checked, not fed
        width = max(len(f) for f in fed.values())
        new = torch.full((rows, width), pad_id, dtype=ids.dtype)
        new_mask = torch.zeros((rows, width), dtype=mask.dtype)
        for r, f in fed.items():
            new[r, : len(f)] = torch.tensor(f, dtype=ids.dtype)
            new_mask[r, : len(f)] = 1
        start = mask.shape[1]
        mask = torch.cat([mask, new_mask.to(mask.device)], 1)
        logits, past = _forward(model, new.to(ids.device), mask, _positions(mask, width), past, keep=0)
        stats["forwards"] = stats.get("forwards", 0) + 1
        greedy = logits.argmax(-1).tolist()
        for r, f in fed.items():
            i = 0
            while True:  # greedy[r][i]: the token after f[i]; f[i + 1] was fed as the draft's guess of it
                tokens[r].append(greedy[r][i])
                done[r] = finished(r)
                if done[r] or i + 1 >= len(f) or greedy[r][i] != f[i + 1]:
                    rejected = not done[r] and i + 1 < len(f)
                    stats["rejected"] = stats.get("rejected", 0) + rejected
                    break
                stats["accepted"] = stats.get("accepted", 0) + 1
                i += 1
            mask[r, start + i + 1 :] = 0  # draft positions after the kept ones: out of the cache's view
    return tokens
