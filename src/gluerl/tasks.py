"""Task registry: the one source of truth for fields, label words, metrics and instructions.

Tasks are data. Each benchmark is a YAML file (``gluerl/tasks/*.yaml`` ships GLUE and SuperGLUE;
a user adds their own tasks with more files, named in the config's ``task_files``) holding a
mapping of task name to declaration. A declaration may inherit from another with ``base:``;
``abstract: true`` marks a base that is not a task itself.

>>> from gluerl.tasks import get_task
>>> get_task("cola").labels
{0: 'unacceptable', 1: 'acceptable'}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ConfigError

SUBMISSION_FORMATS = {"tsv": ".tsv", "jsonl": ".jsonl"}
SUBMISSION_LAYOUTS = {"flat", "multirc"}


@dataclass(frozen=True)
class Submission:
    """How a task's test predictions go into the leaderboard server's archive (``submission:``)."""

    format: str                       # tsv (GLUE: index<TAB>prediction) or jsonl (SuperGLUE: idx/label)
    files: dict[str, str]             # test split -> file name inside the archive
    labels: dict[int, Any]            # label id -> the value the server expects (absent: the id)
    layout: str = "flat"              # flat, or multirc (answers nested per paragraph and question)
    idx_key: str | None = None        # key of a dict ``idx`` that the server names (ReCoRD: query)
    decimals: int = 3                 # regression scores are written with this many decimals


METRIC_NAMES = {"accuracy", "mcc", "f1", "macro_f1", "pearson", "spearman",
                "multirc_em", "multirc_f1a", "record_f1", "record_em"}
# metrics scored per group of examples (a MultiRC question, a ReCoRD query), not per example
GROUPED_METRICS = {"multirc_em", "multirc_f1a", "record_f1", "record_em"}
EXPANSIONS = {"record_entities"}  # row expansions a task may declare (see gluerl.data)


@dataclass(frozen=True)
class Task:
    """One task: what to read, how to ask, how to score."""

    name: str
    benchmark: str
    hub_path: str
    hub_name: str
    fields: dict[str, str]
    instruction: str
    metrics: tuple[str, ...]
    eval_splits: dict[str, str]
    labels: dict[int, str] = field(default_factory=dict)
    aliases: dict[int, tuple[str, ...]] = field(default_factory=dict)
    regression: tuple[float, float] | None = None
    train_split: str | None = "train"
    train_task: str | None = None
    in_average: bool = True
    labelled: bool = True
    submission: Submission | None = None
    rename: dict[str, str] = field(default_factory=dict)
    expand: str | None = None

    @property
    def extra_fields(self) -> tuple[str, ...]:
        """Columns kept beside the fields (not shown in the prompt) that the metrics need."""
        return ("entity", "answers") if self.expand == "record_entities" else ()

    @property
    def grouped(self) -> bool:
        """Whether the task is scored per group (question, query) rather than per example."""
        return bool(set(self.metrics) & GROUPED_METRICS)

    @property
    def is_regression(self) -> bool:
        return self.regression is not None

    @property
    def evaluation_only(self) -> bool:
        return self.train_split is None

    @property
    def splits(self) -> list[str]:
        """Every split the task needs on disk (train first when it has one)."""
        out = [self.train_split] if self.train_split else []
        return out + [s for s in self.eval_splits if s not in out]

    @property
    def test_splits(self) -> list[str]:
        """Unlabelled test splits predicted for the leaderboard (the ``submission:`` files)."""
        return list(self.submission.files) if self.submission else []

    @property
    def label_field(self) -> str:
        return "label"

    def label_word(self, label: int | float) -> str:
        """The answer text for a gold label: the label word, or the score with one decimal."""
        if self.is_regression:
            return f"{float(label):.1f}"
        return self.labels[int(label)]

    def answer_words(self) -> dict[str, int]:
        """Every accepted word (label words and aliases, lower case) -> label id."""
        words = {w.lower(): i for i, w in self.labels.items()}
        for i, alts in self.aliases.items():
            for w in alts:
                words[w.lower()] = i
        return words


def _builtin_files() -> list[Path]:
    root = resources.files("gluerl") / "tasks"
    return sorted(Path(str(p)) for p in root.iterdir() if str(p).endswith(".yaml"))


def _resolve(name: str, raw: dict[str, dict], source: dict[str, str], seen: tuple = ()) -> dict:
    if name in seen:
        raise ConfigError(f"task {name!r}: circular 'base' chain {' -> '.join(seen + (name,))}")
    decl = raw[name]
    base = decl.get("base")
    if base is None:
        return copy.deepcopy(decl)
    if base not in raw:
        raise ConfigError(f"task {name!r} in {source[name]}: unknown base {base!r}")
    merged = _resolve(base, raw, source, seen + (name,))
    merged.pop("abstract", None)
    merged.update(copy.deepcopy(decl))
    merged.pop("base", None)
    return merged


def _submission(decl: Any, labels: dict[int, str], where: str) -> Submission | None:
    if decl is None:
        return None
    where = f"{where}: submission"
    if not isinstance(decl, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(decl) - {"format", "files", "labels", "layout", "idx_key", "decimals"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    fmt = decl.get("format")
    if fmt not in SUBMISSION_FORMATS:
        raise ConfigError(f"{where}.format: {fmt!r} is not one of {sorted(SUBMISSION_FORMATS)}")
    files = decl.get("files")
    if not isinstance(files, dict) or not files:
        raise ConfigError(f"{where}.files: expected a mapping of test split -> file name")
    for split, fname in files.items():
        if not str(fname).endswith(SUBMISSION_FORMATS[fmt]) or "/" in str(fname):
            raise ConfigError(f"{where}.files.{split}: {fname!r} must be a plain {SUBMISSION_FORMATS[fmt]} file name")
    server = {int(k): v for k, v in (decl.get("labels") or {}).items()}
    if server and labels and set(server) != set(labels):
        raise ConfigError(f"{where}.labels: ids {sorted(server)} differ from the task's label ids {sorted(labels)}")
    layout = decl.get("layout", "flat")
    if layout not in SUBMISSION_LAYOUTS:
        raise ConfigError(f"{where}.layout: {layout!r} is not one of {sorted(SUBMISSION_LAYOUTS)}")
    return Submission(format=fmt, files={str(k): str(v) for k, v in files.items()}, labels=server,
                      layout=layout, idx_key=decl.get("idx_key"), decimals=int(decl.get("decimals", 3)))


def _build(name: str, decl: dict[str, Any], benchmark: str, src: str) -> Task:
    where = f"task {name!r} in {src}"
    for key in ("hub", "fields", "instruction", "metrics", "eval_splits"):
        if key not in decl:
            raise ConfigError(f"{where}: missing key {key!r}")
    if ("labels" in decl) == ("regression" in decl):
        raise ConfigError(f"{where}: declare exactly one of 'labels' or 'regression'")
    bad = set(decl["metrics"]) - METRIC_NAMES
    if bad:
        raise ConfigError(f"{where}: unknown metric(s) {sorted(bad)}; known: {sorted(METRIC_NAMES)}")
    grouped = set(decl["metrics"]) & GROUPED_METRICS
    if grouped and grouped != set(decl["metrics"]):
        raise ConfigError(f"{where}: grouped metrics {sorted(grouped)} cannot be mixed with per-example ones")
    if grouped and not any(grouped <= fam for fam in ({"multirc_em", "multirc_f1a"}, {"record_f1", "record_em"})):
        raise ConfigError(f"{where}: metrics {sorted(grouped)} belong to different grouped scorings (MultiRC, ReCoRD)")
    if grouped & {"record_f1", "record_em"} and decl.get("expand") != "record_entities":
        raise ConfigError(f"{where}: record_f1/record_em need 'expand: record_entities' (candidate entities)")
    if decl.get("expand") is not None and decl["expand"] not in EXPANSIONS:
        raise ConfigError(f"{where}: unknown expand {decl['expand']!r}; known: {sorted(EXPANSIONS)}")
    labels = {int(k): str(v) for k, v in (decl.get("labels") or {}).items()}
    aliases = {int(k): tuple(map(str, v)) for k, v in (decl.get("aliases") or {}).items()}
    for k in aliases:
        if k not in labels:
            raise ConfigError(f"{where}: alias for unknown label id {k}")
    reg = decl.get("regression")
    hub = decl["hub"]
    return Task(
        name=name,
        benchmark=decl.get("benchmark", benchmark),
        hub_path=hub["path"],
        hub_name=hub.get("name", name),
        fields={str(k): str(v) for k, v in decl["fields"].items()},
        instruction=" ".join(str(decl["instruction"]).split()),
        metrics=tuple(decl["metrics"]),
        eval_splits={s: c.format(name=name) for s, c in decl["eval_splits"].items()},
        labels=labels,
        aliases=aliases,
        regression=(float(reg["min"]), float(reg["max"])) if reg else None,
        train_split=decl.get("train_split", "train"),
        train_task=decl.get("train_task"),
        in_average=bool(decl.get("in_average", True)),
        labelled=bool(decl.get("labelled", True)),
        submission=_submission(decl.get("submission"), labels, where),
        rename={str(k): str(v) for k, v in (decl.get("rename") or {}).items()},
        expand=decl.get("expand"),
    )


@lru_cache(maxsize=None)
def _load(files: tuple[str, ...]) -> dict[str, Task]:
    raw: dict[str, dict] = {}
    source: dict[str, str] = {}
    bench: dict[str, str] = {}
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"task file {path} does not exist")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"task file {path}: not valid YAML: {e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict):
            raise ConfigError(f"task file {path}: expected a mapping with a 'tasks' mapping")
        for name, decl in doc["tasks"].items():
            if name in raw:
                raise ConfigError(f"task {name!r} declared twice: in {source[name]} and {path}")
            if not isinstance(decl, dict):
                raise ConfigError(f"task {name!r} in {path}: declaration must be a mapping")
            raw[name] = decl
            source[name] = str(path)
            bench[name] = str(doc.get("benchmark", path.stem))
    tasks = {}
    for name in raw:
        decl = _resolve(name, raw, source)
        if decl.get("abstract"):
            continue
        tasks[name] = _build(name, decl, bench[name], source[name])
    for t in tasks.values():
        if t.train_task and t.train_task not in tasks:
            raise ConfigError(f"task {t.name!r}: train_task {t.train_task!r} is not a task")
    return tasks


def registry(extra_files: Iterable[str | Path] = ()) -> dict[str, Task]:
    """All tasks: the shipped benchmarks plus any extra task files."""
    files = tuple(str(p) for p in _builtin_files()) + tuple(str(Path(p)) for p in extra_files)
    return _load(files)


def get_task(name: str, extra_files: Iterable[str | Path] = ()) -> Task:
    tasks = registry(extra_files)
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def group_key(idx: Any) -> tuple:
    """The group an example is scored in: its ``idx`` mapping without the last key.

    MultiRC's ``{paragraph, question, answer}`` groups answer options by question; an expanded
    ReCoRD example's ``{passage, query, entity}`` groups candidates by query.
    """
    if not isinstance(idx, dict) or len(idx) < 2:
        raise ValueError(f"grouped scoring needs an idx mapping of two or more keys, not {idx!r}")
    return tuple(list(idx.values())[:-1])
