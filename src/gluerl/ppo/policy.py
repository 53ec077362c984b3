"""The model PPO trains: a LoRA policy and a value head on one backbone, and its forward passes.

:class:`PolicyWithValueHead` gives logits and values from one backbone pass, the reference policy's
logits (the frozen ``reference`` adapter, or the base model) and sampling that also returns the
logits and values of every sampled token. :func:`shared_forward` runs a batch whose rows share
their first columns (the chat template and the instruction) with that shared start computed once.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError, TrainingError

REFERENCE_ADAPTER = "reference"  # PEFT name of the frozen copy of the starting adapter (sft_ppo)


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
        from ..generation import batch_cache, cascade, cache_kwarg

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

    from ..generation import cache_kwarg

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
