"""Several seeds of ``rl_time_to_accuracy.py`` in one table and one figure.

    for seed in 1 2 3; do python benchmarks/rl_time_to_accuracy.py ... --seed $seed --json tta_seed$seed.json; done
    python benchmarks/rl_time_to_accuracy_summary.py tta_seed*.json --plot tta.png

Reads the ``--json`` files of single runs (each: the threshold and both sides' points, episodes,
training seconds and held-out accuracy) and prints, per run, the threshold, when each side reached
it, the ratio GRPO/ours against the target, and both accuracies at equal wall-clock (the shorter
side's total) and at the full budget; then how many runs pass and the median ratio (a side that never
reached the threshold counts as its whole training time, a lower bound, written ``>``).
``--plot`` draws held-out accuracy against training seconds, one panel per run, with the threshold
and each evaluation's 95% interval (normal approximation over the run's held-out rows).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rl_time_to_accuracy import NAMES, TARGET, summarise  # noqa: E402


def load_run(path: Path) -> dict:
    """One ``--json`` file, checked: one clear line naming the file when it is not one."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        for side in NAMES:
            run[side]["points"] = [tuple(p) for p in run[side]["points"]]
            if not run[side]["points"]:
                raise ValueError(f"{side} has no points")
        float(run["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.exit(f"rl_time_to_accuracy_summary: {path}: not a --json file of rl_time_to_accuracy.py ({exc})")
    return run


def table(names: list[str], rows: list[dict]) -> str:
    out = [f"| run | start → threshold | ours reaches it | GRPO reaches it | GRPO/ours (target >= {TARGET}x) "
           "| at equal wall-clock: ours / GRPO | at the end: ours / GRPO |", "|---|---|---|---|---|---|---|"]
    for name, r in zip(names, rows):
        reach = {side: "never" if r["reach"][side] is None
                 else f"{r['reach'][side][0]:.0f} s ({r['reach'][side][1]} ep.)" for side in NAMES}
        if r["ratio"] is None:
            verdict = "ours never: FAIL"
        else:
            verdict = f"{'> ' if r['bound'] else ''}{r['ratio']:.2f}x {'PASS' if r['ratio'] >= TARGET else 'FAIL'}"
        out.append(f"| {name} | {r['start']:.3f} → {r['threshold']:.3f} | {reach['ours']} | {reach['grpo']} "
                   f"| {verdict} | {r['at_equal']['ours']:.3f} / {r['at_equal']['grpo']:.3f} ({r['equal_s']:.0f} s) "
                   f"| {r['at_end']['ours']:.3f} / {r['at_end']['grpo']:.3f} |")
    ratios = [r["ratio"] if r["ratio"] is not None else 0.0 for r in rows]
    passed = sum(x >= TARGET for x in ratios)
    ahead = sum(r["at_equal"]["ours"] > r["at_equal"]["grpo"] for r in rows)
    out.append(f"\n{passed} of {len(rows)} runs PASS; median ratio GRPO/ours {statistics.median(ratios):.2f}x "
               f"(a run where ours never reached the threshold counts as 0); ours ahead at equal wall-clock in "
               f"{ahead} of {len(rows)}")
    return "\n".join(out)


def plot(names: list[str], runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.0), sharey=True, squeeze=False)
    for ax, name, run in zip(axes[0], names, runs):
        for side, style in (("ours", "o-"), ("grpo", "s--")):
            pts, n = run[side]["points"], run[side].get("heldout")
            half = [1.96 * math.sqrt(p[2] * (1 - p[2]) / n) if n else 0.0 for p in pts]
            ax.errorbar([p[1] for p in pts], [p[2] for p in pts], yerr=half, fmt=style, label=NAMES[side],
                        markersize=4, capsize=2, elinewidth=0.8)
        ax.axhline(run["threshold"], color="grey", linewidth=0.8, linestyle=":", label="threshold")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training seconds")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out accuracy")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="--json files of rl_time_to_accuracy.py, one per run")
    p.add_argument("--plot", type=Path, help="also draw accuracy against training seconds here (PNG or SVG)")
    args = p.parse_args(argv)
    runs = [load_run(path) for path in args.runs]
    names = [path.stem for path in args.runs]
    print(table(names, [summarise(run) for run in runs]))
    if args.plot:
        plot(names, runs, args.plot)
        print(f"figure: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
