"""GLUE metrics and the benchmark average.

Every metric returns a fraction (0-1; correlations -1..1); tables show percent. A task's score is
the mean of its metrics (the leaderboard convention: MRPC/QQP average F1 and accuracy, STS-B
Pearson and Spearman), and the GLUE average is the mean of the task-column scores.

Invalid answers (parse failures) count as wrong: before scoring, a classification answer of
``None`` becomes a label that differs from the gold one, and a regression answer of ``None``
becomes the middle of the task's range.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

from .tasks import Task


def accuracy(gold: Sequence, pred: Sequence) -> float:
    g, p = np.asarray(gold), np.asarray(pred)
    return float(np.mean(g == p)) if len(g) else float("nan")


def f1(gold: Sequence, pred: Sequence, positive: int = 1) -> float:
    """Binary F1 of the positive class (0 when it is never predicted nor gold, as scikit-learn)."""
    g, p = np.asarray(gold) == positive, np.asarray(pred) == positive
    tp = float(np.sum(g & p))
    denom = float(np.sum(g) + np.sum(p))
    return 2 * tp / denom if denom else 0.0


def mcc(gold: Sequence, pred: Sequence) -> float:
    """Matthews correlation (multi-class form, as scikit-learn's); 0 when undefined."""
    g, p = np.asarray(gold), np.asarray(pred)
    classes = np.union1d(g, p)
    gi, pi = np.searchsorted(classes, g), np.searchsorted(classes, p)
    c = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(c, (gi, pi), 1)
    t_k, p_k = c.sum(axis=1), c.sum(axis=0)
    n, correct = c.sum(), np.trace(c)
    cov_ytyp = correct * n - t_k @ p_k
    cov_ypyp = n * n - p_k @ p_k
    cov_ytyt = n * n - t_k @ t_k
    denom = math.sqrt(cov_ytyt * cov_ypyp)
    return float(cov_ytyp / denom) if denom else 0.0


def _corr(fn, gold, pred) -> float:
    g, p = np.asarray(gold, dtype=float), np.asarray(pred, dtype=float)
    if len(g) < 2 or np.all(g == g[0]) or np.all(p == p[0]):
        return 0.0  # undefined (constant input): no correlation shown
    return float(fn(g, p)[0])


def pearson(gold: Sequence, pred: Sequence) -> float:
    return _corr(stats.pearsonr, gold, pred)


def spearman(gold: Sequence, pred: Sequence) -> float:
    return _corr(stats.spearmanr, gold, pred)


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def fill_invalid(gold: Sequence, pred: Sequence, task: Task) -> list:
    """Replace invalid (None) predictions by a wrong answer, as described above."""
    if task.is_regression:
        lo, hi = task.regression
        return [(lo + hi) / 2 if p is None else float(p) for p in pred]
    ids = sorted(task.labels)
    out = []
    for g, p in zip(gold, pred):
        if p is None:
            wrong = [i for i in ids if i != int(g)]
            p = wrong[0] if len(ids) == 2 else -1
        out.append(int(p))
    return out


def compute_metrics(gold: Sequence, pred: Sequence, task: Task) -> dict[str, float]:
    """The task's metrics, its ``score`` (their mean) and the ``invalid_rate``."""
    if len(gold) != len(pred):
        raise ValueError(f"{task.name}: {len(gold)} gold labels but {len(pred)} predictions")
    if not len(gold):
        raise ValueError(f"{task.name}: no examples to score")
    filled = fill_invalid(gold, pred, task)
    gold = [float(g) if task.is_regression else int(g) for g in gold]
    out = {name: METRICS[name](gold, filled) for name in task.metrics}
    out["score"] = float(np.mean([out[m] for m in task.metrics]))
    out["invalid_rate"] = sum(p is None for p in pred) / len(pred)
    return out


def benchmark_average(scores: dict[str, float]) -> float:
    """Mean of the per-column scores (NaNs, i.e. missing columns, make the average NaN)."""
    vals = list(scores.values())
    return float(np.mean(vals)) if vals else float("nan")
