"""Records that stand alone: what made a data file, a prompt file or an evaluation result.

Like lm-evaluation-harness's results files, every ``results/eval/.../{task}.json`` says which code
(package versions, git commit and whether the tree had uncommitted changes), when (UTC date),
and which data (source, dataset path and revision, the caps and whether rows were subsampled,
the number of shots and the demonstrations) produced its numbers, and every prediction keeps the
SHA-256 of the exact prompt text the model read.

The data facts travel with the files: ``download_dataset`` writes a provenance file beside each
raw split (``data/raw/{task}/{split}.provenance.json``), ``format_prompts`` one beside each prompt
file that copies the raw split's (and the demonstrations' split's) and adds the template, and the
evaluation reads the one beside each prompt file it scores. A missing provenance file (a prompt
file written by hand or by an older version) is recorded as ``null``, never guessed.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

PACKAGES = ("gluerl", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "mlflow")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, ``None`` for one that is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(args: list[str], cwd) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def git_commit(cwd: str | Path | None = None) -> str | None:
    """``HEAD`` of the repository at ``cwd`` (the working directory), ``None`` outside one."""
    out = _git(["rev-parse", "HEAD"], cwd)
    return out.strip() or None if out is not None else None


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether tracked files differ from ``HEAD`` (``None`` outside a repository)."""
    out = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return None if out is None else bool(out.strip())


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def environment(cwd: str | Path | None = None) -> dict[str, Any]:
    """Versions, commit, date, Python and the command line: the 'which code, when' of a record."""
    return {"date": utc_now(), "git_commit": git_commit(cwd), "git_dirty": git_dirty(cwd),
            "versions": package_versions(), "python": platform.python_version(),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else None}


# ---- provenance files beside data files ----

def provenance_path(data_file: str | Path) -> Path:
    """``data/raw/rte/train.jsonl`` -> ``data/raw/rte/train.provenance.json``."""
    p = Path(data_file)
    return p.with_name(p.name.removesuffix(".jsonl") + ".provenance.json")


def write_provenance(data_file: str | Path, record: dict[str, Any]) -> Path:
    from .io import write_json

    return write_json(provenance_path(data_file), {**record, "file": Path(data_file).name,
                                                   "sha256": sha256_file(data_file)})


def read_provenance(data_file: str | Path) -> dict[str, Any] | None:
    """The provenance beside ``data_file``, ``None`` when there is none or it describes another file
    (its ``sha256`` no longer matches: the data file was rewritten without it)."""
    path = provenance_path(data_file)
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("sha256") and Path(data_file).is_file() and rec["sha256"] != sha256_file(data_file):
        return None
    return rec


def num_shots(messages: Sequence[dict[str, str]]) -> int:
    """Demonstrations in a prompt chat: the assistant turns before the question."""
    return sum(m.get("role") == "assistant" for m in messages)


def split_data_record(prompt_file: str | Path, prompt_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What an evaluation column was computed from: the prompt file (path, hash, rows, shots) and
    the provenance of the data behind it (``data``: source, dataset, revision, caps; ``None`` if unknown)."""
    shots = sorted({num_shots(r["messages"]) for r in prompt_rows})
    prov = read_provenance(prompt_file)
    with open(prompt_file, "rb") as f:
        in_file = sum(1 for line in f if line.strip())
    return {"prompt_file": str(prompt_file), "prompt_file_sha256": sha256_file(prompt_file),
            "rows": len(prompt_rows), "rows_in_file": in_file, "num_fewshot": shots[0] if len(shots) == 1 else shots,
            "template": (prov or {}).get("template"), "data": (prov or {}).get("raw"),
            "demonstrations": (prov or {}).get("demonstrations")}


def evaluation_record(columns: dict[str, str], files: dict[str, str | Path], records: dict[str, Sequence[dict]],
                      limit: int | None = None) -> dict[str, Any]:
    """The 'which code, which data' part of an evaluation result: :func:`environment`, the number of
    shots, per column (``columns``: split -> column) the :func:`split_data_record`, ``limit`` (rows
    per split kept by the command line, ``None`` for all) and ``subsampled``: whether any split
    has fewer rows than its source (by ``data.max_samples`` or ``limit``; ``None`` when unknown)."""
    data = {columns[split]: split_data_record(files[split], rows) for split, rows in records.items()}
    shots = {d["num_fewshot"] for d in data.values() if isinstance(d["num_fewshot"], int)}
    raw = [d["data"] for d in data.values()]
    cut = None if any(r is None for r in raw) else any(r["subsampled"] for r in raw)
    if any(d["rows"] < d["rows_in_file"] for d in data.values()):
        cut = True  # --limit kept fewer rows than the prompt file has
    return {**environment(), "num_fewshot": shots.pop() if len(shots) == 1 else (sorted(shots) or None),
            "limit": limit, "data": data, "subsampled": cut}


DATA_PARAM_KEYS = ("source", "dataset", "revision", "resolved_revision", "rows_in_source", "rows", "max_samples",
                   "subsampled", "subsample_seed")


def data_params(files: dict[str, str | Path]) -> dict[str, Any]:
    """The data behind some prompt files (name -> file) as flat run params: ``data.{name}.source``,
    ``.dataset``, ``.revision``, caps, ``.subsampled``, ``.num_fewshot`` and ``.sha256`` (the file's)."""
    out: dict[str, Any] = {}
    for name, path in files.items():
        prov = read_provenance(path) or {}
        raw = prov.get("raw") or {}
        for key in DATA_PARAM_KEYS:
            if key in raw:
                out[f"data.{name}.{key}"] = raw[key]
        if prov.get("template"):
            out[f"data.{name}.num_fewshot"] = prov["template"].get("num_fewshot")
        if Path(path).is_file():
            out[f"data.{name}.sha256"] = sha256_file(path)
    return out
