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


# --------------------------------------------------------------------------- the table's chart


def test_glue_chart_names_metrics_and_n_shows_zero_bars_and_writes_svg(tmp_path, monkeypatch):
    """Ticks say MCC vs accuracy and n; a 0.0 bar (collapsed CoLA) is drawn; SVG beside the PNG."""
    import matplotlib.axes

    from gluerl.tables import bar_chart, build_table
    from gluerl.tasks import get_task

    tasks = [get_task("cola"), get_task("sst2")]

    def result(method, cola, sst2):
        return {"method": method, "model": "m", "seed": 1, "task": "x", "benchmark": "glue",
                "columns": {"cola": {"score": cola, "mcc": cola, "invalid_rate": 0.0, "n": 200,
                                     "ci": {"score": [cola, cola]}},
                            "sst2": {"score": sst2, "accuracy": sst2, "invalid_rate": 0.0, "n": 180,
                                     "ci": {"score": [sst2 - 0.05, sst2 + 0.05]}}}}

    header, rows = build_table([result("zeroshot", 0.0, 0.45), result("sft", 0.1, 0.55)], tasks)
    assert rows[0]["_n"] == {"cola": 200, "sst2": 180}
    drawn = {}
    real_hlines = matplotlib.axes.Axes.hlines

    def spy(self, y, xmin, xmax, *a, **kw):
        drawn.setdefault("zero", []).append((y, xmin, xmax))
        return real_hlines(self, y, xmin, xmax, *a, **kw)

    real_ticks = matplotlib.axes.Axes.set_xticks

    def ticks(self, pos, labels=None, **kw):
        drawn["ticks"] = list(labels)
        return real_ticks(self, pos, labels, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "hlines", spy)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xticks", ticks)
    bar_chart(header, rows, tmp_path / "glue.png", "GLUE", metrics={"cola": ["mcc"], "sst2": ["accuracy"]})
    assert drawn["ticks"] == ["cola\nMCC\nn=200", "sst2\naccuracy\nn=180", "average\nmean of tasks"]
    assert len(drawn["zero"]) == 1 and drawn["zero"][0][0] == 0  # zeroshot's CoLA bar only
    assert (tmp_path / "glue.png").stat().st_size > 0
    svg = (tmp_path / "glue.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "MCC" in svg and "n=200" in svg


# --------------------------------------------------------------------------- training curves


def _run(root, method, tset, seed, rows):
    d = root / "results/checkpoints" / method / "m" / tset / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "train_summary.json").write_text("{}")
    return d / "train_summary.json"


def test_seed_band_is_mean_min_max_over_seeds():
    from gluerl.plots import seed_band

    a = [{"step": 1, "kl": 0.0}, {"step": 2, "kl": 0.2}]
    b = [{"step": 1, "kl": 0.2}, {"step": 2, "kl": None}, {"step": 3, "kl": 0.6}]
    assert seed_band([a, b], "kl") == ([1, 2, 3], [pytest.approx(0.1), 0.2, 0.6], [0.0, 0.2, 0.6], [0.2, 0.2, 0.6])


def test_training_curves_per_setup_per_task_and_over_seeds(tmp_path, monkeypatch):
    import csv

    import matplotlib.axes

    from gluerl.plots import write_curves

    def ppo_rows(seed):
        return [{"step": s, "reward_mean": 0.1 * s + seed, "accuracy": 0.5, "invalid_rate": 0.1, "kl": 0.01 * s,
                 "kl_coef": 0.05, "entropy": 1.0, "value_loss": 2.0 / s, "clipfrac": 0.1, "value_clipfrac": 0.2,
                 "explained_variance": 0.0, "max_new_tokens": 8,
                 "task/sst2/reward_mean": 0.2 * s, "task/cola/reward_mean": -0.1 * s,
                 "task/sst2/accuracy": 0.6, "task/cola/accuracy": 0.4} for s in range(1, 4)]

    summaries = [_run(tmp_path, "ppo", "multi", 1, ppo_rows(1)), _run(tmp_path, "ppo", "multi", 2, ppo_rows(2)),
                 _run(tmp_path, "sft", "multi", 1, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])]
    bands, lines = [], []
    real_fill, real_plot = matplotlib.axes.Axes.fill_between, matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between",
                        lambda self, x, lo, hi, **kw: bands.append((self.get_title(), list(lo), list(hi)))
                        or real_fill(self, x, lo, hi, **kw))
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, *a, **kw: lines.append(kw.get("label")) or real_plot(self, *a, **kw))
    out = tmp_path / "plots"
    write_curves(summaries, out, tmp_path / "training_curves.png")

    assert {p.name for p in out.iterdir()} == {
        "ppo-m-multi-seed1.csv", "ppo-m-multi-seed2.csv", "sft-m-multi-seed1.csv", "ppo.csv", "sft.csv",
        "ppo-m-multi.png", "ppo-m-multi.svg", "sft-m-multi.png", "sft-m-multi.svg"}
    assert (tmp_path / "training_curves.png").is_file() and (tmp_path / "training_curves.svg").is_file()
    with open(out / "ppo.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["ppo-m-multi-seed1"] * 3 + ["ppo-m-multi-seed2"] * 3
    assert rows[0]["step"] == "1" and float(rows[3]["reward_mean"]) == pytest.approx(2.1)
    # the reward panel: the band over the two seeds spans their values (seed 1: 1.1, seed 2: 2.1 at step 1)
    reward = [b for b in bands if b[0] == "reward"]
    assert reward and reward[0][1][0] == pytest.approx(1.1) and reward[0][2][0] == pytest.approx(2.1)
    # per task lines (multi-task PPO) beside the overall one; SFT (one seed) has no band
    assert {"cola", "sst2"} <= set(lines)
    assert not [b for b in bands if b[0] == "loss"]
    svg = (out / "ppo-m-multi.svg").read_text()
    for title in ("KL to the reference", "KL coefficient", "value loss", "clip fraction", "entropy", "invalid rate"):
        assert title in svg
    assert "max_new_tokens" not in svg


def test_ppo_logs_each_tasks_reward_accuracy_and_invalid_rate():
    """Multi-task PPO: task/<task>/... over the step's episodes of that task (hand-counted)."""
    from types import SimpleNamespace

    import torch

    from gluerl.ppo import PPOTrainer
    from gluerl.tasks import get_task

    fake = SimpleNamespace(tasks={"sst2": get_task("sst2"), "stsb": get_task("stsb")},
                           _reduce_named=lambda values, op="sum": dict(values))
    records = [{"task": "sst2", "label": 1}, {"task": "sst2", "label": 0}, {"task": "sst2", "label": 1},
               {"task": "stsb", "label": 3.0}]
    preds = [1, 1, None, 2.5]
    got = PPOTrainer._task_metrics(fake, records, preds, torch.tensor([1.0, -1.0, -3.0, 2.0]))
    assert got == {"task/sst2/reward_mean": pytest.approx(-1.0), "task/sst2/accuracy": pytest.approx(1 / 3),
                   "task/sst2/invalid_rate": pytest.approx(1 / 3), "task/stsb/reward_mean": 2.0,
                   "task/stsb/accuracy": None, "task/stsb/invalid_rate": 0.0}
