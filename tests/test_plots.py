"""The PPO diagnostics figure and the run-comparison script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gluerl.errors import DataError
from gluerl.plots import diagnostics_figure

REPO = Path(__file__).resolve().parents[1]


def _metrics(path: Path, kl: float) -> Path:
    rows = [{"step": s, "reward_mean": -1 + 0.2 * s, "accuracy": 0.5 + 0.05 * s, "kl": kl * s, "invalid_rate": 0.0}
            for s in range(1, 6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_diagnostics_figure_draws_one_panel_per_logged_metric(tmp_path):
    import matplotlib.image as mpimg

    rows = [json.loads(x) for x in _metrics(tmp_path / "m.jsonl", 0.1).read_text().splitlines()]
    png = diagnostics_figure({"a": rows, "b": rows[:3]}, tmp_path / "fig.png")
    img = mpimg.imread(png)
    # four metrics are logged (no entropy, no explained variance): four panels side by side
    assert img.shape[1] > 3 * img.shape[0]
    assert img.std() > 0.05  # something is drawn


def test_diagnostics_figure_refuses_no_runs(tmp_path):
    with pytest.raises(DataError, match="no runs"):
        diagnostics_figure({}, tmp_path / "fig.png")
    assert not (tmp_path / "fig.png").exists()


def test_compare_script_prints_first_and_last_values(tmp_path):
    a, b = _metrics(tmp_path / "a.jsonl", 0.1), _metrics(tmp_path / "b.jsonl", 0.3)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks/compare_ppo_runs.py"), "--out", str(tmp_path / "c.png"),
                          "--steps", "4", f"before={a}", f"after={b}"], capture_output=True, text=True, check=True)
    assert "| before | -0.800 → -0.200" in out.stdout  # reward_mean at steps 1 and 4 (--steps 4)
    assert "| after |" in out.stdout and (tmp_path / "c.png").is_file()
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks/compare_ppo_runs.py"), "--out", str(tmp_path / "d.png"),
                          f"x={tmp_path / 'missing.jsonl'}"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no PPO steps" in bad.stderr and bad.stderr.count("\n") == 1
