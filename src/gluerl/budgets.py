"""Token budgets checked against the answers they must hold.

The answer a model learns and is scored on is ``label_word</Judgement>`` (:func:`gluerl.prompts.answer_text`).
A generation budget shorter than that answer, in the model's own tokenizer, cuts it before the
closing tag: PPO and GRPO can then never learn the tag for that label, and evaluation reads a
truncated answer. ``not_entailment</Judgement>`` is 10 SmolLM2 tokens, so the demo's PPO with 6 to
8 new tokens could never close an RTE answer. Each stage checks its budget once its tokenizer is
loaded, before any model is:

- ``ppo.min_new_tokens`` (the shortest bound a batch draws; every batch must hold every answer),
- ``grpo.max_completion_length``,
- ``evaluation.max_new_tokens``.

SFT needs no check: ``sft.max_length`` bounds prompt and answer together, and over-long examples
are dropped or cut and counted (see :mod:`gluerl.sft`).

>>> from gluerl.tasks import get_task
>>> class Chars:  # a tokenizer with one token per character
...     def __call__(self, text, add_special_tokens=False):
...         return {"input_ids": list(text)}
>>> longest_answer([get_task("rte")], Chars())
('rte', 'not_entailment', 26)
"""

from __future__ import annotations

from typing import Iterable

from .errors import ConfigError
from .parsing import OPEN_TAG
from .prompts import answer_text
from .tasks import Task


def _answers(task: Task) -> list[tuple[str, str]]:
    """(label word, answer text) of every answer the task can be trained on or scored with."""
    if task.is_regression:
        lo, hi = task.regression
        steps = int(round((hi - lo) * 10))
        return [(task.label_word(lo + i / 10), answer_text(lo + i / 10, task)) for i in range(steps + 1)]
    return [(task.labels[i], answer_text(i, task)) for i in sorted(task.labels)]


def answer_texts(task: Task) -> list[str]:
    """Every answer text of ``task`` (``label_word</Judgement>``; a regression task's on its 0.1 grid)."""
    return [answer for _, answer in _answers(task)]


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_tokens(answer: str, tokenizer) -> int:
    """Tokens ``answer`` takes after the prompt's opening tag: the larger of its length alone and its
    length continuing ``<Judgement>`` (a BPE merge across the tag could change the count)."""
    return max(_count(tokenizer, answer), _count(tokenizer, OPEN_TAG + answer) - _count(tokenizer, OPEN_TAG))


def longest_answer(tasks: Iterable[Task], tokenizer) -> tuple[str, str, int]:
    """(task name, label word, tokens) of the longest answer over ``tasks`` in ``tokenizer``."""
    best = ("", "", 0)
    for task in tasks:
        for word, answer in _answers(task):
            n = answer_tokens(answer, tokenizer)
            if n > best[2]:
                best = (task.name, word, n)
    return best


def check_token_budget(key: str, budget: int, tasks: Iterable[Task], tokenizer) -> None:
    """Raise a ConfigError naming ``key``, the task, the label and the tokens needed when the longest
    answer of ``tasks`` does not fit ``budget`` tokens."""
    task, word, need = longest_answer(tasks, tokenizer)
    if need > int(budget):
        raise ConfigError(f"{key} is {budget}, but task {task!r} label {word!r} needs {need} tokens "
                          f"({word}</Judgement> in this model's tokenizer): set {key} to at least {need}")
