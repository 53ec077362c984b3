"""Files: JSON Lines reading that names the file and line of bad input; atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .errors import DataError


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a JSON Lines file; a malformed line raises DataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file does not exist", path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON ({e.msg}); the file may be truncated", path, n) from None
            if not isinstance(row, dict):
                raise DataError("expected a JSON object", path, n)
            rows.append(row)
    return rows


def umask() -> int:
    """The process's umask (Linux reads it without changing it; elsewhere set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 whatever the umask; the output gets the mode open() would give it
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows atomically (a reader never sees a half-written file)."""
    def w(f):
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return _atomic(path, w)


def write_json(path: str | Path, obj: Any) -> Path:
    return _atomic(path, lambda f: f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"))


def write_text(path: str | Path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text))
