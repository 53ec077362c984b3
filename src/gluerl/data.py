"""Task data: download from the hub or read a local folder, check every row, subsample.

Every source gives rows in the hub dataset's schema (``nyu-mll/glue``: the task's fields,
``label`` as an integer id, -1 where the split is unlabelled, or a float for STS-B, and ``idx``;
``aps/super_glue`` likewise). A local folder holds ``{task}/{split}.jsonl`` (``../shared/glue`` is
one; ``scripts/import_local_dataset.py`` builds one from other copies of a dataset). The
``embedded`` source is such a folder inside the package (``gluerl/embedded``: a few hundred real
rows of the demo tasks, see its README), so the demo needs no network. An unreachable hub fails
at once with one line that names ``data.source`` and the alternatives (``gluerl.hub``).

A task may rename hub columns (``rename``) and expand rows (``expand: record_entities``: a ReCoRD
query with its candidate entities becomes one yes/no row per distinct entity, the query's
``@placeholder`` filled with it, ``label`` 1 when the entity is a gold answer). Tasks scored per
group (MultiRC questions, ReCoRD queries) are subsampled by whole groups: ``max_samples`` then
counts questions or queries.

The ``download_dataset`` stage (``scripts/download_dataset.py``) is :func:`download_dataset`.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

from . import hub
from .config import EMBEDDED_DIR, embedded_splits, section
from .errors import ConfigError, DataError
from .io import read_jsonl
from .tasks import Task, group_key

log = logging.getLogger(__name__)


def local_path(local_dir: str | Path, task: Task, split: str) -> Path:
    return Path(local_dir) / task.name / f"{split}.jsonl"


def hub_remedies(cache: bool = True) -> str:
    """What to do instead of the hub, for the one-line data errors (``cache``: name HF_HUB_OFFLINE too)."""
    tasks = ", ".join(embedded_splits()) or "none"
    offline = "HF_HUB_OFFLINE=1 with the dataset already in the Hugging Face cache, or " if cache else ""
    return ("without the hub: data.source: local with data.local_dir, a folder of {task}/{split}.jsonl "
            f"(overlay config/offline.yaml: --configfile config/offline.yaml), or {offline}"
            f"data.source: embedded for the demo tasks ({tasks})")


def hub_revision(task: Task, data_cfg: dict) -> str | None:
    """The configured revision of a task's hub dataset (``hub_revisions`` per path over ``hub_revision``)."""
    return data_cfg["hub_revisions"].get(task.hub_path, data_cfg["hub_revision"])


def _hub_rows(task: Task, split: str, data_cfg: dict, found: dict | None = None) -> list[dict[str, Any]]:
    revision = hub_revision(task, data_cfg)
    sha = hub.require_repo(task.hub_path, "dataset", revision, "data.source", hub_remedies(),
                           cached=lambda: hub.dataset_cached(task.hub_path, task.hub_name))
    if found is not None:
        found["resolved_revision"] = sha
    from datasets import load_dataset

    log.info("downloading %s/%s split %s (revision %s)", task.hub_path, task.hub_name, split, revision or "default")
    try:
        ds = load_dataset(task.hub_path, task.hub_name, split=split, revision=revision)
    except ConnectionError as e:
        if hub.offline():
            raise hub.not_cached(task.hub_path, "dataset", revision, "data.source", hub_remedies(cache=False)) from None
        raise hub.HubError(f"data.source: lost the Hugging Face hub while loading {task.hub_path}/{task.hub_name} "
                           f"({hub.one_line(e)}); {hub_remedies()}") from None
    except (ValueError, FileNotFoundError) as e:
        raise DataError(f"cannot load split {split!r} of {task.hub_path}/{task.hub_name}: {e}") from e
    return [dict(r) for r in ds]


def embedded_path(task: Task, split: str) -> Path:
    """The packaged file of ``data.source: embedded``; ConfigError when the sample lacks it."""
    path = local_path(EMBEDDED_DIR, task, split)
    if not path.is_file():
        shipped = "; ".join(f"{t}: {', '.join(s)}" for t, s in embedded_splits().items()) or "nothing"
        raise ConfigError(f"data.source: embedded ships only the demo sample ({shipped}); task {task.name!r} "
                          f"split {split!r} is not in it: use data.source: hub or local for this task")
    return path


def check_rows(rows: list[dict[str, Any]], task: Task, split: str, where: str) -> None:
    """Every row has the task's fields (non-empty text), a valid label and an idx."""
    if not rows:
        raise DataError(f"split {split!r} of task {task.name!r} is empty", where)
    labelled = (task.labelled or split == task.train_split) and split not in task.test_splits
    seen: dict[str, int] = {}  # idx -> first row: predictions are paired and scored by idx
    for n, row in enumerate(rows, 1):
        for f in task.fields:
            v = row.get(f)
            if not isinstance(v, str):
                raise DataError(f"row has no text field {f!r} (task {task.name})", where, n)
            if not v.strip():
                raise DataError(f"text field {f!r} is empty (task {task.name})", where, n)
        if "idx" not in row:
            raise DataError("row has no 'idx'", where, n)
        key = json.dumps(row["idx"], sort_keys=True)
        if key in seen:
            raise DataError(f"idx {row['idx']!r} is used again (first in row {seen[key]}); every row needs its own "
                            "idx (predictions are paired and scored by it)", where, n)
        seen[key] = n
        if "label" not in row:
            raise DataError("row has no 'label'", where, n)
        y = row["label"]
        if task.is_regression:
            if isinstance(y, bool) or not isinstance(y, (int, float)) or not math.isfinite(y):
                raise DataError(f"label {y!r} is not a finite number (task {task.name})", where, n)
            lo, hi = task.regression
            if labelled and not lo <= y <= hi:
                raise DataError(f"score {y} is outside {lo:g}..{hi:g} (task {task.name})", where, n)
        else:
            if isinstance(y, bool) or not isinstance(y, int):
                raise DataError(f"label {y!r} is not an integer id (task {task.name})", where, n)
            if labelled and y not in task.labels:
                raise DataError(f"label {y} is not one of {sorted(task.labels)} (task {task.name})", where, n)
            if not labelled and y != -1 and y not in task.labels:
                raise DataError(f"label {y} is neither -1 nor one of {sorted(task.labels)}", where, n)


def max_rows(task: Task, split: str, data_cfg: dict) -> int | None:
    caps = data_cfg["max_samples"]
    if split in caps:
        return caps[split]
    # leaderboard test splits are never cut by the "eval" cap (the server wants every row)
    if split != task.train_split and split not in task.test_splits and "eval" in caps:
        return caps["eval"]
    return None


def subsample(rows: list[dict], n: int | None, seed: int, key=None) -> list[dict]:
    """At most ``n`` rows drawn with ``seed``, kept in their original order.

    With ``key`` (row -> group), ``n`` whole groups are drawn instead and all their rows kept.
    """
    if key is None:
        if n is None or n >= len(rows):
            return rows
        keep = sorted(random.Random(seed).sample(range(len(rows)), n))
        return [rows[i] for i in keep]
    groups = list(dict.fromkeys(key(r) for r in rows))
    if n is None or n >= len(groups):
        return rows
    chosen = {groups[i] for i in random.Random(seed).sample(range(len(groups)), n)}
    return [r for r in rows if key(r) in chosen]


def rename_columns(rows: list[dict[str, Any]], task: Task) -> list[dict[str, Any]]:
    """Hub column names -> the task's field names (``rename`` in the declaration)."""
    if not task.rename:
        return rows
    return [{task.rename.get(k, k): v for k, v in r.items()} for r in rows]


def expand_record(rows: list[dict[str, Any]], task: Task, where: str) -> list[dict[str, Any]]:
    """ReCoRD queries -> one yes/no row per distinct candidate entity (see the module docstring)."""
    out = []
    for n, row in enumerate(rows, 1):
        for f in ("passage", "query"):
            if not isinstance(row.get(f), str) or not row[f].strip():
                raise DataError(f"row has no text field {f!r} (task {task.name})", where, n)
        if "@placeholder" not in row["query"]:
            raise DataError(f"query has no '@placeholder' (task {task.name})", where, n)
        ents, answers, idx = row.get("entities"), row.get("answers"), row.get("idx")
        if not isinstance(ents, list) or not ents or not all(isinstance(e, str) and e.strip() for e in ents):
            raise DataError(f"'entities' must be a non-empty list of strings (task {task.name})", where, n)
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DataError(f"'answers' must be a list of strings (task {task.name})", where, n)
        if not isinstance(idx, dict) or not {"passage", "query"} <= set(idx):
            raise DataError(f"'idx' must be a mapping with 'passage' and 'query' (task {task.name})", where, n)
        passage = row["passage"].replace("@highlight\n", "- ")
        for j, ent in enumerate(dict.fromkeys(ents)):
            out.append({"passage": passage, "query": row["query"].replace("@placeholder", ent),
                        "entity": ent, "answers": answers,
                        "label": (1 if ent in answers else 0) if answers else -1,
                        "idx": {"passage": idx["passage"], "query": idx["query"], "entity": j}})
    return out


def load_split(task: Task, split: str, data_cfg: dict) -> list[dict[str, Any]]:
    """The checked (and subsampled, if configured) rows of one split."""
    return load_split_with_provenance(task, split, data_cfg)[0]


def load_split_with_provenance(task: Task, split: str, data_cfg: dict) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows, provenance): the rows of :func:`load_split` and where they came from: ``source``,
    ``dataset`` (hub path/name or file), the configured and resolved ``revision``, the rows in the
    source, the cap (``max_samples``), whether rows were dropped (``subsampled``) and the seed."""
    if split not in task.splits and split not in task.test_splits:
        known = task.splits + [s for s in task.test_splits if s not in task.splits]
        raise ConfigError(f"task {task.name!r} has no split {split!r}; its splits: {known}")
    data_cfg = section("data", data_cfg)
    source = data_cfg["source"]
    if source == "local":
        if not data_cfg["local_dir"]:
            raise ConfigError("data.local_dir must be set when data.source is 'local'")
        path = local_path(data_cfg["local_dir"], task, split)
        if not path.is_file():
            raise DataError(f"missing local data file for task {task.name!r}, split {split!r}", path)
        rows, where = read_jsonl(path), str(path)
        prov: dict[str, Any] = {"dataset": str(path), "revision": None, "resolved_revision": None}
    elif source == "embedded":
        path = embedded_path(task, split)
        rows, where = read_jsonl(path), str(path)
        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version("gluerl")
        except PackageNotFoundError:
            release = None
        prov = {"dataset": f"gluerl/embedded/{task.name}/{split}.jsonl", "revision": release,
                "resolved_revision": None}
    else:
        prov = {"dataset": f"{task.hub_path}/{task.hub_name}" if task.hub_name else task.hub_path,
                "revision": hub_revision(task, data_cfg)}
        rows = _hub_rows(task, split, data_cfg, prov)
        where = f"{task.hub_path}/{task.hub_name}[{split}]"
    rows = rename_columns(rows, task)
    total = len(rows)
    if task.expand == "record_entities":
        rows = expand_record(rows, task, where)
    keep_fields = list(task.fields) + list(task.extra_fields) + ["label", "idx"]
    check_rows(rows, task, split, where)
    rows = [{k: r[k] for k in keep_fields} for r in rows]
    cap = max_rows(task, split, data_cfg)
    out = subsample(rows, cap, data_cfg["subsample_seed"],
                    key=(lambda r: group_key(r["idx"])) if task.grouped else None)
    log.info("%s[%s]: %d rows (from %d in the source) from %s", task.name, split, len(out), total, where)
    prov = {"task": task.name, "split": split, "source": source, **prov, "rows_in_source": total,
            "rows": len(out), "max_samples": cap, "subsampled": len(out) < len(rows),
            "subsample_seed": data_cfg["subsample_seed"] if len(out) < len(rows) else None}
    return out, prov


def download_dataset(cfg: dict[str, Any], task: str, split: str, output) -> list[dict[str, Any]]:
    """The ``download_dataset`` stage (``scripts/download_dataset.py``): one split of ``task`` from
    ``data.source`` (:func:`load_split_with_provenance`: checked, subsampled) written to ``output``
    as JSON Lines; beside it the provenance (source, dataset, revision, caps, subsampling) with the
    date, git commit and package versions that wrote it. Returns the rows."""
    from .io import write_jsonl
    from .records import environment, write_provenance
    from .tasks import get_task

    rows, provenance = load_split_with_provenance(get_task(task, cfg["task_files"]), split, cfg["data"])
    write_jsonl(output, rows)
    env = environment()
    write_provenance(output, {"raw": provenance, "written": {"date": env["date"], "git_commit": env["git_commit"],
                                                              "versions": env["versions"]}})
    return rows
