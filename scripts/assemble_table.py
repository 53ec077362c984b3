"""Assemble a benchmark table (CSV, Markdown, bar chart) from evaluation results.

    python scripts/assemble_table.py --config config/config.yaml --benchmark glue \
        --csv results/tables/glue.csv --markdown results/tables/glue.md --png results/tables/glue.png \
        --metrics results/tables/glue.json \
        results/eval/*/*/seed*/*.json results/eval/*/*/seed*/*.predictions.jsonl

The files are the evaluation results (``{task}.json``) and their per-example predictions
(``{task}.predictions.jsonl``, beside each result). When the reference method
(``tables.reference_method``) is among the results, the other methods get their paired difference
to it, computed from the predictions (bootstrap settings: ``evaluation.bootstrap_*``,
``evaluation.confidence_level``); every result then needs its predictions file named too.
"""

from __future__ import annotations

from gluerl import cli
from gluerl.tables import assemble_table


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--benchmark", required=True, help="benchmark name (glue, superglue, ...)")
    cli.add_table_outputs(p)
    p.add_argument("results", nargs="+",
                   help="evaluation result JSON files and their .predictions.jsonl files")
    args = p.parse_args(argv)
    cfg = cli.load(args, "assemble_table")
    assemble_table(cfg, args.benchmark, args.results, csv=args.csv, markdown=args.markdown, png=args.png,
                   metrics=args.metrics)


if __name__ == "__main__":
    cli.run(main)
