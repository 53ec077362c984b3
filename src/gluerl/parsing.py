"""Answer parsing: from generated text to a label id, a score, or ``None`` (invalid).

The prompt ends right after ``<Judgement>``; the model's continuation should be
``label</Judgement>``. We read the text before the first closing tag (all of it when the tag
never comes), find every label word in it as a whole word (longest words first, so
``not_entailment`` is not also read as ``entailment``), and accept the answer only when exactly
one label is named. Both or none named is invalid. STS-B parses the first number and clips it.

Negation. A negated label word never counts as that label ("jawf is not acceptable" is not
*acceptable*). A mention is negated when an odd number of negation cues (``not``, ``no``,
``never``, ``neither``, ``nor``, ``non``, ``cannot``, any ``...n't``: ``isn't``, ``don't``, also
without the apostrophe) stand among the :data:`NEGATION_WINDOW` words right before it, in the same
clause (no ``.,;:!?()`` or ``but`` in between) and after the previous label mention: "is not
acceptable", "isn't really acceptable", "I don't think it is acceptable", "non-entailment". With
exactly two labels a negated label names the other one ("not positive" is *negative*, as the
aliases ``not entailment`` and ``not equivalent`` already say); with three or more it names none
("not neutral" alone is invalid, "entailment, not neutral" is *entailment*). Label words that
contain a negation themselves (``not_entailment``, ``not equivalent``, ``unacceptable``) are
matched whole first, so they are never read as a negated ``entailment``; negating them flips
them in turn ("not unacceptable" is *acceptable*).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from .tasks import Task

OPEN_TAG = "<Judgement>"
CLOSE_TAG = "</Judgement>"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

NEGATION_WINDOW = 4  # a cue negates a label word when it is among the 4 words before it
NEGATION_CUES = frozenset({"not", "no", "never", "neither", "nor", "non", "cannot",
                           # contractions typed without the apostrophe
                           "isnt", "arent", "wasnt", "werent", "dont", "doesnt", "didnt", "cant",
                           "couldnt", "wouldnt", "shouldnt", "wont", "aint", "hasnt", "havent", "hadnt"})
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\[\]\n]|\bbut\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)?")


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


def is_negation(word: str) -> bool:
    """Whether one word is a negation cue: ``not``, ``no``, ``never``, ``isn't``, ``dont``..."""
    w = word.lower().replace("\u2019", "'")
    return w in NEGATION_CUES or w.endswith("n't")


def negated(prefix: str) -> bool:
    """Whether the text right before a label mention negates it (see the module docstring)."""
    clause = _CLAUSE_BREAK.split(prefix)[-1]
    window = _WORD.findall(clause)[-NEGATION_WINDOW:]
    return sum(map(is_negation, window)) % 2 == 1


def parse_label(text: str, task: Task) -> int | None:
    """The label id named in ``text``, or None when none or more than one label is named.

    A negated mention names the other label of a two-label task and no label otherwise.
    """
    words = task.answer_words()
    lookup = {_normalise(w): i for w, i in words.items()}
    span = answer_span(text)
    found, start = set(), 0
    for m in _label_pattern(tuple(words)).finditer(span):
        label = lookup.get(_normalise(m.group(1)))
        if label is not None and negated(span[start:m.start()]):
            others = [i for i in task.labels if i != label]
            label = others[0] if len(others) == 1 else None
        start = m.end()
        if label is not None:
            found.add(label)
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
