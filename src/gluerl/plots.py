"""Training curves: CSV files for ``dvc plots``, a diagnostics figure per training setup, one overview.

Each run's ``metrics.jsonl`` (one JSON object per logged step, written by the SFT, PPO and GRPO
trainers) becomes ``{out_dir}/{method}-{model}-{train_set}-seed{seed}.csv`` (a ``step`` column and
every numeric metric) and a block of rows of ``{out_dir}/{method}.csv`` (the same with a ``run``
column first: fixed file names, so ``dvc.yaml`` can name x and y, coloured by run).

Runs that differ only in the seed form a *setup* (method, model, train set). Each setup gets
``{out_dir}/{method}-{model}-{train_set}.png`` (and ``.svg``): one panel per diagnostic its method
logs (PPO: reward, accuracy, invalid rate, KL with its coefficient, entropy, value loss, clip
fractions, explained variance; GRPO: reward and its spread, KL, entropy, clip ratio, completion
length; SFT: loss, token accuracy), the mean over seeds as a line and, with several seeds, their
min-max range as a band; in multi-task PPO the reward, accuracy and invalid-rate panels add one
line per task (``task/<task>/...``). The overview (``--png``, and an SVG beside it) stacks every
setup's panels, a row each. Steps are whole numbers on the x axis.

The ``plot_training`` stage (``scripts/plot_training.py``) is :func:`plot_training`.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, DataError

# panels per method family: (title, [(key, style label)]); the first key present draws the panel
PANELS = {
    "ppo": [("reward", ["reward_mean"]), ("accuracy", ["accuracy"]), ("invalid rate", ["invalid_rate"]),
            ("KL to the reference", ["kl"]), ("KL coefficient", ["kl_coef"]), ("entropy", ["entropy"]),
            ("value loss", ["value_loss"]), ("clip fraction", ["clipfrac", "value_clipfrac"]),
            ("explained variance", ["explained_variance"])],
    "grpo": [("reward", ["reward"]), ("reward std", ["reward_std"]), ("KL to the reference", ["kl"]),
             ("entropy", ["entropy"]), ("clip ratio", ["clip_ratio/region_mean", "clip_ratio/low_mean",
                                                       "clip_ratio/high_mean"]),
             ("completion length", ["completions/mean_length"]), ("loss", ["loss"])],
    "sft": [("loss", ["loss"]), ("token accuracy", ["mean_token_accuracy"]), ("entropy", ["entropy"]),
            ("learning rate", ["learning_rate"])],
}
PANELS["sft_ppo"] = PANELS["ppo"]
PER_TASK = {"reward_mean": "reward", "accuracy": "accuracy", "invalid_rate": "invalid rate"}


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


def _setup(summary_path: str | Path) -> tuple[str, str, str]:
    parts = Path(summary_path).parent.parts
    return parts[-4], parts[-3], parts[-2]


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_training(summaries: Sequence[str | Path], out_dir: str | Path, png: str | Path) -> list[Path]:
    """The ``plot_training`` stage (``scripts/plot_training.py``): :func:`write_curves` of the runs whose
    ``train_summary.json`` files are ``summaries`` (at least one; ``metrics.jsonl`` beside each)."""
    if not summaries:
        raise ConfigError("no train_summary.json given: nothing to plot (name the runs' summaries after the flags)")
    return write_curves(summaries, out_dir, png)


def write_curves(summaries: Sequence[str | Path], out_dir: str | Path, png: str | Path | None = None) -> list[Path]:
    """The CSV files, the per-setup figures and (``png``) the overview; returns the per-run CSVs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    setups: dict[tuple[str, str, str], dict[str, list[dict]]] = defaultdict(dict)
    by_method: dict[str, list[tuple[str, list[dict]]]] = defaultdict(list)
    for s in summaries:
        rows = [r for r in read_metrics(Path(s).parent / "metrics.jsonl") if "step" in r]
        if not rows:
            continue
        keys = ["step"] + sorted({k for r in rows for k, v in r.items() if k != "step" and _numeric(v)})
        path = out_dir / f"{run_name(s)}.csv"
        _write_csv(path, keys, rows)
        written.append(path)
        setups[_setup(s)][run_name(s)] = rows
        by_method[_setup(s)[0]].append((run_name(s), rows))
    for method, runs in by_method.items():  # fixed names for dvc.yaml: one file per method, a run column
        keys = ["run", "step"] + sorted({k for _, rows in runs for r in rows for k, v in r.items()
                                         if k != "step" and _numeric(v)})
        _write_csv(out_dir / f"{method}.csv", keys, [{"run": name, **r} for name, rows in runs for r in rows])
    for (method, model, tset), runs in sorted(setups.items()):
        training_figure({(method, model, tset): runs}, out_dir / f"{method}-{model}-{tset}.png")
    if png is not None:
        training_figure(dict(sorted(setups.items())), png)
    return written


def _write_csv(path: Path, keys: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def seed_band(runs: Sequence[Sequence[dict]], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """(steps, mean, min, max) of ``key`` over runs at each step some run logged it (None values skipped)."""
    at: dict[float, list[float]] = defaultdict(list)
    for rows in runs:
        for r in rows:
            if _numeric(r.get(key)) and "step" in r:
                at[r["step"]].append(float(r[key]))
    steps = sorted(at)
    return (steps, [sum(at[s]) / len(at[s]) for s in steps], [min(at[s]) for s in steps],
            [max(at[s]) for s in steps])


def _panels(method: str, runs: Sequence[Sequence[dict]]) -> list[tuple[str, list[str], list[str]]]:
    """(title, keys present, per-task keys) of every panel that some run of ``method`` logs."""
    present = {k for rows in runs for r in rows for k, v in r.items() if _numeric(v)}
    tasks = sorted({k.split("/")[1] for k in present if k.startswith("task/") and k.count("/") == 2})
    out = []
    for title, keys in PANELS.get(method, PANELS["ppo"]):
        got = [k for k in keys if k in present]
        per_task = [f"task/{t}/{keys[0]}" for t in tasks if keys[0] in PER_TASK and f"task/{t}/{keys[0]}" in present]
        if got or per_task:
            out.append((title, got, per_task))
    return out


def training_figure(setups: dict[tuple[str, str, str], dict[str, list[dict]]], png: str | Path) -> Path:
    """Rows of panels, one row per setup (method, model, train set) -> {run name: metrics rows};
    mean over seeds with a min-max band; PNG at ``png`` and SVG beside it. An empty ``setups``
    draws one empty panel that says so (the workflow always has this output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    layout = [(setup, list(runs.values()), _panels(setup[0], list(runs.values()))) for setup, runs in setups.items()]
    layout = [x for x in layout if x[2]]
    ncols = max((len(p) for _, _, p in layout), default=1)
    fig, axes = plt.subplots(max(len(layout), 1), ncols, figsize=(3.2 * ncols, 2.7 * max(len(layout), 1) + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    if not layout:
        ax = axes[0][0]
        ax.set_visible(True)
        ax.text(0.5, 0.5, "no training run logged metrics", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for i, ((method, model, tset), runs, panels) in enumerate(layout):
        seeds = len(runs)
        for j, (title, keys, per_task) in enumerate(panels):
            ax = axes[i][j]
            ax.set_visible(True)
            ax.set_title(title, fontsize=9)
            for k, key in enumerate(keys):
                _band(ax, runs, key, key if len(keys) > 1 or per_task else None, "-" if k == 0 else "--")
            for key in per_task:
                _band(ax, runs, key, key.split("/")[1], ":")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
            ax.set_xlabel("step", fontsize=7)
        band = f"mean of {seeds} seeds, band: min-max" if seeds > 1 else "1 seed"
        axes[i][0].set_ylabel(f"{method}\n{model} / {tset}\n({band})", fontsize=8)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    fig.savefig(png.with_suffix(".svg"))
    plt.close(fig)
    return png


def _band(ax, runs, key, label, style) -> None:
    steps, mean, lo, hi = seed_band(runs, key)
    if not steps:
        return
    (line,) = ax.plot(steps, mean, style, marker="." if len(steps) < 30 else None, label=label, linewidth=1.2)
    if len(runs) > 1:
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


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
