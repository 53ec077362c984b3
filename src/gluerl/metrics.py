"""GLUE and SuperGLUE metrics, bootstrap confidence intervals and the benchmark average.

Every metric returns a fraction (0-1; correlations -1..1); tables show percent. A task's score is
the mean of its metrics (the leaderboard convention: MRPC/QQP average F1 and accuracy, STS-B
Pearson and Spearman, CB accuracy and macro-F1, MultiRC EM and F1a, ReCoRD F1 and EM), and the
benchmark average is the mean of the task-column scores.

Grouped tasks are scored per group (:func:`gluerl.tasks.group_key`): MultiRC's exact match is the
fraction of questions whose answer options are all judged right and F1a the binary F1 over every
answer option; a ReCoRD query's prediction is the first candidate entity judged "Yes" (none: no
prediction, F1 and EM 0), scored with SQuAD's normalised token F1 and exact match, the maximum over
the gold answers.
(An invalid ReCoRD answer becomes the wrong yes/no like any invalid answer: "Yes" for a wrong
candidate, "No" for a gold one, so it never helps its query.)

Confidence intervals (:func:`bootstrap`) resample the scoring units with replacement (examples,
or whole questions/queries for grouped tasks) a seeded number of times and take the percentile
interval of every metric and of the score. :func:`resampled_scores` gives the score on each draw,
so that two methods scored on the same draws give a paired interval of their difference
(:mod:`gluerl.paired`), with :func:`bootstrap_p` its p-value.

Invalid answers (parse failures) count as wrong: before scoring, a classification answer of
``None`` becomes a label that differs from the gold one, and a regression answer of ``None``
becomes the middle of the task's range.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from .tasks import Task, group_key


def accuracy(gold: Sequence, pred: Sequence) -> float:
    g, p = np.asarray(gold), np.asarray(pred)
    return float(np.mean(g == p)) if len(g) else float("nan")


def f1(gold: Sequence, pred: Sequence, positive: int = 1) -> float:
    """Binary F1 of the positive class (0 when it is never predicted nor gold, as scikit-learn)."""
    g, p = np.asarray(gold) == positive, np.asarray(pred) == positive
    tp = float(np.sum(g & p))
    denom = float(np.sum(g) + np.sum(p))
    return 2 * tp / denom if denom else 0.0


def macro_f1(gold: Sequence, pred: Sequence) -> float:
    """Unweighted mean of the per-class F1 over the classes in gold or predictions (as scikit-learn's
    ``average="macro"``); an invalid prediction (negative id) is wrong for its gold class but no class."""
    g, p = np.asarray(gold), np.asarray(pred)
    classes = [c for c in np.union1d(g, p) if c >= 0]
    return float(np.mean([f1(g, p, positive=c) for c in classes])) if classes else 0.0


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


# scipy.stats is imported when a correlation is computed: importing it takes about 2 s, and the
# Snakefile imports this module (through gluerl.transfer) every time Snakemake plans a DAG
def pearson(gold: Sequence, pred: Sequence) -> float:
    from scipy import stats

    return _corr(stats.pearsonr, gold, pred)


def spearman(gold: Sequence, pred: Sequence) -> float:
    from scipy import stats

    return _corr(stats.spearmanr, gold, pred)


METRICS = {"accuracy": accuracy, "f1": f1, "macro_f1": macro_f1, "mcc": mcc, "pearson": pearson,
           "spearman": spearman}


# ---- SQuAD-style answer comparison (ReCoRD), as the official SuperGLUE evaluation ----
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def best_over_gold(fn: Callable[[str, str], float], prediction: str | None, answers: Sequence[str]) -> float:
    """The best score of a prediction against any gold answer (0 without a prediction)."""
    if prediction is None or not answers:
        return 0.0
    return max(fn(prediction, a) for a in answers)


# ---- scoring units: what a bootstrap resamples ----
def _groups(meta: Sequence[dict] | None, n: int, task: Task) -> list[list[int]]:
    if meta is None or len(meta) != n:
        raise ValueError(f"{task.name}: grouped metrics need the {n} examples' records (idx) to group them")
    members: dict[tuple, list[int]] = {}
    for i, m in enumerate(meta):
        members.setdefault(group_key(m["idx"]), []).append(i)
    return list(members.values())


def scoring_units(gold: Sequence, filled: Sequence, task: Task, meta: Sequence[dict] | None = None
                  ) -> tuple[int, Callable[[np.ndarray], dict[str, float]]]:
    """(number of units, function: unit indices -> the task's metrics on those units).

    Units are examples, or groups (questions, queries) for grouped tasks; the metrics over all
    units ``np.arange(n)`` are the point estimates, over resampled indices a bootstrap replicate.
    """
    g, p = np.asarray(gold), np.asarray(filled)
    if not task.grouped:
        return len(g), lambda ix: {m: METRICS[m](g[ix], p[ix]) for m in task.metrics}
    groups = _groups(meta, len(g), task)
    if set(task.metrics) <= {"multirc_em", "multirc_f1a"}:
        em = np.array([float(np.all(g[ix] == p[ix])) for ix in groups])
        tp = np.array([np.sum((g[ix] == 1) & (p[ix] == 1)) for ix in groups], dtype=float)
        fp = np.array([np.sum((g[ix] != 1) & (p[ix] == 1)) for ix in groups], dtype=float)
        fn = np.array([np.sum((g[ix] == 1) & (p[ix] != 1)) for ix in groups], dtype=float)

        def multirc(ix):
            denom = 2 * tp[ix].sum() + fp[ix].sum() + fn[ix].sum()
            out = {"multirc_em": float(em[ix].mean()), "multirc_f1a": float(2 * tp[ix].sum() / denom) if denom else 0.0}
            return {m: out[m] for m in task.metrics}
        return len(groups), multirc
    if set(task.metrics) <= {"record_f1", "record_em"}:
        f1s, ems = [], []
        for ix in groups:
            chosen = [meta[i]["entity"] for i in ix if p[i] == 1]
            answers = meta[ix[0]]["answers"]
            f1s.append(best_over_gold(token_f1, chosen[0] if chosen else None, answers))
            ems.append(best_over_gold(exact_match, chosen[0] if chosen else None, answers))
        f1a, ema = np.array(f1s), np.array(ems)

        def record(ix):
            out = {"record_f1": float(f1a[ix].mean()), "record_em": float(ema[ix].mean())}
            return {m: out[m] for m in task.metrics}
        return len(groups), record
    raise ValueError(f"{task.name}: no grouped scoring for metrics {task.metrics}")


def bootstrap(n_units: int, score_fn: Callable[[np.ndarray], dict[str, float]], resamples: int = 1000,
              seed: int = 0, confidence: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap interval of every metric and of the score (their mean).

    ``resamples`` draws of ``n_units`` unit indices with replacement from ``np.random.default_rng(seed)``;
    returns ``{metric: [low, high], ..., "score": [low, high]}``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        vals = score_fn(rng.integers(0, n_units, n_units))
        vals["score"] = float(np.mean(list(vals.values())))
        for k, v in vals.items():
            draws.setdefault(k, []).append(v)
    tail = 100 * (1 - confidence) / 2
    return {k: [float(x) for x in np.nanpercentile(v, [tail, 100 - tail])] for k, v in draws.items()}


def resampled_scores(n_units: int, score_fn: Callable[[np.ndarray], dict[str, float]], resamples: int = 1000,
                     seed: int | Sequence[int] = 0) -> np.ndarray:
    """The score (mean of the metrics, each recomputed) on each of ``resamples`` bootstrap draws.

    The draws are :func:`bootstrap`'s for the same ``seed``: ``n_units`` unit indices with replacement
    from ``np.random.default_rng(seed)``. Two score functions over the same units in the same order,
    given the same seed, are scored on the same draws, so their difference draw by draw is a paired
    bootstrap of the difference of their scores.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for b in range(resamples):
        out[b] = np.mean(list(score_fn(rng.integers(0, n_units, n_units)).values()))
    return out


def percentile_interval(draws: np.ndarray, confidence: float = 0.95) -> list[float]:
    """The percentile bootstrap interval ``[low, high]`` of some draws (as :func:`bootstrap`)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    tail = 100 * (1 - confidence) / 2
    return [float(x) for x in np.nanpercentile(draws, [tail, 100 - tail])]


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference" from resampled differences ``diffs``.

    ``min(1, 2 * min(1 + #(d <= 0), 1 + #(d >= 0)) / (B + 1))`` over the B draws: twice the smaller
    share of draws on either side of 0, counted with the observed sample as one more draw (so p is
    never 0: 1000 resamples resolve it down to 2/1001). p falls below 1 - confidence about when the
    percentile interval of the difference excludes 0; identical predictions give p = 1.
    """
    d = np.asarray(diffs, dtype=float)
    below, above = int(np.sum(d <= 0)), int(np.sum(d >= 0))
    return float(min(1.0, 2 * (1 + min(below, above)) / (len(d) + 1)))


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


def compute_metrics(gold: Sequence, pred: Sequence, task: Task, meta: Sequence[dict[str, Any]] | None = None,
                    resamples: int = 0, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """The task's metrics, its ``score`` (their mean) and the ``invalid_rate``.

    ``meta``: the examples' records (``idx``; ReCoRD also ``entity`` and ``answers``), needed by
    grouped tasks. With ``resamples`` > 0 the result also holds ``ci`` (see :func:`bootstrap`),
    ``units`` (examples or groups resampled) and the bootstrap settings.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{task.name}: {len(gold)} gold labels but {len(pred)} predictions")
    if not len(gold):
        raise ValueError(f"{task.name}: no examples to score")
    filled = fill_invalid(gold, pred, task)
    gold = [float(g) if task.is_regression else int(g) for g in gold]
    n_units, score_fn = scoring_units(gold, filled, task, meta)
    out: dict[str, Any] = score_fn(np.arange(n_units))
    out["score"] = float(np.mean([out[m] for m in task.metrics]))
    out["invalid_rate"] = sum(p is None for p in pred) / len(pred)
    if resamples > 0:
        out["ci"] = bootstrap(n_units, score_fn, resamples, seed, confidence)
        out["bootstrap"] = {"units": n_units, "resamples": resamples, "seed": seed, "confidence": confidence}
    return out


def benchmark_average(scores: dict[str, float]) -> float:
    """Mean of the per-column scores (NaNs, i.e. missing columns, make the average NaN)."""
    vals = list(scores.values())
    return float(np.mean(vals)) if vals else float("nan")
