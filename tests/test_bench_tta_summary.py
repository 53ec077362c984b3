"""benchmarks/rl_time_to_accuracy_summary.py on hand-made runs: the verdict of each run, the count and
median over runs, the figure, and one line naming a file that is not a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from training_helpers import subprocess_env

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "rl_time_to_accuracy_summary.py"


def run_file(path: Path, ours, grpo, threshold=0.75):
    """A --json file of rl_time_to_accuracy.py: points (episodes, training seconds, accuracy) per side."""
    path.write_text(json.dumps({"threshold": threshold,
                                "ours": {"side": "ours", "points": ours, "heldout": 200, "steps": []},
                                "grpo": {"side": "grpo", "points": grpo, "heldout": 200}}))
    return path


def test_summary_gives_each_runs_verdict_the_count_and_the_median(tmp_path):
    runs = [
        # ours at 50 s, GRPO at 150 s: 3.00x PASS; at 100 s (the shorter total) 0.80 against 0.70
        run_file(tmp_path / "a.json", [[0, 0, 0.7], [64, 50, 0.76], [128, 100, 0.80]],
                 [[0, 0, 0.7], [64, 100, 0.70], [128, 150, 0.78]]),
        # ours at 100 s, GRPO at 60 s: 0.60x FAIL
        run_file(tmp_path / "b.json", [[0, 0, 0.7], [64, 50, 0.72], [128, 100, 0.77]],
                 [[0, 0, 0.7], [64, 60, 0.80], [128, 120, 0.81]]),
        # GRPO never gets there within its 200 s: at least 200 / 50 = 4.00x
        run_file(tmp_path / "c.json", [[0, 0, 0.7], [64, 50, 0.90], [128, 100, 0.91]],
                 [[0, 0, 0.7], [64, 100, 0.55], [128, 200, 0.55]]),
    ]
    figure = tmp_path / "fig" / "tta.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, runs), "--plot", str(figure)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| run")}
    assert rows["a"][4] == "3.00x PASS" and rows["a"][5] == "0.800 / 0.700 (100 s)"
    assert rows["b"][4] == "0.60x FAIL" and rows["b"][3] == "60 s (64 ep.)"
    assert rows["c"][4] == "> 4.00x PASS" and rows["c"][3] == "never" and rows["c"][6] == "0.910 / 0.550"
    assert "2 of 3 runs PASS; median ratio GRPO/ours 3.00x" in proc.stdout
    assert "ours ahead at equal wall-clock in 2 of 3" in proc.stdout
    assert figure.is_file() and figure.stat().st_size > 0


def test_a_file_that_is_not_a_run_is_one_line_that_names_it(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"threshold": 0.7, "ours": {"points": []}}))
    proc = subprocess.run([sys.executable, str(SCRIPT), str(bad)], env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"rl_time_to_accuracy_summary: {bad}: not a --json file of rl_time_to_accuracy.py (ours has no points)"]
