"""Paired differences of each method to a reference method, from the per-example predictions.

"PPO beats SFT" is a paired claim: both methods answered the same examples. For a method, a model
and a table column, the difference is ``score(method) - score(reference)``:

- **paired by example**: per seed, the two methods' prediction files
  (``results/eval/{method}/{model}/seed{seed}/{task}.predictions.jsonl``) are matched by ``idx``;
  files that do not hold the same examples are refused (one line naming both);
- **per seed, then averaged**: the difference is computed within each seed both methods have and
  averaged over those seeds (the table's scores are means over seeds too);
- **paired bootstrap**: each of ``resamples`` resamples draws the scoring units (examples, or whole
  questions/queries for MultiRC and ReCoRD) once, with replacement, and scores both methods in every
  seed on that same draw, every metric (MCC, F1, correlations...) recomputed on it as the
  single-method intervals are (:func:`gluerl.metrics.resampled_scores`); the draws of a column come
  from ``np.random.default_rng([seed, crc32(column)])``, so columns are drawn independently of one
  another and a method's draws are its reference's. The seed-averaged differences of the draws give
  the percentile interval (``confidence``) and a two-sided bootstrap p-value
  (:func:`gluerl.metrics.bootstrap_p`: ``2 * min(P(d <= 0), P(d >= 0))`` with the observed sample
  counted as one more draw);
- **the average**'s difference is the mean of the differences of the columns in the benchmark
  average, draw by draw; it is given only when every such column has one.

Differences are fractions here (tables show points: percent of the score).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import DataError
from .io import read_jsonl
from .metrics import bootstrap_p, fill_invalid, percentile_interval, resampled_scores, scoring_units
from .tasks import Task

# (method, model, seed, task name) -> the predictions file of that evaluation
PredictionFiles = Mapping[tuple[str, str, int, str], "str | Path"]


@dataclass
class Difference:
    """``score(method) - score(reference)`` (fractions) over ``seeds`` seeds, with its paired bootstrap
    interval and p-value (``None`` without resamples)."""

    diff: float
    lo: float | None
    hi: float | None
    p: float | None
    seeds: int


def unit_key(idx: Any) -> str:
    """A canonical, hashable form of an example's ``idx`` (an integer, or a mapping for grouped tasks)."""
    return json.dumps(idx, sort_keys=True)


def _order(row: dict) -> tuple:
    idx = row["idx"]
    return (0, idx, "") if isinstance(idx, int) and not isinstance(idx, bool) else (1, 0, unit_key(idx))


def read_predictions(path: str | Path, task: Task) -> dict[str, dict[str, dict]]:
    """``{split: {unit_key(idx): row}}`` of a predictions file, each row reduced to what scoring needs
    (idx, label, prediction and the task's extra fields); a repeated idx within a split is refused."""
    keep = ("idx", "label", "prediction", *task.extra_fields)
    out: dict[str, dict[str, dict]] = {}
    for n, row in enumerate(read_jsonl(path), 1):
        missing = [k for k in ("split", "idx", "label", "prediction") if k not in row]
        if missing:
            raise DataError(f"prediction row lacks {missing}", path, n)
        split = out.setdefault(row["split"], {})
        key = unit_key(row["idx"])
        if key in split:
            raise DataError(f"idx {row['idx']!r} appears twice in split {row['split']}", path, n)
        split[key] = {k: row[k] for k in keep if k in row}
    return out


def column_scorer(rows: Mapping[str, dict], task: Task) -> tuple[int, Callable[[np.ndarray], dict[str, float]]]:
    """(units, score function) of one column's prediction rows, in the order of their idx (integers
    ascending, mappings by their JSON text): the same order for every method and seed holding the
    same examples, so that the same unit indices are the same examples."""
    ordered = sorted(rows.values(), key=_order)
    gold = [float(r["label"]) if task.is_regression else int(r["label"]) for r in ordered]
    filled = fill_invalid(gold, [r["prediction"] for r in ordered], task)
    return scoring_units(gold, filled, task, ordered)


@dataclass
class Scored:
    """One method's predictions on one column: the examples (``unit_key`` of each idx), the score and
    its resampled scores (``None`` without resamples)."""

    keys: frozenset[str]
    point: float
    draws: np.ndarray | None


class _Scores:
    """:class:`Scored` per (method, model, seed, task) and evaluation split; each file is read and
    scored once, and only the scores are kept (not the rows)."""

    def __init__(self, files: PredictionFiles, resamples: int, seed: int):
        self.files, self.resamples, self.seed = files, resamples, seed
        self._cache: dict[tuple, dict[str, Scored]] = {}

    def splits(self, method: str, model: str, seed: int, task: Task) -> dict[str, Scored]:
        key = (method, model, seed, task.name)
        if key not in self._cache:
            scored = {}
            for split, rows in read_predictions(self.files[key], task).items():
                if split in task.eval_splits:
                    n, fn = column_scorer(rows, task)
                    point = float(np.mean(list(fn(np.arange(n)).values())))
                    draws = (resampled_scores(n, fn, self.resamples, column_seed(self.seed, task.eval_splits[split]))
                             if self.resamples > 0 else None)
                    scored[split] = Scored(frozenset(rows), point, draws)
            self._cache[key] = scored
        return self._cache[key]

    def pair(self, method: str, reference: str, model: str, seed: int, task: Task, split: str
             ) -> tuple[Scored, Scored] | None:
        """Both methods' :class:`Scored` of the split (None when neither file holds it); files that do
        not hold the same examples are refused."""
        a = self.splits(method, model, seed, task).get(split)
        b = self.splits(reference, model, seed, task).get(split)
        ka, kb = (frozenset() if x is None else x.keys for x in (a, b))
        if ka != kb:
            raise DataError(f"{self.files[(method, model, seed, task.name)]} and "
                            f"{self.files[(reference, model, seed, task.name)]} do not hold the same examples "
                            f"of {task.name}[{split}] ({len(ka - kb)} idx only in the first, {len(kb - ka)} only "
                            f"in the second): a paired difference needs the same ones")
        return None if a is None else (a, b)


def column_seed(seed: int, column: str) -> list[int]:
    """The bootstrap seed of a column: the configured seed and a stable hash of the column's name."""
    return [seed, zlib.crc32(column.encode())]


def _summary(points: list[float], draws: list[np.ndarray] | None, seeds: int, confidence: float) -> Difference:
    diff = float(np.mean(points))
    if draws is None:
        return Difference(diff, None, None, None, seeds)
    d = np.mean(draws, axis=0)
    lo, hi = percentile_interval(d, confidence)
    return Difference(diff, lo, hi, bootstrap_p(d), seeds)


def paired_differences(files: PredictionFiles, tasks: Sequence[Task], reference: str, resamples: int = 1000,
                       seed: int = 0, confidence: float = 0.95) -> dict[tuple[str, str], dict[str, Difference]]:
    """``{(method, model): {column: Difference, ..., "average": Difference}}`` for every method other
    than ``reference``, for the models that have the reference; empty when no model has it.

    ``files`` names the predictions file of every evaluation (method, model, seed, task name); a column
    is compared over the seeds both methods were evaluated with on its task.
    """
    cols = [(split, col, t) for t in tasks if t.labelled for split, col in t.eval_splits.items()]
    scores = _Scores(files, resamples, seed)
    runs: dict[tuple[str, str], dict[str, set[int]]] = {}
    for method, model, s, task in files:
        runs.setdefault((method, model), {}).setdefault(task, set()).add(s)
    out: dict[tuple[str, str], dict[str, Difference]] = {}
    for (method, model), by_task in sorted(runs.items()):
        ref = runs.get((reference, model))
        if method == reference or ref is None:
            continue
        diffs: dict[str, Difference] = {}
        avg_points, avg_draws = [], []
        for split, col, task in cols:
            seeds = sorted(by_task.get(task.name, set()) & ref.get(task.name, set()))
            pairs = [p for p in (scores.pair(method, reference, model, s, task, split) for s in seeds) if p]
            if not pairs:  # no common seed, or neither file holds the split
                continue
            points = [a.point - r.point for a, r in pairs]
            draws = None if resamples <= 0 else [a.draws - r.draws for a, r in pairs]
            diffs[col] = _summary(points, draws, len(pairs), confidence)
            if task.in_average:
                avg_points.append(diffs[col].diff)
                avg_draws.append(None if draws is None else np.mean(draws, axis=0))
        n_avg = sum(1 for _, _, t in cols if t.in_average)
        if avg_points and len(avg_points) == n_avg:
            diffs["average"] = _summary(avg_points, None if resamples <= 0 else avg_draws,
                                        min(d.seeds for d in diffs.values()), confidence)
        if diffs:
            out[(method, model)] = diffs
    return out
