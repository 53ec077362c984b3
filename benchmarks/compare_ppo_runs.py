r"""Draw PPO runs side by side: reward, accuracy, KL, invalid rate, entropy, explained variance per step.

    python benchmarks/compare_ppo_runs.py --out results/plots/ppo_before_after.png \
        before-ppo=/work/tune/before_ppo/metrics.jsonl \
        after-ppo=results/checkpoints/ppo/smollm2-135m/multi/seed1/metrics.jsonl

Each positional argument is LABEL=METRICS_JSONL (a PPO output folder's metrics.jsonl); ``--steps N``
keeps the first N steps of every run (to compare runs of different length). Prints a table of the
first and last values of each metric per run.
"""

from __future__ import annotations

import argparse
import sys

from gluerl.errors import GlueRLError
from gluerl.plots import DIAGNOSTIC_KEYS, diagnostics_figure, read_metrics


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="LABEL=METRICS_JSONL")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--steps", type=int, help="keep the first N steps of every run")
    args = p.parse_args(argv)
    try:
        runs = {}
        for spec in args.runs:
            label, sep, path = spec.partition("=")
            if not sep:
                raise GlueRLError(f"expected LABEL=METRICS_JSONL, got {spec!r}")
            rows = [r for r in read_metrics(path) if "step" in r]
            if not rows:
                raise GlueRLError(f"{path}: no PPO steps")
            runs[label] = [r for r in rows if args.steps is None or r["step"] <= args.steps]
        diagnostics_figure(runs, args.out)
    except GlueRLError as e:
        print(f"compare_ppo_runs: error: {e}", file=sys.stderr)
        return 1
    print("| run | " + " | ".join(f"{k} first → last (mean of last 4)" for k in DIAGNOSTIC_KEYS[:4]) + " |")
    print("|---|" + "---|" * 4)
    for label, rows in runs.items():
        cells = []
        for k in DIAGNOSTIC_KEYS[:4]:
            vals = [r[k] for r in rows if r.get(k) is not None]
            cells.append(f"{vals[0]:.3f} → {vals[-1]:.3f} ({sum(vals[-4:]) / len(vals[-4:]):.3f})" if vals else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
