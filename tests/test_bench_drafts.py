"""benchmarks/eval_drafts.py end to end on the tiny model: both sides run, the ratio table is printed,
and the exit status says whether every completion was the same with drafts on and off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gluerl import testing
from gluerl.io import write_jsonl
from training_helpers import subprocess_env

REPO = Path(__file__).resolve().parents[1]


def test_eval_drafts_runs_both_sides_and_finds_the_same_completions(tiny_model, tmp_path):
    data = tmp_path / "glue"
    write_jsonl(data / "sst2" / "validation.jsonl", testing.generate_rows("sst2", 8, seed=1))
    write_jsonl(data / "sst2" / "train.jsonl", testing.generate_rows("sst2", 16, seed=2))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_drafts.py"), "--model-dir", str(tiny_model),
                           "--data-dir", str(data), "--tasks", "sst2", "--shots", "0", "2", "--limit", "8",
                           "--rounds", "2", "--batch-size", "4"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| sst2 |")]
    assert len(rows) == 2, proc.stdout
    for row, shots in zip(rows, ("0", "2")):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == shots and cells[4].endswith("x") and cells[-1] == "100%", row
        assert float(cells[2]) > 0 and float(cells[3]) > 0
