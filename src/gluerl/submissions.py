"""Leaderboard submissions: test-split predictions written in the formats the servers accept.

Each task's ``submission:`` block in its registry YAML says which file(s) its test split(s) become
and which strings the server expects for each label id; nothing here is specific to a task.

GLUE (gluebenchmark.com) takes a zip of TSV files, one per test split (``CoLA.tsv``, ...,
``MNLI-m.tsv``, ``MNLI-mm.tsv``, ``AX.tsv``), each a header ``index<TAB>prediction`` and a row per
test example in index order; labels are the task's strings (``entailment``...), ``0``/``1``, or a
score for STS-B. SuperGLUE (super.gluebenchmark.com) takes a zip of JSON Lines files
(``BoolQ.jsonl``, ...), one ``{"idx": ..., "label": ...}`` object per example; MultiRC nests the
answers, one line per paragraph: ``{"idx": p, "passage": {"questions": [{"idx": q, "answers":
[{"idx": a, "label": 0|1}]}]}}``.

Test splits have no labels, so nothing is scored. An invalid (unparseable or ambiguous) answer
gets a **fallback**: the majority label of the task's training rows (ties: the smallest label id),
or for a regression task their mean score; the number of fallbacks per file is counted in the
manifest next to the archive, with the files the server expects that the configured tasks do not
provide and whether any split was subsampled (the server rejects an incomplete file).

The test splits' completions come from the ``predict_test`` stage, :func:`gluerl.evaluation.predict_test`;
the ``make_submission`` stage (``scripts/make_submission.py``) is :func:`make_submission`.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .data import max_rows
from .errors import ConfigError, DataError
from .io import read_jsonl, write_json
from .tasks import Task, get_task, registry

# the archive's members carry this timestamp, so an archive of the same predictions is byte-identical
ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def fallback_label(task: Task, train_rows: Sequence[dict[str, Any]]) -> int | float:
    """The answer given when the model's is invalid: majority training label, or mean training score.

    Ties go to the smallest label id; string labels (an answer that is its own label) take the
    most common string.
    """
    labels = [r["label"] for r in train_rows if r.get("label") is not None]
    if task.is_regression:
        vals = [float(y) for y in labels if float(y) >= 0]
        if not vals:
            raise DataError(f"task {task.name}: no training scores to take the fallback from")
        return float(np.mean(vals))
    if any(isinstance(y, str) for y in labels):  # answers that are their own labels (ReCoRD entities)
        counts = Counter(y for y in labels if isinstance(y, str))
        top = max(counts.values())
        return min(y for y, c in counts.items() if c == top)
    counts = Counter(int(y) for y in labels if int(y) in task.labels)
    if not counts:
        raise DataError(f"task {task.name}: no labelled training rows to take the fallback (majority label) from")
    top = max(counts.values())
    return min(y for y, c in counts.items() if c == top)


def server_label(task: Task, prediction: int | float) -> Any:
    """The value the server expects for a predicted label id (or score)."""
    sub = task.submission
    if task.is_regression:
        lo, hi = task.regression
        return round(min(max(float(prediction), lo), hi), sub.decimals)
    if isinstance(prediction, str) and not sub.labels:
        return prediction  # an answer that is its own label (ReCoRD: the entity)
    if sub.labels:
        if isinstance(prediction, bool) or not isinstance(prediction, int) or prediction not in sub.labels:
            raise DataError(f"task {task.name}: prediction {prediction!r} is not a label id {sorted(sub.labels)}")
        return sub.labels[int(prediction)]
    return int(prediction)


def _idx_value(idx: Any, task: Task) -> Any:
    key = task.submission.idx_key
    if isinstance(idx, dict):
        if key is None:
            raise DataError(f"task {task.name}: idx {idx!r} is a mapping; the submission block needs 'idx_key' "
                            f"or layout 'multirc'")
        if key not in idx:
            raise DataError(f"task {task.name}: idx {idx!r} has no key {key!r} (submission.idx_key)")
        return idx[key]
    return idx


def _sort_key(v: Any):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def record_queries(task: Task, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """ReCoRD: the per-candidate yes/no prediction rows -> one row per query.

    The query's prediction is its first candidate (in entity order) answered "Yes", as in the
    metrics; a query with none gets its own first candidate as the fallback (``fallback``).
    """
    queries: dict[tuple, list[dict]] = {}
    for n, r in enumerate(rows, 1):
        idx = r.get("idx")
        if not isinstance(idx, dict) or not {"passage", "query", "entity"} <= set(idx) or "entity" not in r:
            raise DataError(f"task {task.name}: prediction row {n} is not a ReCoRD candidate row "
                            "(idx with passage/query/entity and an 'entity')")
        queries.setdefault((r.get("split"), idx["passage"], idx["query"]), []).append(r)
    out = []
    for (split, passage, query), cands in queries.items():
        cands.sort(key=lambda r: r["idx"]["entity"])
        yes = [r["entity"] for r in cands if r.get("prediction") == 1]
        out.append({"split": split, "idx": {"passage": passage, "query": query},
                    "prediction": yes[0] if yes else None, "fallback": cands[0]["entity"]})
    return out


def resolve(task: Task, rows: Sequence[dict[str, Any]], fallback: int | float | None) -> tuple[list[tuple[Any, Any]], int]:
    """((idx, server label) in index order, number of fallbacks) for one split's prediction rows.

    An invalid prediction takes the row's own ``fallback`` when it has one (ReCoRD), else ``fallback``.
    """
    out, fallbacks, seen = [], 0, set()
    for n, r in enumerate(rows, 1):
        if "idx" not in r:
            raise DataError(f"task {task.name}: prediction row {n} has no 'idx'")
        key = json.dumps(r["idx"], sort_keys=True)
        if key in seen:
            raise DataError(f"task {task.name}: idx {r['idx']!r} is predicted twice (row {n})")
        seen.add(key)
        pred = r.get("prediction")
        if pred is None:
            pred, fallbacks = r.get("fallback", fallback), fallbacks + 1
            if pred is None:
                raise DataError(f"task {task.name}: prediction row {n} is invalid and there is no fallback")
        out.append((r["idx"], server_label(task, pred)))
    if task.submission.layout == "multirc":
        out.sort(key=lambda x: tuple(_sort_key(x[0][k]) for k in ("paragraph", "question", "answer")))
    else:
        out.sort(key=lambda x: _sort_key(_idx_value(x[0], task)))
    return out, fallbacks


def format_file(task: Task, resolved: Sequence[tuple[Any, Any]]) -> str:
    """The text of one submission file from (idx, server label) pairs in index order."""
    sub = task.submission
    if sub.format == "tsv":
        lines = ["index\tprediction"]
        for idx, label in resolved:
            text = f"{label:.{sub.decimals}f}" if task.is_regression else str(label)
            if "\t" in text or "\n" in text:
                raise DataError(f"task {task.name}: label {text!r} cannot go into a TSV cell")
            lines.append(f"{_idx_value(idx, task)}\t{text}")
        return "\n".join(lines) + "\n"
    if sub.layout == "multirc":
        return "".join(json.dumps(obj) + "\n" for obj in _multirc(task, resolved))
    return "".join(json.dumps({"idx": _idx_value(idx, task), "label": label}) + "\n" for idx, label in resolved)


def _multirc(task: Task, resolved: Sequence[tuple[Any, Any]]) -> Iterable[dict]:
    """One object per paragraph, questions and answers nested in index order."""
    paragraphs: dict[Any, dict[Any, list]] = {}
    for idx, label in resolved:
        if not isinstance(idx, dict) or not {"paragraph", "question", "answer"} <= set(idx):
            raise DataError(f"task {task.name}: multirc idx {idx!r} needs paragraph, question and answer")
        paragraphs.setdefault(idx["paragraph"], {}).setdefault(idx["question"], []).append(
            {"idx": idx["answer"], "label": label})
    for p, questions in paragraphs.items():
        yield {"idx": p, "passage": {"questions": [{"idx": q, "answers": a} for q, a in questions.items()]}}


def expected_files(tasks: Iterable[Task], benchmark: str) -> list[str]:
    """Every file the benchmark's server expects: the submission files of the registry's tasks."""
    return [f for t in tasks if t.benchmark == benchmark and t.submission for f in t.submission.files.values()]


def build_files(tasks: Sequence[Task], predictions: dict[str, list[dict]], train_rows: dict[str, list[dict]]) -> tuple[dict[str, str], dict]:
    """(file name -> text, per-file report) for the tasks' test predictions.

    ``predictions[task]`` holds the rows of every test split of the task (each with ``split``,
    ``idx`` and ``prediction``: a label id, a score or None); ``train_rows[task]`` the training rows
    the fallback comes from.
    """
    files: dict[str, str] = {}
    report: dict[str, dict] = {}
    for task in tasks:
        sub = task.submission
        if sub is None:
            raise ConfigError(f"task {task.name!r} has no 'submission' block in its task file")
        if task.name not in predictions:
            raise DataError(f"no test predictions for task {task.name!r}")
        by_split: dict[str, list] = {}
        rows_all = predictions[task.name]
        if task.expand == "record_entities":
            rows_all = record_queries(task, rows_all)
        for r in rows_all:
            by_split.setdefault(r.get("split"), []).append(r)
        extra = set(by_split) - set(sub.files)
        if extra:
            raise DataError(f"task {task.name}: predictions for split(s) {sorted(map(str, extra))} that have no "
                            f"submission file (files: {sub.files})")
        # ReCoRD's fallback is each query's own first candidate (record_queries), not a training label
        fallback = None if task.expand == "record_entities" else fallback_label(task, train_rows[task.name])
        for split, fname in sub.files.items():
            rows = by_split.get(split)
            if not rows:
                raise DataError(f"task {task.name}: no predictions for test split {split!r} ({fname})")
            if fname in files:
                raise ConfigError(f"submission file {fname} is declared by two tasks")
            resolved, n_fallback = resolve(task, rows, fallback)
            files[fname] = format_file(task, resolved)
            report[fname] = {"task": task.name, "split": split, "rows": len(rows), "fallbacks": n_fallback,
                             "fallback_rate": round(n_fallback / len(rows), 4),
                             "fallback_label": "the query's first candidate" if fallback is None
                             else server_label(task, fallback)}
    return files, report


def zip_bytes(files: dict[str, str]) -> bytes:
    """A deterministic zip of the files (flat, in the given order, fixed timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def make_submission(cfg: dict[str, Any], benchmark: str, predictions: dict[str, str], train: dict[str, str], *,
                    output, manifest) -> dict[str, Any]:
    """The ``make_submission`` stage (``scripts/make_submission.py``): the test predictions of each task
    (``predictions``: task -> file of :func:`gluerl.evaluation.predict_test`) and its raw training rows
    (``train``: task -> file, the fallback's majority label) as ``benchmark``'s archive at ``output``
    (the files in the server's order, a deterministic zip); the manifest at ``manifest`` counts the
    rows and fallbacks per file and lists the files the server expects that the archive lacks and
    the test splits that were subsampled. Returns the manifest."""
    stage_log = logging.getLogger("gluerl.make_submission")  # the stage's log lines keep the script's name
    missing_train = set(predictions) - set(train)
    if missing_train:
        raise ConfigError(f"--train is missing for task(s) {sorted(missing_train)}")
    tasks = [get_task(t, cfg["task_files"]) for t in predictions]
    wrong = [t.name for t in tasks if t.benchmark != benchmark]
    if wrong:
        raise ConfigError(f"task(s) {wrong} are not in benchmark {benchmark!r}")
    files, report = build_files(tasks, {t: read_jsonl(f) for t, f in predictions.items()},
                                {t: read_jsonl(f) for t, f in train.items()})
    expected = expected_files(registry(cfg["task_files"]).values(), benchmark)
    order = {f: i for i, f in enumerate(expected)}
    files = dict(sorted(files.items(), key=lambda kv: order.get(kv[0], len(order))))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(zip_bytes(files))
    tmp.replace(out)
    subsampled = [f"{t.name}/{s}" for t in tasks for s in t.test_splits if max_rows(t, s, cfg["data"]) is not None]
    missing = [f for f in expected if f not in files]
    record = {"benchmark": benchmark, "archive": str(out), "files": report, "missing_files": missing,
              "subsampled_splits": subsampled, "complete": not missing and not subsampled,
              "fallbacks": sum(r["fallbacks"] for r in report.values()),
              "rows": sum(r["rows"] for r in report.values())}
    write_json(manifest, record)
    for name, r in report.items():
        stage_log.info("%s: %d rows, %d invalid answers given the fallback %r", name, r["rows"], r["fallbacks"],
                       r["fallback_label"])
    if missing:
        stage_log.warning("the %s server expects %s too; this archive lacks them", benchmark, ", ".join(missing))
    if subsampled:
        stage_log.warning("subsampled test splits (data.max_samples): %s; the server rejects incomplete files",
                          ", ".join(subsampled))
    return record
