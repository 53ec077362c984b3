"""Assemble a benchmark table (CSV, Markdown, bar chart) from evaluation results.

    python scripts/assemble_table.py --config config/config.yaml --benchmark glue \
        --csv results/tables/glue.csv --markdown results/tables/glue.md --png results/tables/glue.png \
        --metrics results/tables/glue.json \
        results/eval/*/*/seed*/*.json
"""

from __future__ import annotations

from gluerl import cli
from gluerl.io import write_json, write_text
from gluerl.tables import bar_chart, build_table, load_results, to_csv, to_markdown, to_metrics
from gluerl.tasks import get_task
from gluerl.tracking import start_run


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--benchmark", required=True, help="benchmark name (glue, superglue, ...)")
    cli.add_table_outputs(p)
    p.add_argument("results", nargs="+", help="evaluation result JSON files")
    args = p.parse_args(argv)
    cfg = cli.load(args)
    tasks = [get_task(t, cfg["task_files"]) for t in cfg["tasks"]]
    tasks = [t for t in tasks if t.benchmark == args.benchmark]
    with start_run(cfg["mlflow"], f"table-{args.benchmark}", "tables",
                   {"benchmark": args.benchmark, "tasks": ",".join(t.name for t in tasks),
                    "results": len(args.results)}) as tracker:
        assemble(args, tasks, tracker)


def assemble(args, tasks, tracker):
    results = [r for r in load_results(args.results) if r["benchmark"] == args.benchmark]
    header, rows = build_table(results, tasks)
    title = f"{args.benchmark.upper()} ({', '.join(t.name for t in tasks)})"
    write_text(args.csv, to_csv(header, rows))
    write_text(args.markdown, to_markdown(header, rows, title))
    bar_chart(header, rows, args.png, title)
    if args.metrics:
        write_json(args.metrics, to_metrics(header, rows))
    for r in rows:
        if r["average"] is not None:
            tracker.log_metrics({f"{r['method']}.{r['model']}.average": r["average"]})
    for path in (args.csv, args.markdown, args.png, args.metrics):
        if path:
            tracker.log_artifact(path)


if __name__ == "__main__":
    cli.run(main)
