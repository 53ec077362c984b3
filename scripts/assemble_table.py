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

from pathlib import Path

from gluerl import cli
from gluerl.errors import DataError
from gluerl.io import write_json, write_text
from gluerl.paired import paired_differences
from gluerl.tables import (add_differences, bar_chart, build_table, columns_for, load_results, to_csv, to_markdown,
                           to_metrics)
from gluerl.tasks import get_task
from gluerl.tracking import start_run

PREDICTIONS = ".predictions.jsonl"


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--benchmark", required=True, help="benchmark name (glue, superglue, ...)")
    cli.add_table_outputs(p)
    p.add_argument("results", nargs="+",
                   help="evaluation result JSON files and their .predictions.jsonl files")
    args = p.parse_args(argv)
    cfg = cli.load(args, "assemble_table")
    tasks = [get_task(t, cfg["task_files"]) for t in cfg["tasks"]]
    tasks = [t for t in tasks if t.benchmark == args.benchmark]
    with start_run(cfg["mlflow"], f"table-{args.benchmark}", "tables",
                   {"benchmark": args.benchmark, "tasks": ",".join(t.name for t in tasks),
                    "results": len(args.results), "reference_method": cfg["tables"]["reference_method"] or ""}
                   ) as tracker:
        assemble(args, cfg, tasks, tracker)


def prediction_files(result_paths, prediction_paths, results, reference):
    """{(method, model, seed, task): predictions file} of every result, when the reference method is
    among them (else empty: nothing to compare); a result whose file is not named is refused."""
    if reference is None or not any(r["method"] == reference for r in results):
        return {}
    named = {Path(p) for p in prediction_paths}
    files = {}
    for path, r in zip(result_paths, results):
        pred = Path(path).with_name(Path(path).name.removesuffix(".json") + PREDICTIONS)
        if pred not in named:
            raise DataError(f"the paired difference to {reference} needs the predictions file {pred}: "
                            "name it beside the result", path)
        files[(r["method"], r["model"], r["seed"], r["task"])] = pred
    return files


def assemble(args, cfg, tasks, tracker):
    result_paths = [p for p in args.results if not p.endswith(PREDICTIONS)]
    prediction_paths = [p for p in args.results if p.endswith(PREDICTIONS)]
    loaded = load_results(result_paths)
    kept = [(p, r) for p, r in zip(result_paths, loaded) if r["benchmark"] == args.benchmark]
    results = [r for _, r in kept]
    reference = cfg["tables"]["reference_method"]
    ev = cfg["evaluation"]
    files = prediction_files([p for p, _ in kept], prediction_paths, results, reference)
    header, rows = build_table(results, tasks)
    diffs = paired_differences(files, tasks, reference, ev["bootstrap_resamples"], ev["bootstrap_seed"],
                               ev["confidence_level"]) if files else {}
    header = add_differences(header, rows, diffs)
    title = f"{args.benchmark.upper()} ({', '.join(t.name for t in tasks)})"
    write_text(args.csv, to_csv(header, rows))
    write_text(args.markdown, to_markdown(header, rows, title, reference))
    bar_chart(header, rows, args.png, title, reference, {c: t.metrics for c, t in columns_for(tasks)})
    if args.metrics:
        write_json(args.metrics, to_metrics(header, rows))
    for r in rows:
        if r["average"] is not None:
            tracker.log_metrics({f"{r['method']}.{r['model']}.average": r["average"]}, prefix="table")
        if r.get("average_diff") is not None:
            tracker.log_metrics({f"{r['method']}.{r['model']}.average_diff": r["average_diff"]}, prefix="table")
    for path in (args.csv, args.markdown, args.png, args.metrics):
        if path:
            tracker.log_artifact(path)


if __name__ == "__main__":
    cli.run(main)
