"""Transfer evaluation: a model trained on one task answers another dataset of the same kind.

The paper evaluates the SST-2 model on other sentiment sets and the MNLI model on SIGA-nli and
bAbI-NLI. A target is declared as data in the config's ``transfer`` list::

    transfer:
      - name: imdb                       # table column and file name
        source_task: sst2                # prompt, label words, metric and checkpoint come from it
        dataset: {hub: stanfordnlp/imdb, split: test}   # or {path: file} or {local_dir: folder}
        fields: {sentence: text}         # source task field -> the dataset's column
        labels: {0: 0, 1: 1}             # dataset label value -> source label id(s)
        max_samples: 500

Its rows are mapped to the source task's schema (fields renamed; ``label`` the source label id),
so they are prompted exactly like the source task and answered by the source task's adapter
(``results/checkpoints/{method}/{model}/{task or multi}/seed{seed}``). A dataset with coarser
labels than the source maps a value to several source ids: bAbI-NLI's ``not-entailed`` is
``[1, 2]`` (MNLI's neutral or contradiction), and an answer of either counts as right. Scores
use the source task's metrics over the target's classes (each class named by its first id).

The ``evaluate_transfer`` stage itself is :func:`gluerl.evaluation.evaluate_transfer` (this module is
imported when Snakemake plans the DAG, so it holds nothing that loads a model); ``download_transfer``
is :func:`download_transfer` here and ``assemble_transfer_table`` is
:func:`gluerl.tables.assemble_transfer_table`.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import section
from .errors import ConfigError, DataError
from .io import iter_jsonl, read_jsonl
from .metrics import compute_metrics
from .tasks import Task

log = logging.getLogger(__name__)

BENCHMARK = "transfer"
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


@dataclass(frozen=True)
class Target:
    """One transfer dataset, as declared in the config."""

    name: str
    source_task: str
    dataset: dict[str, Any]
    fields: dict[str, str]
    labels: dict[str, tuple[int, ...]]   # str(dataset label value) -> source label ids
    label_field: str
    idx_field: str | None
    max_samples: int | None

    @property
    def split(self) -> str:
        return str(self.dataset["split"])

    def source(self) -> str:
        """Where the rows come from, for messages and the table's notes."""
        d = self.dataset
        if d.get("hub"):
            name = f"/{d['name']}" if d["name"] else ""
            return f"{d['hub']}{name}[{self.split}]"
        return str(d.get("path") or Path(d["local_dir"]) / self.split)


def _label_ids(value: Any, where: str) -> tuple[int, ...]:
    ids = value if isinstance(value, list) else [value]
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ConfigError(f"{where}: expected a source label id or a list of them, got {value!r}")
    return tuple(ids)


def parse_targets(cfg: dict, tasks: dict[str, Task], check_files: bool = True) -> list[Target]:
    """The config's ``transfer`` entries (validated, their defaults filled from the schema), checked
    against the registry (and, if asked, the disk)."""
    out: list[Target] = []
    seen: set[str] = set()
    for n, entry in enumerate(section("transfer", cfg.get("transfer"))):
        name = entry["name"]
        where = f"transfer[{n}] ({name})"
        if name in seen:
            raise ConfigError(f"{where}: name {name!r} is used twice")
        seen.add(name)
        src = entry["source_task"]
        if src not in tasks:
            raise ConfigError(f"{where}.source_task: unknown task {src!r}; known: {', '.join(sorted(tasks))}")
        source = tasks[src]
        fields = {str(k): str(v) for k, v in entry["fields"].items()}
        if set(fields) != set(source.fields):
            raise ConfigError(f"{where}.fields: map every field of {src} ({sorted(source.fields)}) to a column "
                              f"of the dataset; got {sorted(fields)}")
        raw_labels = entry["labels"]
        labels: dict[str, tuple[int, ...]] = {}
        if source.is_regression:
            if raw_labels:
                raise ConfigError(f"{where}.labels: {src} is a regression task; its scores are used as they are")
        else:
            if not raw_labels:
                raise ConfigError(f"{where}.labels: map each label value of the dataset to {src}'s label ids "
                                  f"{source.labels}")
            used: dict[int, str] = {}
            for value, ids in raw_labels.items():
                ids = _label_ids(ids, f"{where}.labels.{value}")
                for i in ids:
                    if i not in source.labels:
                        raise ConfigError(f"{where}.labels.{value}: {i} is not a label id of {src} {source.labels}")
                    if i in used:
                        raise ConfigError(f"{where}.labels: source id {i} is mapped from both {used[i]!r} and {value!r}")
                    used[i] = str(value)
                labels[str(value)] = ids
        ds = dict(entry["dataset"])
        kinds = [k for k in ("hub", "path", "local_dir") if ds.get(k)]
        if len(kinds) != 1:
            raise ConfigError(f"{where}.dataset: give exactly one of hub, path or local_dir (got {kinds or 'none'})")
        if check_files and ds.get("path") and not Path(ds["path"]).is_file():
            raise ConfigError(f"{where}.dataset.path: file {ds['path']} does not exist")
        if check_files and ds.get("local_dir") and not Path(ds["local_dir"]).is_dir():
            raise ConfigError(f"{where}.dataset.local_dir: folder {ds['local_dir']} does not exist")
        out.append(Target(name=name, source_task=src, dataset=ds, fields=fields, labels=labels,
                          label_field=entry["label_field"], idx_field=entry["idx_field"],
                          max_samples=entry["max_samples"]))
    return out


def check_targets(cfg: dict, tasks: dict[str, Task]) -> list[Target]:
    """The workflow's check before planning: entries, files, and a trained checkpoint to use.

    With ``training.mode: multi`` the adapter is trained on the configured tasks, so a source task
    must be one of them (with ``single`` its own adapter is trained for the transfer).
    """
    targets = parse_targets(cfg, tasks)
    if section("training", cfg.get("training"))["mode"] == "multi":
        for t in targets:
            if t.source_task not in cfg["tasks"]:
                raise ConfigError(f"config: transfer target {t.name}: source_task {t.source_task} is not in tasks, so "
                                  f"the multi-task adapter never saw it (add it to tasks or use training.mode: single)")
    return targets


def find_target(cfg: dict, tasks: dict[str, Task], name: str) -> Target:
    for t in parse_targets(cfg, tasks, check_files=False):
        if t.name == name:
            return t
    raise ConfigError(f"no transfer target named {name!r} in the config's transfer list")


def target_task(target: Target, source: Task) -> Task:
    """The source task under the target's name: its column in the transfer table."""
    return dataclasses.replace(source, name=target.name, benchmark=BENCHMARK, eval_splits={target.split: target.name},
                               train_split=None, train_task=source.name, in_average=True, labelled=True,
                               submission=None)


def collapse(target: Target) -> dict[int, int]:
    """Source label id -> the target class it belongs to (named by the class's first source id)."""
    return {i: ids[0] for ids in target.labels.values() for i in ids}


# ---------------------------------------------------------------- reading the dataset

def _read_table(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl",):
        return read_jsonl(path)
    if suffix in (".csv", ".tsv"):
        text = "".join(line for _, line in iter_jsonl(path))  # UTF-8 (BOM skipped); bad bytes: file, line
        return [dict(r) for r in csv.DictReader(text.splitlines(keepends=True), delimiter="\t" if suffix == ".tsv" else ",")]
    if suffix in (".json", ".parquet"):
        from datasets import load_dataset

        builder = "json" if suffix == ".json" else "parquet"
        return [dict(r) for r in load_dataset(builder, data_files=str(path), split="train")]
    raise DataError(f"unsupported file type {suffix!r} (use one of {', '.join(LOCAL_SUFFIXES)})", path)


def load_raw(target: Target, data_cfg: dict | None = None) -> tuple[list[dict[str, Any]], str]:
    """(rows as the dataset has them, where they came from)."""
    ds = target.dataset
    if ds.get("hub"):
        from datasets import load_dataset

        revision = ds["revision"] or section("data", data_cfg)["hub_revisions"].get(ds["hub"])
        log.info("downloading %s (revision %s)", target.source(), revision or "default")
        try:
            rows = load_dataset(ds["hub"], ds["name"], split=target.split, revision=revision)
        except (ValueError, FileNotFoundError) as e:
            raise DataError(f"transfer target {target.name}: cannot load {target.source()}: {e}") from e
        return [dict(r) for r in rows], target.source()
    if ds.get("path"):
        path = Path(ds["path"])
    else:
        folder = Path(ds["local_dir"])
        found = [folder / f"{target.split}{s}" for s in LOCAL_SUFFIXES if (folder / f"{target.split}{s}").is_file()]
        if not found:
            raise DataError(f"transfer target {target.name}: no {target.split}{{{','.join(LOCAL_SUFFIXES)}}} file",
                            folder)
        path = found[0]
    if not path.is_file():
        raise DataError(f"transfer target {target.name}: file does not exist", path)
    return _read_table(path), str(path)


def prepare_rows(raw: Sequence[dict[str, Any]], target: Target, source: Task, where: str) -> list[dict[str, Any]]:
    """Rows in the source task's schema: its fields, ``label`` (source id or score), ``idx``, ``target_label``."""
    if not raw:
        raise DataError(f"transfer target {target.name}: the dataset is empty", where)
    out = []
    for n, row in enumerate(raw, 1):
        new: dict[str, Any] = {}
        for field, column in target.fields.items():
            v = row.get(column)
            if not isinstance(v, str):
                raise DataError(f"transfer target {target.name}: row has no text column {column!r} "
                                f"(columns: {sorted(row)})", where, n)
            if not v.strip():
                raise DataError(f"transfer target {target.name}: text column {column!r} is empty", where, n)
            new[field] = v
        if target.label_field not in row:
            raise DataError(f"transfer target {target.name}: row has no label column {target.label_field!r}", where, n)
        value = row[target.label_field]
        if source.is_regression:
            try:
                score = float(value)
            except (TypeError, ValueError):
                score = math.nan
            if not math.isfinite(score):
                raise DataError(f"transfer target {target.name}: label {value!r} is not a finite number", where, n)
            new["label"] = score
        else:
            ids = target.labels.get(str(value))
            if ids is None:
                raise DataError(f"transfer target {target.name}: label {value!r} is not one of the mapped values "
                                f"{sorted(target.labels)} (config transfer.labels)", where, n)
            new["label"] = ids[0]
        if target.idx_field:
            if target.idx_field not in row:
                raise DataError(f"transfer target {target.name}: row has no idx column {target.idx_field!r}", where, n)
            new["idx"] = row[target.idx_field]
        else:
            new["idx"] = n - 1
        new["target_label"] = value
        out.append(new)
    return out


def load_target(target: Target, source: Task, data_cfg: dict) -> list[dict[str, Any]]:
    """The mapped rows, subsampled to ``max_samples`` with ``data.subsample_seed``."""
    from .data import subsample

    raw, where = load_raw(target, data_cfg)
    rows = prepare_rows(raw, target, source, where)
    out = subsample(rows, target.max_samples, section("data", data_cfg)["subsample_seed"])
    log.info("transfer %s: %d rows (of %d) from %s", target.name, len(out), len(rows), where)
    return out


# ---------------------------------------------------------------- scoring

def score(rows: Sequence[dict[str, Any]], target: Target, source: Task, eval_cfg: dict | None = None) -> dict[str, Any]:
    """The source task's metrics over the target's classes, ``score``, ``invalid_rate``, ``n``, and
    their bootstrap intervals (``ci``) when ``eval_cfg`` asks for resamples (``bootstrap_*``).

    ``rows`` are prediction rows (``label``: the row's source id or score, ``prediction``: the
    parsed answer, a source id, score or None). An answer naming a source label outside every
    target class is wrong, as an invalid one is.
    """
    if not rows:
        raise DataError(f"transfer target {target.name}: no predictions to score")
    gold = [r["label"] for r in rows]
    preds = [r["prediction"] for r in rows]
    # no eval_cfg, or one without bootstrap_resamples: no intervals (not the schema's 1000 resamples)
    ev = section("evaluation", {"bootstrap_resamples": 0, **(eval_cfg or {})})
    boot = {"resamples": ev["bootstrap_resamples"], "seed": ev["bootstrap_seed"], "confidence": ev["confidence_level"]}
    if source.is_regression:
        result = compute_metrics(gold, preds, source, **boot)
    else:
        cls = collapse(target)
        classes = sorted(set(cls.values()))
        pseudo = dataclasses.replace(source, labels={c: source.labels[c] for c in classes}, aliases={})
        mapped = [None if p is None else cls.get(int(p)) for p in preds]
        result = compute_metrics([cls[int(g)] for g in gold], mapped, pseudo, **boot)
        result["unmapped_rate"] = sum(p is not None and m is None for p, m in zip(preds, mapped)) / len(rows)
        result["invalid_rate"] = sum(p is None for p in preds) / len(rows)
    result["n"] = len(rows)
    return result


# ---------------------------------------------------------------- the download stage

def download_transfer(cfg: dict, target: str, output) -> list[dict[str, Any]]:
    """The ``download_transfer`` stage (``scripts/download_transfer.py``): the rows of the config's
    transfer entry ``target`` (:func:`load_target`: mapped to its source task's schema, subsampled)
    written to ``output`` as JSON Lines. Returns the rows."""
    from .io import write_jsonl
    from .tasks import registry

    tasks = registry(cfg["task_files"])
    found = find_target(cfg, tasks, target)
    rows = load_target(found, tasks[found.source_task], cfg["data"])
    write_jsonl(output, rows)
    return rows
