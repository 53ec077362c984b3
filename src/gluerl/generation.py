"""Batched generation for evaluation: tokenise once, sort by length, left-pad, stop at the tag.

Prompts are tokenised once up front and grouped into batches of similar length (less padding);
each batch runs ``model.generate`` with the KV cache, greedy by default, and stops a sequence as
soon as its text holds ``</Judgement>`` (or EOS); the batch ends when all its sequences stopped.
Completions come back in the input order, cut after the stop string.

Shared prefix: the prompts of one file share their start (system prompt, instruction, and in
k-shot prompts the k demonstrations: most of each prompt). Its keys and values are computed once
(and kept for the next call while the model's weights are unchanged) and reused by every batch;
each sequence is laid out as ``[prefix][padding][own suffix]`` with the padding masked out, so
positions (derived from the attention mask) stay those of the unpadded prompt and the output is
the same as without the cache. Each batch's cache is allocated once for the whole generation with
the prefix copied into every row; new positions are written in place (no copy of the cache per
decoding step).

Cascade attention (CPU, models on ``sdpa`` attention): while a batch generates, attention runs in
two parts that are merged by their log-sum-exp: every query of every row against the shared
prefix's keys and values at once (read once per layer, not once per row, and without the repeat
of grouped key/value heads), and each row against its own positions with its mask. The result is
the same attention, up to float rounding; 5-shot RTE prompts are ~90% prefix, so this is most of
the attention's memory traffic.

Answer drafts (greedy, ``drafts=`` a task's answers): after the prefill, one forward pass checks
each row's likely answer instead of one decoding step per token; rows whose greedy tokens differ
keep the agreeing ones and go on decoding (:mod:`gluerl.drafts`). The completions are the same.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
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


_PREFIX_MEMO: dict = {}


def shared_prefix_cache(model, prefix_ids: Sequence[int]):
    """:func:`prefix_cache`, computed once while the model and its weights stay the same.

    Consecutive calls with the same prefix (the splits of one task, chunks of a split) reuse the
    last one. The key holds the model itself (weakly) and every parameter's version counter, which
    any in-place update (an optimiser step, loading weights) bumps, so a changed model recomputes.
    The cache is never written to: batches copy it (:func:`batch_cache`).
    """
    import weakref

    params = list(model.parameters())
    key = (tuple(prefix_ids), tuple(p._version for p in params), params[0].device, params[0].dtype)
    hit = _PREFIX_MEMO.get("entry")
    if hit is not None and hit[0]() is model and hit[1] == key:
        return hit[2]
    cache = prefix_cache(model, prefix_ids)
    _PREFIX_MEMO["entry"] = (weakref.ref(model, lambda _: _PREFIX_MEMO.clear()), key, cache)
    return cache


class _PreallocatedLayer:
    """Mixin for ``DynamicLayer``: keys/values live in a buffer sized for the whole generation.

    ``DynamicLayer.update`` concatenates, copying the whole cache at every step (with a shared
    prefix of ~1000 tokens per sequence that copy was a fifth of a 5-shot evaluation's time). Here
    ``update`` writes the new positions in place and ``keys``/``values`` are views of the filled
    part; past the buffer's end it falls back to concatenation.
    """

    def fill(self, keys, values, batch: int, capacity: int) -> None:
        import torch

        b, h, n, d = keys.shape
        self._k = torch.empty((batch, h, max(capacity, n), d), dtype=keys.dtype, device=keys.device)
        self._v = torch.empty((batch, h, max(capacity, n), d), dtype=values.dtype, device=values.device)
        self._k[:, :, :n] = keys  # broadcast from a batch of one: one copy, no repeat then cat
        self._v[:, :, :n] = values
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        n, q = self.keys.shape[-2], key_states.shape[-2]
        if self.keys.data_ptr() != self._k.data_ptr() or n + q > self._k.shape[-2] \
                or key_states.shape[0] != self._k.shape[0]:
            return super().update(key_states, value_states, *args, **kwargs)
        self._k[:, :, n : n + q] = key_states
        self._v[:, :, n : n + q] = value_states
        self.keys, self.values = self._k[:, :, : n + q], self._v[:, :, : n + q]
        return self.keys, self.values


def batch_cache(prefix, batch: int, capacity: int):
    """A fresh cache for ``batch`` sequences of up to ``capacity`` positions, holding ``prefix``
    (a batch-of-one cache, or None for none) in every row; None when the cache is of a kind this
    does not handle (the caller then copies it the old way)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:
        return None
    if prefix is None:
        return None
    layers = getattr(prefix, "layers", None)
    if type(prefix) is not DynamicCache or not layers or any(type(l) is not DynamicLayer for l in layers):
        return None
    cls = _layer_class(DynamicLayer)
    new = []
    for layer in layers:
        fresh = cls()
        fresh.fill(layer.keys, layer.values, batch, capacity)
        new.append(fresh)
    past = copy.copy(prefix)
    past.layers = new
    return past


_LAYER_CLASS = {}


def _layer_class(base):
    if base not in _LAYER_CLASS:
        _LAYER_CLASS[base] = type("PreallocatedDynamicLayer", (_PreallocatedLayer, base), {})
    return _LAYER_CLASS[base]


CASCADE_ATTENTION = "gluerl_cascade_sdpa"
_CASCADE_PREFIX: contextvars.ContextVar[int | None] = contextvars.ContextVar("gluerl_cascade_prefix", default=None)


def cascade_attention(query, key, value, mask, prefix_len: int, scale: float | None = None):
    """Causal attention where the first ``prefix_len`` key/value positions are the same in every row.

    query (B, Hq, L, D); key, value (B, Hkv, S, D) with Hq a multiple of Hkv (grouped heads); mask
    boolean (B, 1, L, S) (True = may attend; every query may attend to the whole prefix) or None for
    plain causal attention with the queries at the end. Returns (B, L, Hq, D), as transformers'
    attention functions do. The prefix part treats all B x Hq x L queries as one batch against
    row 0's prefix; the own part is each row against its positions after the prefix; the two are
    merged with their log-sum-exps. CPU only (``aten._scaled_dot_product_flash_attention_for_cpu``,
    which returns the log-sum-exp).
    """
    import torch

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    b, hq, q_len, d = query.shape
    hkv = key.shape[1]
    g = hq // hkv
    n_own = key.shape[2] - prefix_len
    grouped = query.reshape(b, hkv, g * q_len, d)  # query head h reads key/value head h // g
    q_prefix = grouped.transpose(0, 1).reshape(1, hkv, b * g * q_len, d)
    out_p, lse_p = flash(q_prefix, key[:1, :, :prefix_len], value[:1, :, :prefix_len], scale=scale)
    out_p = out_p.reshape(hkv, b, g * q_len, d).transpose(0, 1)
    lse_p = lse_p.reshape(hkv, b, g * q_len).transpose(0, 1)
    if mask is None:
        own = torch.ones(q_len, n_own, dtype=torch.bool, device=query.device).tril(n_own - q_len)
        own = own[None, None].expand(b, 1, q_len, n_own)
    else:
        own = mask[..., prefix_len:]
    own = own.unsqueeze(2).expand(b, 1, g, q_len, n_own).reshape(b, 1, g * q_len, n_own)
    additive = torch.zeros(own.shape, dtype=query.dtype, device=query.device).masked_fill_(~own, float("-inf"))
    out_o, lse_o = flash(grouped, key[:, :, prefix_len:], value[:, :, prefix_len:], attn_mask=additive,
                         scale=scale)
    # a query with no own position to attend to (left padding) gets out 0 and log-sum-exp 0 from the
    # kernel; its own part must weigh nothing
    lse_o = lse_o.masked_fill(~own.any(-1), float("-inf"))
    lse = torch.logaddexp(lse_p, lse_o)
    w_p, w_o = torch.exp(lse_p - lse).unsqueeze(-1), torch.exp(lse_o - lse).unsqueeze(-1)
    out = out_p * w_p + torch.where(w_o > 0, out_o, 0.0) * w_o
    return out.to(query.dtype).reshape(b, hq, q_len, d).transpose(1, 2)


def _cascade_or_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                     **kwargs):
    """transformers attention function: :func:`cascade_attention` while :func:`cascade` is active and
    the call is one it covers, transformers' ``sdpa`` otherwise."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix_len = _CASCADE_PREFIX.get()
    plain = (prefix_len is None or key.shape[2] <= prefix_len or query.shape[0] < 2 or dropout
             or query.device.type != "cpu" or query.shape[1] % key.shape[1]
             or (attention_mask is not None and (attention_mask.dtype != torch.bool
                                                 or attention_mask.shape[-1] != key.shape[2]))
             or is_causal is False or getattr(module, "is_causal", True) is False
             or any(kwargs.get(k) is not None for k in ("sliding_window", "softcap", "position_bias", "s_aux")))
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    return cascade_attention(query, key, value, attention_mask, prefix_len, scaling), None


def _register_cascade() -> bool:
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        return False
    if CASCADE_ATTENTION not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(CASCADE_ATTENTION, _cascade_or_sdpa)
        ALL_MASK_ATTENTION_FUNCTIONS.register(CASCADE_ATTENTION, sdpa_mask)
    return True


@contextlib.contextmanager
def cascade(model, prefix_len: int):
    """Within the block, ``model`` (on ``sdpa`` attention, on the CPU) attends with
    :func:`cascade_attention` over a shared prefix of ``prefix_len`` positions; any other model,
    or none, is left as it is. The model's attention implementation is restored afterwards."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    device = next(model.parameters()).device
    switchable = getattr(base, "_can_set_attn_implementation", lambda: hasattr(base, "set_attn_implementation"))
    if (prefix_len <= 0 or config is None or getattr(config, "_attn_implementation", None) != "sdpa"
            or device.type != "cpu" or not switchable() or not _register_cascade()):
        yield False
        return
    try:
        base.set_attn_implementation(CASCADE_ATTENTION)
    except (ValueError, KeyError, ImportError):  # a model that refuses the registered name keeps sdpa
        base.set_attn_implementation("sdpa")
    if config._attn_implementation != CASCADE_ATTENTION:
        yield False
        return
    token = _CASCADE_PREFIX.set(prefix_len)
    try:
        yield True
    finally:
        base.set_attn_implementation("sdpa")
        _CASCADE_PREFIX.reset(token)


def cache_kwarg() -> str:
    """The name of a given cache in ``generate`` and in a model's ``forward``: ``cache`` since
    transformers 5.24 (``past_key_values``, deprecated there, before)."""
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"


def shared_prefix_batch(tokenizer, seqs, prefix_len, device):
    """input_ids/attention_mask of token lists ``seqs`` whose first ``prefix_len`` tokens are the same,
    laid out as [prefix][left padding][suffix] (plain left padding for ``prefix_len`` 0)."""
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
             share_prefix: bool = True, min_prefix: int = 16, cascade_prefix: bool = True,
             drafts: Sequence[str] | None = None, stats: dict | None = None) -> list[str]:
    """Completions for ``prompts`` (texts already rendered, ending with the opening tag).

    ``drafts``: texts the completions are likely to be (a task's answers, ``label</Judgement>``); at
    greedy, each batch checks them in one forward pass instead of one decoding step per token
    (:mod:`gluerl.drafts`; the same completions). ``stats`` (a dict) gets the draft path's counts."""
    import torch
    from tqdm.auto import tqdm
    from transformers import StoppingCriteriaList, StopStringCriteria

    from .drafts import draft_sequences, greedy_with_drafts, plain_greedy

    device = next(model.parameters()).device
    enc = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    prefix_len = common_prefix_length(enc) if share_prefix else 0
    cache = shared_prefix_cache(model, enc[0][:prefix_len]) if prefix_len >= min_prefix else None
    if cache is None:
        prefix_len = 0
    out: list[str] = [""] * len(enc)
    # the stop-string matcher is built once per call, not once per batch (~70 ms each for a 49k vocabulary)
    stopping = StopStringCriteria(tokenizer, [stop])
    gen_kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id,
                  stopping_criteria=StoppingCriteriaList([stopping]))
    if do_sample:
        gen_kw.update(temperature=temperature, top_p=top_p, top_k=0)
        torch.manual_seed(seed)
    else:
        gen_kw.update(temperature=None, top_p=None, top_k=None)
    seqs = None
    if drafts and not do_sample and enc and plain_greedy(model):
        seqs = draft_sequences(tokenizer, drafts, tail=prompts[0].rsplit("\n", 1)[-1][-32:])
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    bar = tqdm(total=len(enc), desc=desc, unit="ex", disable=not progress, mininterval=2.0)
    with torch.inference_mode(), cascade(model, prefix_len if cascade_prefix else 0):
        for b in range(0, len(order), batch_size):
            ids = order[b : b + batch_size]
            batch = shared_prefix_batch(tokenizer, [enc[i] for i in ids], prefix_len, device)
            width = batch["input_ids"].shape[1]
            # rejected draft positions stay in the cache (masked): room for a second round of them
            past = batch_cache(cache, len(ids), width + max_new_tokens * (2 if seqs else 1))
            if past is None and cache is not None:  # a cache class this module does not know: copy per sequence
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(ids))
            if seqs:
                new = greedy_with_drafts(model, batch["input_ids"], batch["attention_mask"], past, seqs,
                                         max_new_tokens, stopping, eos, tokenizer.pad_token_id, stats)
            else:
                gen = model.generate(**batch, **({cache_kwarg(): past} if past is not None else {}), **gen_kw)
                new = gen[:, width:]
            for i, text in zip(ids, tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = cut_at_stop(text, stop)
            bar.update(len(ids))
    bar.close()
    return out
