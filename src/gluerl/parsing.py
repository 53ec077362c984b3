"""Answer parsing: from generated text to a label id, a score, or ``None`` (invalid).

The prompt ends right after ``<Judgement>``; the model's continuation should be
``label</Judgement>``. We read the text before the first closing tag (all of it when the tag
never comes), find every label word in it as a whole word (longest words first, so
``not_entailment`` is not also read as ``entailment``), and accept the answer only when exactly
one label is named. Both or none named is invalid. STS-B parses the first number and clips it.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from .tasks import Task

OPEN_TAG = "<Judgement>"
CLOSE_TAG = "</Judgement>"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def answer_span(text: str) -> str:
    """The part of a completion that holds the answer: up to the first closing tag."""
    if not isinstance(text, str):
        return ""
    cut = text.find(CLOSE_TAG)
    span = text if cut < 0 else text[:cut]
    # a model that re-opens the tag ("<Judgement>positive") answers inside it
    if OPEN_TAG in span:
        span = span.rsplit(OPEN_TAG, 1)[1]
    return span


@lru_cache(maxsize=None)
def _label_pattern(words: tuple[str, ...]) -> re.Pattern:
    alts = sorted(words, key=len, reverse=True)
    body = "|".join(r"[\s_-]+".join(map(re.escape, re.split(r"[\s_-]+", w))) for w in alts)
    return re.compile(rf"(?<![A-Za-z0-9])({body})(?![A-Za-z0-9])", re.IGNORECASE)


def _normalise(word: str) -> str:
    return re.sub(r"[\s_-]+", "_", word.lower())


def parse_label(text: str, task: Task) -> int | None:
    """The label id named in ``text``, or None when none or more than one label is named."""
    words = task.answer_words()
    lookup = {_normalise(w): i for w, i in words.items()}
    found = {lookup.get(_normalise(m.group(1))) for m in _label_pattern(tuple(words)).finditer(answer_span(text))}
    found.discard(None)
    return found.pop() if len(found) == 1 else None


def parse_score(text: str, task: Task) -> float | None:
    """The first finite number in the answer span, clipped to the task's range; None if absent."""
    lo, hi = task.regression
    for m in _NUMBER.finditer(answer_span(text)):
        try:
            value = float(m.group(0))
        except ValueError:
            continue
        if math.isfinite(value):
            return min(max(value, lo), hi)
    return None


def parse_answer(text: str, task: Task) -> int | float | None:
    """A label id (classification), a clipped score (regression) or None for invalid."""
    return parse_score(text, task) if task.is_regression else parse_label(text, task)
