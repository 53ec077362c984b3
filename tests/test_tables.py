import csv
import io

import pytest

from gluerl.tables import bar_chart, build_table, score_columns, to_csv, to_markdown, to_metrics
from gluerl.tasks import get_task


def result(method, seed, task, col, score, ci=None, benchmark="superglue"):
    res = {"score": score, "invalid_rate": 0.1}
    if ci is not None:
        res["ci"] = {"score": ci}
    return {"method": method, "model": "m", "seed": seed, "task": task, "benchmark": benchmark, "columns": {col: res}}


TASKS = [get_task("boolq"), get_task("superglue_rte"), get_task("axb")]


def test_intervals_are_columns_beside_each_score():
    results = [result("zeroshot", 1, "boolq", "boolq", 0.62, [0.55, 0.70]),
               result("zeroshot", 2, "boolq", "boolq", 0.64, [0.57, 0.72]),
               result("zeroshot", 1, "superglue_rte", "rte", 0.5, [0.44, 0.56]),
               result("zeroshot", 2, "superglue_rte", "rte", 0.5, [0.42, 0.58])]
    header, rows = build_table(results, TASKS)
    assert header == ["method", "model", "seeds", "boolq", "boolq_lo", "boolq_hi", "rte", "rte_lo", "rte_hi", "average"]
    assert score_columns(header) == ["boolq", "rte", "average"]
    r = rows[0]
    # each bound is the mean over seeds of that bound
    assert (r["boolq"], r["boolq_lo"], r["boolq_hi"]) == (63.0, 56.0, 71.0)
    assert (r["rte"], r["rte_lo"], r["rte_hi"]) == (50.0, 43.0, 57.0)
    assert r["average"] == 56.5
    parsed = list(csv.DictReader(io.StringIO(to_csv(header, rows))))
    assert parsed[0]["boolq_lo"] == "56.0" and parsed[0]["rte_hi"] == "57.0"
    md = to_markdown(header, rows, "SUPERGLUE")
    assert "| method | model | seeds | boolq | rte | average |" in md
    assert "| zeroshot | m | 2 | 63.0 [56.0, 71.0] | 50.0 [43.0, 57.0] | 56.5 |" in md
    assert to_metrics(header, rows)["m"]["zeroshot"]["boolq_hi"] == 71.0


def test_results_without_intervals_leave_them_blank(tmp_path):
    results = [result("zeroshot", 1, "boolq", "boolq", 0.6), result("zeroshot", 1, "superglue_rte", "rte", 0.5, [0.4, 0.6])]
    header, rows = build_table(results, TASKS)
    assert rows[0]["boolq_lo"] is None and rows[0]["rte_lo"] == 40.0
    line = to_csv(header, rows).splitlines()[1]
    assert line == "zeroshot,m,1,60.0,,,50.0,40.0,60.0,55.0"
    assert "| 60.0 | 50.0 [40.0, 60.0] |" in to_markdown(header, rows, "T")
    bar_chart(header, rows, tmp_path / "t.png", "T")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_one_seed_without_interval_blanks_the_mean_interval():
    results = [result("zeroshot", 1, "boolq", "boolq", 0.6, [0.5, 0.7]), result("zeroshot", 2, "boolq", "boolq", 0.7)]
    _, rows = build_table(results, TASKS[:1])
    assert rows[0]["boolq"] == pytest.approx(65.0) and rows[0]["boolq_lo"] is None
