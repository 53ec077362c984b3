"""Rule rewards (the paper's): +1 right, -1 wrong, -3 unparseable or ambiguous;
STS-B: 2.5 - |pred - gold|, and -2.5 when no number can be read."""

from __future__ import annotations

from dataclasses import dataclass

from .parsing import parse_answer
from .tasks import Task


@dataclass(frozen=True)
class RewardRule:
    correct: float = 1.0
    wrong: float = -1.0
    invalid: float = -3.0
    regression_offset: float = 2.5
    regression_invalid: float = -2.5

    def bounds(self, task: Task) -> tuple[float, float]:
        """The closed range every reward for ``task`` lies in."""
        if task.is_regression:
            lo, hi = task.regression
            return (min(self.regression_invalid, self.regression_offset - (hi - lo)),
                    max(self.regression_invalid, self.regression_offset))
        vals = (self.correct, self.wrong, self.invalid)
        return (min(vals), max(vals))


def score_prediction(pred: int | float | None, gold: int | float, task: Task, rule: RewardRule = RewardRule()) -> float:
    """Reward for an already parsed prediction."""
    if task.is_regression:
        if pred is None:
            return rule.regression_invalid
        return rule.regression_offset - abs(float(pred) - float(gold))
    if pred is None:
        return rule.invalid
    return rule.correct if int(pred) == int(gold) else rule.wrong


def reward(completion: str, gold: int | float, task: Task, rule: RewardRule = RewardRule()) -> float:
    """Reward for a generated completion (the text after ``<Judgement>``)."""
    return score_prediction(parse_answer(completion, task), gold, task, rule)
