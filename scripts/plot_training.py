"""Training curves of every run: one CSV per run (dvc plots) and one PNG.

    python scripts/plot_training.py --out-dir results/plots/training --png results/plots/training_curves.png \
        results/checkpoints/*/*/*/seed*/train_summary.json
"""

from __future__ import annotations

from gluerl import cli
from gluerl.plots import plot_training


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--out-dir", required=True, help="folder for the per-run CSV files")
    p.add_argument("--png", required=True, help="figure of all runs")
    p.add_argument("summaries", nargs="*", help="train_summary.json of each run (metrics.jsonl beside it)")
    args = p.parse_args(argv)
    cli.load(args, "plot_training")  # a --config is checked like every stage's (it sets nothing here)
    plot_training(args.summaries, args.out_dir, args.png)


if __name__ == "__main__":
    cli.run(main)
