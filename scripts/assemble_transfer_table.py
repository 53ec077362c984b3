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
from gluerl.io import write_json, write_text
from gluerl.tables import bar_chart, build_table, columns_for, load_results, to_csv, to_markdown, to_metrics
from gluerl.tasks import registry
from gluerl.transfer import BENCHMARK, parse_targets, target_task


def main(argv=None):
    p = cli.parser(__doc__)
    cli.add_table_outputs(p)
    p.add_argument("results", nargs="+", help="transfer result JSON files (scripts/evaluate_transfer.py)")
    args = p.parse_args(argv)
    cfg = cli.load(args, "assemble_transfer_table")
    tasks = registry(cfg["task_files"])
    targets = parse_targets(cfg, tasks, check_files=False)
    columns = [target_task(t, tasks[t.source_task]) for t in targets]
    results = [r for r in load_results(args.results) if r.get("benchmark") == BENCHMARK]
    header, rows = build_table(results, columns)
    title = "Transfer (" + ", ".join(f"{t.source_task} -> {t.name}" for t in targets) + ")"
    md = to_markdown(header, rows, title)
    md += "\nTargets (the source task's prompt, adapter and metrics on another dataset):\n\n"
    md += "".join(f"- {t.name}: trained on {t.source_task}, rows from {t.source()}\n" for t in targets)
    write_text(args.csv, to_csv(header, rows))
    write_text(args.markdown, md)
    bar_chart(header, rows, args.png, title, metrics={c: t.metrics for c, t in columns_for(columns)})
    if args.metrics:
        write_json(args.metrics, to_metrics(header, rows))


if __name__ == "__main__":
    cli.run(main)
