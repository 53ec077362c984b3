"""A negated label word never counts as that label (issue 13, defect 6).

"jawf is not acceptable in this sentence." was read as *acceptable* and rewarded +1. For every
classification task in the registry and every word it accepts, generated negations ("not w",
"isn't w", "it is not really w.", "non-w", ...) never parse as w: with two labels they name the
other label, with three or more none. Label words that hold a negation themselves
(``not_entailment``, ``not equivalent``, ``unacceptable``) still parse as themselves.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gluerl.parsing import parse_answer
from gluerl.tasks import get_task, registry

CLASSIFIERS = sorted((t for t in registry().values() if not t.is_regression), key=lambda t: t.name)
CUES = ["not", "no", "never", "isn't", "is not", "not really", "is not really", "isnt", "don't think it's",
        "doesn't seem", "wasn't", "can't be", "cannot be", "won't be", "aren\u2019t", "is definitely not",
        "NOT", "Not"]
FILLER = ["it", "is", "this", "the", "sentence", "answer", "seems", "to", "me", "I", "think", "here", "really"]
CASES = [(t, w, i) for t in CLASSIFIERS for w, i in sorted(t.answer_words().items())]


def expected_for_negated(task, label):
    others = [i for i in task.labels if i != label]
    return others[0] if len(others) == 1 else None


def variants(word):
    return st.sampled_from([word, word.upper(), word.capitalize(), word.replace("_", " "), word.replace("_", "-")])


@st.composite
def negated_answer(draw):
    task, word, label = draw(st.sampled_from(CASES))
    before = draw(st.lists(st.sampled_from(FILLER), max_size=3))
    cue = draw(st.sampled_from(CUES))
    between = draw(st.lists(st.sampled_from(["really", "quite", "grammatically", "fully"]), max_size=1))
    after = draw(st.lists(st.sampled_from(FILLER), max_size=3))
    end = draw(st.sampled_from(["", ".", " .", "!", "</Judgement>", ".</Judgement> acceptable"]))
    text = " ".join([*before, cue, *between, draw(variants(word)), *after]) + end
    return task, word, label, cue, text


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=negated_answer())
def test_a_negated_label_word_never_parses_as_that_label(case):
    task, word, label, cue, text = case
    # a cue that is itself a label word of the task (BoolQ's and ReCoRD's "No") is read as that label
    assume(not any(w in task.answer_words() for w in cue.lower().split()))
    pred = parse_answer(text, task)
    assert pred != label, (task.name, text, pred)
    assert pred == expected_for_negated(task, label), (task.name, text, pred)


@pytest.mark.parametrize("task,word,label", CASES, ids=[f"{t.name}-{w}" for t, w, _ in CASES])
@pytest.mark.parametrize("template", ["not {w}", "isn't {w}", "it is not {w}.", "It is not really {w}.",
                                      "This is never {w}", "non-{w}", "I don't think it is {w}</Judgement>"])
def test_every_label_word_negated(task, word, label, template):
    text = template.format(w=word)
    pred = parse_answer(text, task)
    assert pred != label, (task.name, text)
    if not (task.name in {"boolq", "record"} and word.lower() == "no" and template.startswith("no")):
        assert pred == expected_for_negated(task, label), (task.name, text, pred)


@pytest.mark.parametrize("task,word,label", CASES, ids=[f"{t.name}-{w}" for t, w, _ in CASES])
def test_plain_label_words_still_parse(task, word, label):
    for text in (word, f"{word}</Judgement>", f"The answer is {word}.", f"it is {word.replace('_', ' ')}"):
        assert parse_answer(text, task) == label, (task.name, text)


cola, sst2, rte, mnli, mrpc, boolq = (get_task(n) for n in ("cola", "sst2", "rte", "mnli", "mrpc", "boolq"))


@pytest.mark.parametrize("text,task,expected", [
    ("jawf is not acceptable in this sentence.", cola, 0),   # the rollout rewarded +1 in issue 13
    ("not positive</Judgement>", sst2, 0),
    ("not acceptable</Judgement>", cola, 0),
    ("not unacceptable</Judgement>", cola, 1),            # a negated 'unacceptable' is the other label
    ("not_entailment</Judgement>", rte, 1),              # negations inside label words still parse
    ("not entailment</Judgement>", rte, 1),
    ("isn't entailment</Judgement>", rte, 1),
    ("not equivalent</Judgement>", mrpc, 0),
    ("isn't equivalent</Judgement>", mrpc, 0),
    ("non-entailment</Judgement>", rte, 1),
    ("unacceptable</Judgement>", cola, 0),
    ("not neutral</Judgement>", mnli, None),             # three labels: a negation names none
    ("entailment, not neutral</Judgement>", mnli, 0),
    ("contradiction, not entailment</Judgement>", mnli, 2),
    ("acceptable, not unacceptable</Judgement>", cola, 1),
    ("No, it is acceptable.</Judgement>", cola, 1),       # the cue ends at the clause break
    ("There is no doubt that it is acceptable", cola, 1),   # too far from the label word
    ("not only grammatical but acceptable", cola, 1),
    ("not not acceptable", cola, 1),                       # a double negation cancels
    ("No</Judgement>", boolq, 0),                          # a label word that is also a cue
    ("not True</Judgement>", boolq, 0),
    ("acceptable</Judgement> not", cola, 1),
    ("Acceptable? Not really.</Judgement>", cola, 1),    # the cue comes after: not read back
])
def test_negation_examples(text, task, expected):
    assert parse_answer(text, task) == expected


@pytest.mark.parametrize("word,cue", [("not", True), ("isn't", True), ("ISN\u2019T", True), ("dont", True),
                                      ("never", True), ("no", True), ("nothing", False), ("note", False),
                                      ("want", False), ("it's", False)])
def test_negation_cues(word, cue):
    from gluerl.parsing import is_negation

    assert is_negation(word) is cue
