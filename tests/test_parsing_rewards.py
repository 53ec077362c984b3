import pytest

from gluerl.parsing import answer_span, parse_answer
from gluerl.rewards import RewardRule, reward
from gluerl.tasks import get_task

cola, rte, mnli, stsb, mrpc = (get_task(n) for n in ("cola", "rte", "mnli", "stsb", "mrpc"))


@pytest.mark.parametrize("text,task,expected", [
    ("acceptable</Judgement>", cola, 1),
    ("unacceptable</Judgement>", cola, 0),           # 'acceptable' inside 'unacceptable' is not a match
    ("UNACCEPTABLE.</Judgement>", cola, 0),
    (" Acceptable </Judgement> unacceptable", cola, 1),  # text after the closing tag is ignored
    ("acceptable or unacceptable</Judgement>", cola, None),  # both named: invalid
    ("I think so</Judgement>", cola, None),            # none named: invalid
    ("", cola, None),
    ("not_entailment</Judgement>", rte, 1),
    ("not entailment</Judgement>", rte, 1),
    ("Not-Entailment</Judgement>", rte, 1),
    ("entailment</Judgement>", rte, 0),
    ("entailment, not_entailment</Judgement>", rte, None),
    ("entailments</Judgement>", rte, None),            # not the word
    ("<Judgement>entailment</Judgement>", rte, 0),     # a re-opened tag
    ("neutral</Judgement>", mnli, 1),
    ("contradiction neutral", mnli, None),
    ("equivalent", mrpc, 1),                           # no closing tag: the whole text
    ("not_equivalent", mrpc, 0),
    ("3.8</Judgement>", stsb, 3.8),
    ("score: 7</Judgement>", stsb, 5.0),               # clipped
    ("-2</Judgement>", stsb, 0.0),
    (".5</Judgement>", stsb, 0.5),
    ("about 2.5 or 3</Judgement>", stsb, 2.5),         # first number
    ("high</Judgement>", stsb, None),
    ("nan</Judgement> 3", stsb, None),
])
def test_parse_answer(text, task, expected):
    assert parse_answer(text, task) == expected


def test_answer_span_handles_non_strings():
    assert answer_span(None) == ""


@pytest.mark.parametrize("text,gold,expected", [
    ("acceptable</Judgement>", 1, 1.0),
    ("unacceptable</Judgement>", 1, -1.0),
    ("acceptable unacceptable</Judgement>", 1, -3.0),
    ("blah", 0, -3.0),
])
def test_classification_rewards(text, gold, expected):
    assert reward(text, gold, cola) == expected


@pytest.mark.parametrize("text,gold,expected", [
    ("3.0</Judgement>", 3.0, 2.5),
    ("1.0</Judgement>", 4.0, -0.5),
    ("9</Judgement>", 0.0, -2.5),    # clipped to 5: 2.5 - 5
    ("no idea", 2.0, -2.5),
])
def test_regression_rewards(text, gold, expected):
    assert reward(text, gold, stsb) == pytest.approx(expected)


def test_reward_bounds():
    rule = RewardRule()
    assert rule.bounds(cola) == (-3.0, 1.0)
    assert rule.bounds(stsb) == (-2.5, 2.5)
