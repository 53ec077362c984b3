"""Files: JSON Lines reading that names the file and line of bad input; atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .errors import DataError


BOM = b"\xef\xbb\xbf"


def _looks_delimited(line: str) -> str | None:
    """'CSV' or 'TSV' when a first line reads like a header of one, else None."""
    for name, sep in (("TSV", "\t"), ("CSV", ",")):
        cells = line.rstrip("\r\n").split(sep)
        if len(cells) > 1 and all(c.strip().strip('"').replace("_", "").replace(" ", "").isalnum() for c in cells):
            return name
    return None


def iter_jsonl(path: str | Path):
    """(line number, decoded line) of a JSON Lines file read as UTF-8 (a leading BOM is skipped);
    bytes that are not UTF-8 raise DataError naming the file, line and column."""
    path = Path(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]  # Excel and some editors write one; it is no part of the data
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start + 1}; "
                                "re-save the file as UTF-8", path, n) from None


def json_line_problem(line: str, n: int, last: bool) -> tuple[Any, str | None]:
    """(row, None) for a good JSON Lines line, else (None, what is wrong with it, with the column)."""
    text = line.rstrip("\r\n")
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        if n == 1 and (kind := _looks_delimited(text)):
            return None, (f"this is a {kind} file (header {text.strip()[:60]!r}), not JSON Lines (one JSON object "
                          "a line): convert it, e.g. with scripts/import_local_dataset.py")
        hint = "; the file may be truncated" if last and not line.endswith("\n") else ""  # ends mid-line
        return None, f"not valid JSON at column {e.colno} ({e.msg}){hint}"


def parse_json_line(line: str, path: Path, n: int, last: bool):
    """One JSON Lines row; a malformed one raises DataError with the file, line and column."""
    row, problem = json_line_problem(line, n, last)
    if problem:
        raise DataError(problem, path, n)
    return row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a JSON Lines file; bad input raises DataError naming file and line (and column)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file does not exist", path)
    lines = [(n, line) for n, line in iter_jsonl(path) if line.strip()]
    rows = []
    for i, (n, line) in enumerate(lines):
        row = parse_json_line(line, path, n, last=i == len(lines) - 1)
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
