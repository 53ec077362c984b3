"""Assemble the transfer table: a row per method and model, a column per target dataset.

    python scripts/assemble_transfer_table.py --config config/transfer-example.yaml \
        --csv results/tables/transfer.csv --markdown results/tables/transfer.md \
        --png results/tables/transfer.png --metrics results/tables/transfer.json \
        results/transfer/*/*/seed*/*.json

Scores are percent, the mean over seeds, with the source task's metrics; the average is over the
targets. The Markdown names each target's source task and dataset.
"""

from __future__ import annotations

from gluerl import cli
from gluerl.tables import assemble_transfer_table


def main(argv=None):
    p = cli.parser(__doc__)
    cli.add_table_outputs(p)
    p.add_argument("results", nargs="+", help="transfer result JSON files (scripts/evaluate_transfer.py)")
    args = p.parse_args(argv)
    cfg = cli.load(args, "assemble_transfer_table")
    assemble_transfer_table(cfg, args.results, csv=args.csv, markdown=args.markdown, png=args.png,
                            metrics=args.metrics)


if __name__ == "__main__":
    cli.run(main)
