"""Benchmark tables: a row per method and model, a column per task column plus the average.

Scores are percent with one decimal, the mean over seeds of each column's score (the mean of the
task's metrics, the leaderboard convention). Each column has its bootstrap confidence interval
(``{column}_lo``, ``{column}_hi`` in the CSV, ``47.3 [41.5, 53.1]`` in Markdown, error bars in the
chart): the evaluation's percentile interval of the score, averaged over seeds bound by bound; blank
for results evaluated without intervals. The average counts the columns of tasks that are
``in_average``. The same table is written as CSV, Markdown (with the invalid-answer rates) and a
bar chart PNG.

With a reference method (``tables.reference_method``, default ``sft``) among the rows, every other
row of the same model also gets its paired difference to it (:mod:`gluerl.paired`: the same examples
on both sides, per seed then averaged, a paired bootstrap with every metric recomputed per resample),
in points: ``{column}_diff``, ``{column}_diff_lo``, ``{column}_diff_hi`` (its interval) and
``{column}_diff_p`` (two-sided bootstrap p-value) for every column and the average, after the
existing columns; a second Markdown table ("Difference to sft": ``+3.2 [1.1, 5.0] p=0.004``); and a
``*`` in the chart above every bar whose interval of the difference excludes 0.

The two table stages are here, one function each behind a thin script: :func:`assemble_table` (rule
``assemble_table``, ``scripts/assemble_table.py``) and :func:`assemble_transfer_table`
(``scripts/assemble_transfer_table.py``). Their imports of the evaluation side (paired
differences, MLflow) wait until they run: the workflow imports this module to plan the DAG.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError
from .tasks import Task

METHOD_ORDER = ["zeroshot", "fewshot", "sft", "ppo", "sft_ppo", "grpo"]
CI_SUFFIXES = ("_lo", "_hi")
DIFF_SUFFIXES = ("_diff", "_diff_lo", "_diff_hi", "_diff_p")


def score_columns(header: Sequence[str]) -> list[str]:
    """The score columns of a table header (no method/model/seeds, no interval or difference columns)."""
    names = set(header)
    derived = {c + s for c in names for s in CI_SUFFIXES + DIFF_SUFFIXES}
    return [h for h in header[3:] if h not in derived]


def difference_columns(header: Sequence[str]) -> list[str]:
    """The score columns (the average included) that have difference columns."""
    return [c for c in score_columns(header) if c + "_diff" in header]


def add_differences(header: list[str], rows: list[dict], diffs: dict[tuple[str, str], dict]) -> list[str]:
    """Put the paired differences (:func:`gluerl.paired.paired_differences`, fractions) into the rows
    as points, one decimal (p-values: four); returns the header with their columns after the existing
    ones, or the header unchanged when there are none. Rows without a difference (the reference
    itself, other models) leave them blank."""
    if not diffs:
        return header
    cols = score_columns(header)
    for r in rows:
        d = diffs.get((r["method"], r["model"]), {})
        for c in cols:
            x = d.get(c)
            r[c + "_diff"] = None if x is None else round(100 * x.diff, 1)
            r[c + "_diff_lo"] = None if x is None or x.lo is None else round(100 * x.lo, 1)
            r[c + "_diff_hi"] = None if x is None or x.hi is None else round(100 * x.hi, 1)
            r[c + "_diff_p"] = None if x is None or x.p is None else round(x.p, 4)
        r["_diff_seeds"] = max((x.seeds for x in d.values()), default=None)
    return header + [c + s for c in cols for s in DIFF_SUFFIXES]


def columns_for(tasks: Sequence[Task]) -> list[tuple[str, Task]]:
    """(column, task) for every labelled evaluation split of the tasks, in their order."""
    return [(col, t) for t in tasks if t.labelled for col in t.eval_splits.values()]


def load_results(paths: Sequence[str | Path]) -> list[dict]:
    out = []
    for p in paths:
        try:
            out.append(json.loads(Path(p).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read evaluation result: {e}", p) from e
    return out


def build_table(results: Sequence[dict], tasks: Sequence[Task]) -> tuple[list[str], list[dict]]:
    """(header, rows); each row has method, model, seeds, one value per column, average."""
    cols = columns_for(tasks)
    groups: dict[tuple[str, str], dict[str, list]] = {}
    invalid: dict[tuple[str, str], dict[str, list]] = {}
    bounds: dict[tuple[str, str], dict[str, list]] = {}
    sizes: dict[tuple[str, str], dict[str, list]] = {}
    seeds: dict[tuple[str, str], set] = {}
    for r in results:
        key = (r["method"], r["model"])
        seeds.setdefault(key, set()).add(r["seed"])
        for col, res in r["columns"].items():
            if "score" in res:
                groups.setdefault(key, {}).setdefault(col, []).append(res["score"])
                invalid.setdefault(key, {}).setdefault(col, []).append(res["invalid_rate"])
                if isinstance(res.get("n"), int):
                    sizes.setdefault(key, {}).setdefault(col, []).append(res["n"])
                if "score" in res.get("ci", {}):
                    bounds.setdefault(key, {}).setdefault(col, []).append(res["ci"]["score"])
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows = []
    for key in sorted(groups, key=lambda k: (k[1], order.get(k[0], 99), k[0])):
        row: dict = {"method": key[0], "model": key[1], "seeds": len(seeds[key])}
        in_avg = []
        for col, task in cols:
            vals = groups[key].get(col)
            row[col] = round(100 * float(np.mean(vals)), 1) if vals else None
            ci = bounds.get(key, {}).get(col)
            ok = bool(vals) and ci is not None and len(ci) == len(vals)  # every seed has its interval
            for i, suffix in enumerate(CI_SUFFIXES):
                row[col + suffix] = round(100 * float(np.mean([b[i] for b in ci])), 1) if ok else None
            if vals and task.in_average:
                in_avg.append(100 * float(np.mean(vals)))
        n_avg = sum(1 for _, t in cols if t.in_average)
        row["average"] = round(float(np.mean(in_avg)), 1) if in_avg and len(in_avg) == n_avg else None
        row["_invalid"] = {c: round(100 * float(np.mean(v)), 1) for c, v in invalid[key].items()}
        row["_n"] = {c: max(v) for c, v in sizes.get(key, {}).items()}
        rows.append(row)
    header = ["method", "model", "seeds"] + [c + s for c, _ in cols for s in ("", *CI_SUFFIXES)] + ["average"]
    return header, rows


def to_csv(header: list[str], rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if r.get(h) is None else r.get(h) for h in header])
    return buf.getvalue()


def to_metrics(header: list[str], rows: list[dict]) -> dict:
    """Nested ``{model: {method: {column: score}}}`` for ``dvc metrics show``."""
    out: dict = {}
    for r in rows:
        out.setdefault(r["model"], {})[r["method"]] = {h: r.get(h) for h in header[3:]}
    return out


def difference_cell(r: dict, c: str) -> str:
    """``+3.2 [1.1, 5.0] p=0.004`` (``–`` without a difference; no interval without resamples)."""
    d, lo, hi, p = (r.get(c + s) for s in DIFF_SUFFIXES)
    if d is None:
        return "–"
    text = f"{d:+.1f}"
    if lo is not None and hi is not None:
        text += f" [{lo:.1f}, {hi:.1f}]"
    if p is not None:
        text += " p<0.001" if p < 0.001 else f" p={p:.3f}"
    return text


def to_markdown(header: list[str], rows: list[dict], title: str, reference: str | None = None) -> str:
    def fmt(v):
        return "–" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))

    def cell(r, h):
        lo, hi = r.get(h + "_lo"), r.get(h + "_hi")
        return fmt(r.get(h)) + (f" [{lo:.1f}, {hi:.1f}]" if lo is not None and hi is not None else "")

    shown = header[:3] + score_columns(header)
    lines = [f"# {title}", "", "Scores in percent (mean over seeds) with their bootstrap confidence interval "
             "[low, high] (evaluation.confidence_level; each bound the mean over seeds); average over the "
             "benchmark's tasks.", ""]
    lines += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(r, h) for h in shown) + " |" for r in rows]
    diff_cols = difference_columns(header)
    diff_rows = [r for r in rows if any(r.get(c + "_diff") is not None for c in diff_cols)]
    if diff_rows:
        lines += ["", f"## Difference to {reference or 'the reference method'}", "",
                  f"Points, method minus {reference or 'the reference'} on the same examples (paired by idx; "
                  "within each seed both have, then the mean over those seeds, counted in `seeds`), with the "
                  "paired bootstrap interval [low, high] (the same resampled examples for both methods, every "
                  "metric recomputed per resample; evaluation.confidence_level) and the two-sided bootstrap "
                  "p-value 2·min(P(d ≤ 0), P(d ≥ 0)) over the resamples (the sample counted as one more, so p is at "
                  "least 2/(resamples + 1): 0.002 for 1000). The average's difference is the mean of the columns'.", ""]
        lines += ["| " + " | ".join(["method", "model", "seeds", *diff_cols]) + " |", "|" + "---|" * (len(diff_cols) + 3)]
        lines += [f"| {r['method']} | {r['model']} | {fmt(r.get('_diff_seeds'))} | "
                  + " | ".join(difference_cell(r, c) for c in diff_cols) + " |" for r in diff_rows]
    cols = score_columns(header)[:-1]
    lines += ["", "Invalid (unparseable or ambiguous) answers, percent:", ""]
    lines += ["| method | model | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    lines += [f"| {r['method']} | {r['model']} | " + " | ".join(fmt(r['_invalid'].get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def excludes_zero(r: dict, c: str) -> bool:
    """Whether the row's interval of the difference in column ``c`` lies wholly above or below 0."""
    lo, hi = r.get(c + "_diff_lo"), r.get(c + "_diff_hi")
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


METRIC_LABELS = {"accuracy": "accuracy", "mcc": "MCC", "f1": "F1", "pearson": "Pearson r", "spearman": "Spearman",
                 "macro_f1": "macro-F1", "multirc_em": "EM", "multirc_f1a": "F1a", "record_f1": "F1", "record_em": "EM"}


def metric_label(metrics: Sequence[str]) -> str:
    """``["f1", "accuracy"]`` -> ``"mean(F1, accuracy)"``; ``["mcc"]`` -> ``"MCC"``."""
    names = [METRIC_LABELS.get(m, m) for m in metrics]
    return names[0] if len(names) == 1 else f"mean({', '.join(names)})"


def bar_chart(header: list[str], rows: list[dict], path: str | Path, title: str, reference: str | None = None,
              metrics: dict[str, Sequence[str]] | None = None) -> list[tuple[str, str, str]]:
    """Grouped bars with the score intervals as error bars; a ``*`` above every bar whose interval of
    the difference to ``reference`` excludes 0 (explained in the legend). Returns the starred bars as
    (method, model, column).

    Each column's tick names its metric (``metrics``: column -> the task's metric names; MCC and
    correlations are x100 like the rest) and its number of examples (``n=``, from the rows'
    ``_n``); a bar of exactly 0 (a collapsed MCC) is drawn as a thick line at 0 and labelled ``0``,
    a missing value as ``n/a``. The chart is written as PNG at ``path`` and as SVG beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = score_columns(header)
    x = np.arange(len(cols))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cols) + 2), 4.5))
    marked = []
    diffed = bool(difference_columns(header))
    for i, r in enumerate(rows):
        vals = [np.nan if r.get(c) is None else r[c] for c in cols]
        err = np.array([[v - r[c + "_lo"], r[c + "_hi"] - v] if r.get(c + "_lo") is not None else [np.nan, np.nan]
                        for c, v in zip(cols, vals)]).T
        pos = x + (i - (len(rows) - 1) / 2) * width
        label = f"{r['method']} ({r['model']})" + (", reference" if r["method"] == reference and diffed else "")
        bars = ax.bar(pos, vals, width, label=label, yerr=err, capsize=2, error_kw={"linewidth": 0.8})
        color = bars.patches[0].get_facecolor() if bars.patches else None
        for xi, v in zip(pos, vals):
            if np.isnan(v):
                ax.annotate("n/a", (xi, 0), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=6, rotation=90)
            elif v == 0:  # a zero-height bar is invisible: draw it as a thick line and say 0
                ax.hlines(0, xi - width / 2, xi + width / 2, colors=[color], linewidth=3, zorder=3)
                ax.annotate("0", (xi, 0), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=7)
        for xi, c, v in zip(pos, cols, vals):
            if excludes_zero(r, c) and not np.isnan(v):
                top = max(v, r.get(c + "_hi") if r.get(c + "_hi") is not None else v, 0)
                ax.annotate("*", (xi, top), xytext=(0, 1), textcoords="offset points", ha="center", va="bottom")
                marked.append((r["method"], r["model"], c))
    handles, labels = ax.get_legend_handles_labels()
    if marked:
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.06 * (high - low))  # room for the stars above the tallest bars
        handles += ax.plot([], [], linestyle="none", marker="$*$", color="black")
        labels.append(f"interval of the paired difference to {reference or 'the reference'} excludes 0")
    ticks = []
    for c in cols:
        what = "mean of tasks" if c == "average" else metric_label((metrics or {}).get(c, ()) or ["score"])
        ns = {r.get("_n", {}).get(c) for r in rows} - {None}
        ticks.append(f"{c}\n{what}" + (f"\nn={ns.pop()}" if len(ns) == 1 else ""))
    ax.set_xticks(x, ticks, fontsize=8)
    ax.set_ylabel("score (%): each column's metric x100")
    ax.set_title(title)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(handles, labels, fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(Path(path).with_suffix(".svg"))
    plt.close(fig)
    return marked


PREDICTIONS = ".predictions.jsonl"


def prediction_files(result_paths: Sequence[str | Path], prediction_paths: Sequence[str | Path],
                     results: Sequence[dict], reference: str | None) -> dict[tuple, Path]:
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


def write_table(header: list[str], rows: list[dict], title: str, markdown: str, metrics: dict[str, Sequence[str]], *,
                csv, md, png, json_path=None, reference: str | None = None) -> None:
    """The table as CSV, Markdown (``markdown``: its text), bar chart (PNG and SVG) and, when
    ``json_path`` is given, the nested metrics JSON."""
    from .io import write_json, write_text

    write_text(csv, to_csv(header, rows))
    write_text(md, markdown)
    bar_chart(header, rows, png, title, reference, metrics)
    if json_path:
        write_json(json_path, to_metrics(header, rows))


def assemble_table(cfg: dict, benchmark: str, results: Sequence[str], *, csv, markdown, png,
                   metrics=None) -> list[dict]:
    """The ``assemble_table`` stage (``scripts/assemble_table.py``): the evaluation results of
    ``benchmark``'s configured tasks among ``results`` (``{task}.json`` files, and the
    ``{task}.predictions.jsonl`` beside each) as one table, in one MLflow run (each row's average and
    difference as metrics, the files as artifacts). With the reference method
    (``tables.reference_method``) among the results, the other rows get their paired difference to it
    (:func:`gluerl.paired.paired_differences`, bootstrap settings ``evaluation.bootstrap_*``); every
    result then needs its predictions file among ``results``. Writes ``csv``, ``markdown``, ``png``
    (and its SVG) and ``metrics`` (when given); returns the rows."""
    from .paired import paired_differences
    from .tasks import get_task
    from .tracking import start_run

    tasks = [get_task(t, cfg["task_files"]) for t in cfg["tasks"]]
    tasks = [t for t in tasks if t.benchmark == benchmark]
    reference = cfg["tables"]["reference_method"]
    with start_run(cfg["mlflow"], f"table-{benchmark}", "tables",
                   {"benchmark": benchmark, "tasks": ",".join(t.name for t in tasks),
                    "results": len(results), "reference_method": reference or ""}) as tracker:
        result_paths = [p for p in results if not str(p).endswith(PREDICTIONS)]
        prediction_paths = [p for p in results if str(p).endswith(PREDICTIONS)]
        loaded = load_results(result_paths)
        kept = [(p, r) for p, r in zip(result_paths, loaded) if r["benchmark"] == benchmark]
        kept_results = [r for _, r in kept]
        ev = cfg["evaluation"]
        files = prediction_files([p for p, _ in kept], prediction_paths, kept_results, reference)
        header, rows = build_table(kept_results, tasks)
        diffs = paired_differences(files, tasks, reference, ev["bootstrap_resamples"], ev["bootstrap_seed"],
                                   ev["confidence_level"]) if files else {}
        header = add_differences(header, rows, diffs)
        title = f"{benchmark.upper()} ({', '.join(t.name for t in tasks)})"
        write_table(header, rows, title, to_markdown(header, rows, title, reference),
                    {c: t.metrics for c, t in columns_for(tasks)}, csv=csv, md=markdown, png=png, json_path=metrics,
                    reference=reference)
        for r in rows:
            if r["average"] is not None:
                tracker.log_metrics({f"{r['method']}.{r['model']}.average": r["average"]}, prefix="table")
            if r.get("average_diff") is not None:
                tracker.log_metrics({f"{r['method']}.{r['model']}.average_diff": r["average_diff"]}, prefix="table")
        for path in (csv, markdown, png, metrics):
            if path:
                tracker.log_artifact(path)
    return rows


def assemble_transfer_table(cfg: dict, results: Sequence[str], *, csv, markdown, png, metrics=None) -> list[dict]:
    """The ``assemble_transfer_table`` stage (``scripts/assemble_transfer_table.py``): a row per method
    and model, a column per target of the config's ``transfer`` list (percent, the mean over seeds,
    the source task's metrics; the average over the targets), from the transfer results among
    ``results`` (:func:`gluerl.evaluation.evaluate_transfer`'s files). The Markdown names each target's
    source task and dataset. Writes ``csv``, ``markdown``, ``png`` (and its SVG) and ``metrics``
    (when given); returns the rows."""
    from .tasks import registry
    from .transfer import BENCHMARK, parse_targets, target_task

    tasks = registry(cfg["task_files"])
    targets = parse_targets(cfg, tasks, check_files=False)
    columns = [target_task(t, tasks[t.source_task]) for t in targets]
    loaded = [r for r in load_results(results) if r.get("benchmark") == BENCHMARK]
    header, rows = build_table(loaded, columns)
    title = "Transfer (" + ", ".join(f"{t.source_task} -> {t.name}" for t in targets) + ")"
    md = to_markdown(header, rows, title)
    md += "\nTargets (the source task's prompt, adapter and metrics on another dataset):\n\n"
    md += "".join(f"- {t.name}: trained on {t.source_task}, rows from {t.source()}\n" for t in targets)
    write_table(header, rows, title, md, {c: t.metrics for c, t in columns_for(columns)}, csv=csv, md=markdown,
                png=png, json_path=metrics)
    return rows
