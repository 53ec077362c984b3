"""What a rollout is and how it is sampled: the :class:`Rollout` record, the response mask, the
sampling settings, and the answer-collapse check over the rollouts' answers.

:meth:`gluerl.ppo.PPOTrainer.rollout` samples the completions and fills a :class:`Rollout`;
:meth:`~gluerl.ppo.PPOTrainer.optimise` and :meth:`~gluerl.ppo.PPOTrainer.train_step` read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from ..parsing import CLOSE_TAG
from .config import PPOConfig

if TYPE_CHECKING:
    from transformers import GenerationConfig

MIN_SHARED_PREFIX = 8  # shorter shared starts are not worth a pass of their own (ppo.share_prefix)


@dataclass(frozen=True)
class Rollout:
    """One rollout of B episodes: the sampled completions, scored, and all the update needs of them.

    P is the prompt width (left padded, or ``[shared prefix][padding][own tokens]``), R the number
    of generated tokens (the longest response of the batch).
    """

    input_ids: torch.Tensor  # [B, P + R] prompt then response tokens
    attention_mask: torch.Tensor  # [B, P + R] 0 on the prompts' padding, 1 elsewhere
    response: torch.Tensor  # [B, R] the sampled tokens
    mask: torch.Tensor  # [B, R] float, 1 on the response tokens that count (response_mask)
    logprobs: torch.Tensor  # [B, R] the policy's, of the sampling distribution (logits / temperature)
    ref_logprobs: torch.Tensor | None  # [B, R] the reference policy's, at the same temperature (None: a KL
    # coefficient of 0, which no controller moves from 0, needs no reference forward)
    values: torch.Tensor  # [B, R] the value head's, of the state each token was sampled in
    entropy: torch.Tensor  # [B, R] of the sampling distribution
    scores: torch.Tensor  # [B] float32, the rule reward of each episode
    texts: list[str]  # B decoded responses (the masked tokens)
    preds: list[Any]  # B parsed answers (None: unparseable)
    max_new_tokens: int  # the bound drawn for this batch
    prefix_len: int  # columns every row shares (0: plain left padding)
    seconds_generation: float  # sampling (which also gives logprobs and values)
    seconds_scoring: float  # the rule reward and the reference pass


def sampling_config(ppo: PPOConfig, eos_token_id: Sequence[int], pad_token_id: int | None,
                    max_new_tokens: int) -> GenerationConfig:
    """The rollout's ``GenerationConfig``, from the ``ppo`` config alone.

    Sampling with ``temperature``, ``top_k`` and ``top_p``, stopping at ``</Judgement>`` or EOS after at
    most ``max_new_tokens``; no repetition penalty or any other logits processor. The old log-probs
    are ``log_softmax(logits / temperature)``, so the tokens must be drawn from that distribution
    (with ``top_k: 0`` and ``top_p: 1``, exactly).
    """
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=True, temperature=float(ppo.temperature), top_k=int(ppo.top_k),
                            top_p=float(ppo.top_p), repetition_penalty=1.0, max_new_tokens=int(max_new_tokens),
                            min_new_tokens=0, stop_strings=[CLOSE_TAG], eos_token_id=list(eos_token_id),
                            pad_token_id=pad_token_id, num_beams=1, num_return_sequences=1)


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
