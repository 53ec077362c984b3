"""Training curves: one CSV per training run (for ``dvc plots``) and one figure of them all.

Each run's ``metrics.jsonl`` (one JSON object per logged step, written by the SFT, PPO and GRPO
trainers) becomes ``{out_dir}/{method}-{model}-{train_set}-seed{seed}.csv`` with a ``step`` column
and every numeric metric; the figure shows, per method, the reward (PPO, GRPO) or the loss (SFT).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from .errors import DataError

CURVE_KEYS = ("reward_mean", "reward", "loss")  # first present is drawn


def read_metrics(path: str | Path) -> list[dict]:
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON ({e.msg})", path, n) from None
    return rows


def run_name(summary_path: str | Path) -> str:
    """``results/checkpoints/ppo/m/rte/seed1/train_summary.json`` -> ``ppo-m-rte-seed1``."""
    parts = Path(summary_path).parent.parts
    return "-".join(parts[-4:])


def write_curves(summaries: Sequence[str | Path], out_dir: str | Path, png: str | Path | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, curves = [], {}
    for s in summaries:
        rows = [r for r in read_metrics(Path(s).parent / "metrics.jsonl") if "step" in r]
        if not rows:
            continue
        keys = ["step"] + sorted({k for r in rows for k, v in r.items()
                                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)})
        path = out_dir / f"{run_name(s)}.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        written.append(path)
        key = next((k for k in CURVE_KEYS if k in keys), None)
        if key:
            curves[run_name(s)] = (key, [r["step"] for r in rows if key in r], [r[key] for r in rows if key in r])
    if png is not None:
        _figure(curves, png)
    return written


def _figure(curves: dict, png: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for k, _, _ in curves.values()}) or ["reward_mean"]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, (k, x, y) in sorted(curves.items()):
            if k == key:
                ax.plot(x, y, marker=".", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title("training " + key)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


DIAGNOSTIC_KEYS = ("reward_mean", "accuracy", "kl", "invalid_rate", "entropy", "explained_variance")


def diagnostics_figure(runs: dict[str, Sequence[dict]], png: str | Path,
                       keys: Sequence[str] = DIAGNOSTIC_KEYS) -> Path:
    """One panel per metric (reward, accuracy, KL, ...) over PPO steps, one line per run.

    ``runs``: label -> the rows of a run's ``metrics.jsonl``. Metrics a run does not log are left out
    of its panel; a panel no run has is dropped. Refuses an empty ``runs`` (no empty picture).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise DataError("no runs to draw")
    keys = [k for k in keys if any(r.get(k) is not None for rows in runs.values() for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, rows in runs.items():
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label)
        ax.set_xlabel("PPO step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
