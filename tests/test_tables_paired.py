"""Paired differences to a reference method: the bootstrap, the pairing by idx, the table columns."""

import csv
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from gluerl.errors import DataError
from gluerl.metrics import bootstrap, bootstrap_p, mcc, resampled_scores, scoring_units
from gluerl.paired import column_seed, paired_differences
from gluerl.tables import add_differences, bar_chart, build_table, score_columns, to_csv, to_markdown
from gluerl.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
RTE, COLA, SST2, MULTIRC = (get_task(t) for t in ("rte", "cola", "sst2", "multirc"))


def write_predictions(path: Path, task, gold, pred, idx=None, split=None) -> Path:
    split = split or next(iter(task.eval_splits))
    idx = list(range(len(gold))) if idx is None else idx
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"split": split, "idx": i, "label": g, "completion": "", "prediction": p,
                                        "valid": p is not None}) + "\n" for i, g, p in zip(idx, gold, pred)))
    return path


def files_for(tmp_path, task, runs):
    """runs: {(method, seed): (gold, pred)} -> the prediction file of each, model "m"."""
    return {(m, "m", s, task.name): write_predictions(tmp_path / m / f"seed{s}" / f"{task.name}.predictions.jsonl",
                                                      task, gold, pred)
            for (m, s), (gold, pred) in runs.items()}


def draws_by_hand(n, resamples, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(resamples)]


# ---- the bootstrap pieces ----

def test_bootstrap_p_counts_both_sides_with_the_sample_as_one_more_draw():
    assert bootstrap_p(np.zeros(999)) == 1.0                       # identical predictions: no evidence
    assert bootstrap_p(np.ones(999)) == pytest.approx(2 / 1000)    # every draw on one side: the floor
    assert bootstrap_p(-np.ones(999)) == pytest.approx(2 / 1000)
    # one draw <= 0 of nine: 2 * (1 + 1) / 10
    assert bootstrap_p(np.array([-1, 1, 2, 3, 4, 5, 6, 7, 8])) == pytest.approx(0.4)
    assert bootstrap_p(np.array([-1, 0, 1, 2])) == 1.0             # capped


def test_resampled_scores_are_the_bootstrap_draws_with_mcc_recomputed():
    gold = np.array([1, 1, 0, 0, 1, 0, 1, 0, 1, 1])
    pred = np.array([1, 0, 0, 1, 1, 0, 1, 1, 1, 0])
    n, fn = scoring_units(gold, pred, COLA)
    draws = resampled_scores(n, fn, 200, seed=7)
    expected = [matthews_corrcoef(gold[ix], pred[ix]) for ix in draws_by_hand(n, 200, 7)]
    np.testing.assert_allclose(draws, expected, atol=1e-12)
    lo, hi = np.percentile(expected, [2.5, 97.5])
    assert bootstrap(n, fn, 200, 7)["score"] == pytest.approx([lo, hi])  # the same draws as the intervals


# ---- paired differences from prediction files ----

def test_paired_difference_of_mcc_is_recomputed_on_the_same_draws(tmp_path):
    gold = [1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 1]
    a = [1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0]
    b = [1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0]
    files = files_for(tmp_path, COLA, {("ppo", 1): (gold, a), ("sft", 1): (gold, b)})
    d = paired_differences(files, [COLA], "sft", resamples=300, seed=3)[("ppo", "m")]["cola"]
    g, pa, pb = map(np.array, (gold, a, b))
    assert d.diff == pytest.approx(matthews_corrcoef(g, pa) - matthews_corrcoef(g, pb))
    by_hand = [matthews_corrcoef(g[ix], pa[ix]) - matthews_corrcoef(g[ix], pb[ix])
               for ix in draws_by_hand(len(g), 300, column_seed(3, "cola"))]
    assert [d.lo, d.hi] == pytest.approx(list(np.percentile(by_hand, [2.5, 97.5])))
    assert d.p == pytest.approx(2 * (1 + min(sum(x <= 0 for x in by_hand), sum(x >= 0 for x in by_hand))) / 301)
    assert column_seed(3, "cola") == [3, zlib.crc32(b"cola")] and d.seeds == 1


def test_always_right_where_the_other_is_wrong_and_identical_predictions(tmp_path):
    gold = [0, 1] * 10
    right, wrong = gold, [1 - x for x in gold]
    files = files_for(tmp_path, RTE, {("ppo", 1): (gold, right), ("grpo", 1): (gold, wrong),
                                      ("sft", 1): (gold, wrong)})
    diffs = paired_differences(files, [RTE], "sft", resamples=999, seed=0)
    better, same = diffs[("ppo", "m")]["rte"], diffs[("grpo", "m")]["rte"]
    assert (better.diff, better.lo, better.hi) == (1.0, 1.0, 1.0) and better.p == pytest.approx(0.002)
    assert (same.diff, same.lo, same.hi, same.p) == (0.0, 0.0, 0.0, 1.0)
    assert ("sft", "m") not in diffs  # the reference has no difference to itself


def test_paired_interval_is_narrower_than_the_unpaired_one(tmp_path):
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 200)
    a = np.where(rng.random(200) < 0.7, gold, 1 - gold)    # ~70% right
    b = a.copy()
    flip = np.flatnonzero(a == gold)[:12]                   # b: a with 12 of its right answers wrong
    b[flip] = 1 - gold[flip]
    files = files_for(tmp_path, RTE, {("ppo", 1): (gold.tolist(), a.tolist()), ("sft", 1): (gold.tolist(), b.tolist())})
    d = paired_differences(files, [RTE], "sft", resamples=1000, seed=0)[("ppo", "m")]["rte"]
    assert d.diff == pytest.approx(12 / 200)
    # unpaired: each method's score drawn on its own resamples
    na, fa = scoring_units(gold, a, RTE)
    nb, fb = scoring_units(gold, b, RTE)
    unpaired = resampled_scores(na, fa, 1000, seed=1) - resampled_scores(nb, fb, 1000, seed=2)
    lo, hi = np.percentile(unpaired, [2.5, 97.5])
    assert d.hi - d.lo < 0.5 * (hi - lo)
    assert d.lo > 0 and lo < 0  # only the paired interval shows that a beats b
    assert d.p < 0.01


def test_seeds_are_paired_each_then_averaged(tmp_path):
    gold = [0, 1, 1, 0, 1, 0]
    right, wrong = gold, [1 - x for x in gold]
    files = files_for(tmp_path, RTE, {("ppo", 1): (gold, right), ("sft", 1): (gold, wrong),   # +1 in seed 1
                                      ("ppo", 2): (gold, right), ("sft", 2): (gold, right)})  # 0 in seed 2
    d = paired_differences(files, [RTE], "sft", resamples=100, seed=0)[("ppo", "m")]["rte"]
    assert (d.diff, d.lo, d.hi, d.seeds) == (0.5, 0.5, 0.5, 2)  # every draw: (1 + 0) / 2


def test_average_difference_is_the_mean_of_the_columns_draw_by_draw(tmp_path):
    gold = [0, 1, 1, 0]
    files = {**files_for(tmp_path, RTE, {("ppo", 1): (gold, gold), ("sft", 1): (gold, [1 - x for x in gold])}),
             **files_for(tmp_path, SST2, {("ppo", 1): (gold, gold), ("sft", 1): (gold, gold)})}
    d = paired_differences(files, [RTE, SST2], "sft", resamples=50, seed=0)[("ppo", "m")]
    assert (d["rte"].diff, d["sst2"].diff) == (1.0, 0.0)
    assert (d["average"].diff, d["average"].lo, d["average"].hi) == (0.5, 0.5, 0.5)
    # a column without a comparison leaves the average without one
    d = paired_differences({k: v for k, v in files.items() if not (k[0] == "sft" and k[3] == "sst2")},
                           [RTE, SST2], "sft", resamples=50, seed=0)[("ppo", "m")]
    assert "rte" in d and "sst2" not in d and "average" not in d


def test_grouped_tasks_resample_whole_questions(tmp_path):
    # two questions of two options each; sft gets one option of question 1 wrong
    idx = [{"paragraph": 0, "question": q, "answer": o} for q in (0, 1) for o in (0, 1)]
    gold = [1, 0, 1, 1]
    a, b = gold, [0, 0, 1, 1]
    files = {(m, "m", 1, "multirc"): write_predictions(tmp_path / m / "multirc.predictions.jsonl", MULTIRC, gold, p, idx)
             for m, p in (("ppo", a), ("sft", b))}
    d = paired_differences(files, [MULTIRC], "sft", resamples=500, seed=0)[("ppo", "m")]["multirc"]
    # EM 1 vs 1/2; F1a 1 vs 2*2/(2*2+0+1) = 0.8; score difference (0.5 + 0.2) / 2
    assert d.diff == pytest.approx(0.35)
    # a draw of questions: both drawn twice as one: question 1 twice -> 0, question 0 twice -> (1 + 1) / 2
    assert d.lo == pytest.approx(0.0) and d.hi == pytest.approx(1.0)


def test_different_examples_are_refused_naming_both_files(tmp_path):
    a = write_predictions(tmp_path / "ppo.predictions.jsonl", RTE, [0, 1, 1], [0, 1, 1], idx=[0, 1, 2])
    b = write_predictions(tmp_path / "sft.predictions.jsonl", RTE, [0, 1, 1], [0, 1, 0], idx=[0, 1, 3])
    with pytest.raises(DataError) as e:
        paired_differences({("ppo", "m", 1, "rte"): a, ("sft", "m", 1, "rte"): b}, [RTE], "sft", resamples=10)
    msg = str(e.value)
    assert str(a) in msg and str(b) in msg and "1 idx only in the first, 1 only in the second" in msg
    assert "\n" not in msg


def test_without_resamples_only_the_point_difference(tmp_path):
    gold = [0, 1, 1, 0]
    files = files_for(tmp_path, RTE, {("ppo", 1): (gold, gold), ("sft", 1): (gold, [0, 1, 0, 1])})
    d = paired_differences(files, [RTE], "sft", resamples=0)[("ppo", "m")]["rte"]
    assert (d.diff, d.lo, d.hi, d.p) == (0.5, None, None, None)


# ---- the table: columns, Markdown, chart ----

def result(method, score, ci):
    return {"method": method, "model": "m", "seed": 1, "task": "rte", "benchmark": "glue",
            "columns": {"rte": {"score": score, "invalid_rate": 0.0, "ci": {"score": ci}}}}


def test_difference_columns_markdown_and_stars(tmp_path):
    gold = [0, 1] * 10
    wrong = [1 - x for x in gold]
    files = files_for(tmp_path, RTE, {("zeroshot", 1): (gold, wrong), ("sft", 1): (gold, wrong),
                                      ("ppo", 1): (gold, gold)})
    header, rows = build_table([result("zeroshot", 0.5, [0.3, 0.7]), result("sft", 0.5, [0.3, 0.7]),
                                result("ppo", 1.0, [1.0, 1.0])], [RTE])
    old = list(header)
    header = add_differences(header, rows, paired_differences(files, [RTE], "sft", resamples=999, seed=0))
    assert header == old + ["rte_diff", "rte_diff_lo", "rte_diff_hi", "rte_diff_p",
                            "average_diff", "average_diff_lo", "average_diff_hi", "average_diff_p"]
    assert score_columns(header) == ["rte", "average"]
    parsed = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(header, rows)))}
    assert [parsed["ppo"][c] for c in ("rte_diff", "rte_diff_lo", "rte_diff_hi", "rte_diff_p")] == \
        ["100.0", "100.0", "100.0", "0.002"]
    assert [parsed["zeroshot"][c] for c in ("rte_diff", "rte_diff_p")] == ["0.0", "1.0"]
    assert parsed["sft"]["rte_diff"] == "" and parsed["sft"]["average_diff"] == ""  # the reference itself
    md = to_markdown(header, rows, "GLUE", "sft")
    assert "| method | model | seeds | rte | average |" in md  # the score table as before
    assert "## Difference to sft" in md
    assert "| ppo | m | 1 | +100.0 [100.0, 100.0] p=0.002 | +100.0 [100.0, 100.0] p=0.002 |" in md
    assert "| zeroshot | m | 1 | +0.0 [0.0, 0.0] p=1.000 | +0.0 [0.0, 0.0] p=1.000 |" in md
    assert "| sft | m |" not in md.split("## Difference to sft")[1].split("Invalid")[0]
    marked = bar_chart(header, rows, tmp_path / "t.png", "GLUE", "sft")
    assert marked == [("ppo", "m", "rte"), ("ppo", "m", "average")]
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_no_reference_no_difference_columns():
    header, rows = build_table([result("zeroshot", 0.5, [0.3, 0.7])], [RTE])
    assert add_differences(header, rows, {}) == header
    assert "Difference" not in to_markdown(header, rows, "GLUE", "sft")


def write_run(root, method, gold, pred):
    d = root / "results/eval" / method / "m" / "seed1"
    write_predictions(d / "rte.predictions.jsonl", RTE, gold, pred)
    score = float(np.mean(np.array(gold) == np.array(pred)))
    res = result(method, score, [score - 0.1, score + 0.1])
    (d / "rte.json").write_text(json.dumps(res))
    return d / "rte.json", d / "rte.predictions.jsonl"


def assemble(root, files, reference="sft"):
    cfg = {"tasks": ["rte"], "mlflow": {"enabled": False}, "evaluation": {"bootstrap_resamples": 200},
           "tables": {"reference_method": reference}}
    out = root / "t"
    cmd = [sys.executable, str(REPO / "scripts/assemble_table.py"), "--config-json", json.dumps(cfg),
           "--benchmark", "glue", "--csv", f"{out}.csv", "--markdown", f"{out}.md", "--png", f"{out}.png",
           "--metrics", f"{out}.json", *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=root), out


def test_script_reads_the_predictions_it_is_given(tmp_path):
    gold = [0, 1] * 5
    (rs, ps), (rp, pp) = write_run(tmp_path, "sft", gold, [0] * 10), write_run(tmp_path, "ppo", gold, gold)
    proc, out = assemble(tmp_path, [rs, rp, ps, pp])
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(f"{out}.csv")))
    assert list(rows[0])[:7] == ["method", "model", "seeds", "rte", "rte_lo", "rte_hi", "average"]
    assert rows[1]["method"] == "ppo" and rows[1]["rte_diff"] == "50.0"
    assert json.loads(Path(f"{out}.json").read_text())["m"]["ppo"]["average_diff"] == 50.0
    # a result whose predictions are not named is refused in one line
    proc, _ = assemble(tmp_path, [rs, rp, ps])
    assert proc.returncode == 1 and f"needs the predictions file {pp}" in proc.stderr
    # the reference not among the methods: the table as before, no predictions needed
    proc, out = assemble(tmp_path, [rs, rp], reference="grpo")
    assert proc.returncode == 0, proc.stderr
    assert open(f"{out}.csv").readline().strip() == "method,model,seeds,rte,rte_lo,rte_hi,average"
