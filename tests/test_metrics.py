import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from gluerl.metrics import accuracy, benchmark_average, compute_metrics, f1, fill_invalid, mcc, pearson, spearman
from gluerl.tasks import get_task


@pytest.fixture(params=range(5))
def binary(request):
    rng = np.random.default_rng(request.param)
    n = int(rng.integers(5, 200))
    return rng.integers(0, 2, n), rng.integers(0, 2, n)


def test_binary_metrics_match_sklearn(binary):
    g, p = binary
    assert accuracy(g, p) == pytest.approx(skm.accuracy_score(g, p))
    assert f1(g, p) == pytest.approx(skm.f1_score(g, p, zero_division=0))
    assert mcc(g, p) == pytest.approx(skm.matthews_corrcoef(g, p))


def test_multiclass_mcc_matches_sklearn():
    rng = np.random.default_rng(7)
    g, p = rng.integers(0, 3, 300), rng.integers(-1, 3, 300)
    assert mcc(g, p) == pytest.approx(skm.matthews_corrcoef(g, p))


def test_degenerate_cases_match_sklearn():
    g, p = [1, 1, 1], [1, 1, 1]
    assert mcc(g, p) == skm.matthews_corrcoef(g, p) == 0.0
    assert f1([0, 0], [0, 0]) == skm.f1_score([0, 0], [0, 0], zero_division=0)


def test_correlations_match_scipy():
    rng = np.random.default_rng(3)
    g = rng.uniform(0, 5, 100)
    p = np.round(g + rng.normal(0, 1, 100))  # ties for spearman
    assert pearson(g, p) == pytest.approx(stats.pearsonr(g, p)[0])
    assert spearman(g, p) == pytest.approx(stats.spearmanr(g, p)[0])
    assert pearson(g, np.full(100, 2.0)) == 0.0  # constant prediction: undefined, shown as 0


def test_invalid_answers_count_as_wrong():
    cola, mnli, stsb = get_task("cola"), get_task("mnli"), get_task("stsb")
    assert fill_invalid([0, 1], [None, None], cola) == [1, 0]
    assert fill_invalid([2], [None], mnli) == [-1]
    assert fill_invalid([4.0], [None], stsb) == [2.5]
    m = compute_metrics([0, 1, 1, 0], [0, None, 1, None], get_task("rte"))
    assert m["accuracy"] == 0.5 and m["invalid_rate"] == 0.5 and m["score"] == 0.5


def test_two_metric_task_score_is_their_mean():
    g, p = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    m = compute_metrics(g, p, get_task("mrpc"))
    assert m["score"] == pytest.approx((skm.f1_score(g, p) + skm.accuracy_score(g, p)) / 2)


def test_benchmark_average():
    assert benchmark_average({"a": 0.5, "b": 0.7}) == pytest.approx(0.6)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        compute_metrics([0, 1], [0], get_task("rte"))


# ---- SuperGLUE metrics (reference values: scikit-learn, or worked by hand in the comments) ----
from gluerl.metrics import bootstrap, exact_match, macro_f1, normalize_answer, scoring_units, token_f1  # noqa: E402


@pytest.mark.parametrize("seed", range(4))
def test_macro_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    g, p = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    p[:5] = 2  # some classes may still be missing from gold: sklearn skips labels in neither
    assert macro_f1(g, p) == pytest.approx(skm.f1_score(g, p, average="macro"))


def test_macro_f1_invalid_is_wrong_but_no_class():
    g, p = [0, 1, 2, 2, 0], [0, -1, 2, 1, -1]
    assert macro_f1(g, p) == pytest.approx(skm.f1_score(g, p, labels=[0, 1, 2], average="macro"))


def test_cb_score_is_mean_of_accuracy_and_macro_f1():
    g, p = [0, 0, 1, 2, 1, 0], [0, 1, 1, 2, None, 0]
    m = compute_metrics(g, p, get_task("cb"))
    filled = fill_invalid(g, p, get_task("cb"))
    assert filled[4] == -1
    acc, mf1 = skm.accuracy_score(g, filled), skm.f1_score(g, filled, labels=[0, 1, 2], average="macro")
    assert m["accuracy"] == pytest.approx(acc) and m["macro_f1"] == pytest.approx(mf1)
    assert m["score"] == pytest.approx((acc + mf1) / 2)


def multirc_meta(questions):
    return [{"idx": {"paragraph": p, "question": q, "answer": a}} for p, q, n in questions for a in range(n)]


def test_multirc_exact_match_and_f1a_worked_example():
    # paragraph 0: question 0 has 3 answer options, question 1 has 2; paragraph 1: question 0 has 2
    meta = multirc_meta([(0, 0, 3), (0, 1, 2), (1, 0, 2)])
    gold = [1, 0, 1, 1, 0, 0, 1]
    pred = [1, 0, 1, 0, 0, 0, 1]
    # questions all right: (0,0) yes, (0,1) no, (1,0) yes -> EM 2/3
    # answer options: tp 3, fp 0, fn 1 -> F1a = 2*3 / (2*3 + 0 + 1) = 6/7
    m = compute_metrics(gold, pred, get_task("multirc"), meta=meta)
    assert m["multirc_em"] == pytest.approx(2 / 3)
    assert m["multirc_f1a"] == pytest.approx(6 / 7) == pytest.approx(skm.f1_score(gold, pred))
    assert m["score"] == pytest.approx((2 / 3 + 6 / 7) / 2)


def test_multirc_invalid_answer_breaks_its_question():
    meta = multirc_meta([(0, 0, 2)])
    m = compute_metrics([1, 0], [1, None], get_task("multirc"), meta=meta)
    # the invalid option counts as "True" (wrong): tp 1, fp 1 -> F1a 2/3, question wrong
    assert m["multirc_em"] == 0.0 and m["multirc_f1a"] == pytest.approx(2 / 3) and m["invalid_rate"] == 0.5


def test_grouped_metrics_need_the_records():
    with pytest.raises(ValueError, match="need the 2 examples' records"):
        compute_metrics([1, 0], [1, 0], get_task("multirc"))


def test_squad_normalisation_and_token_f1_worked_examples():
    assert normalize_answer("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert exact_match("the Eiffel Tower", "Eiffel Tower.") == 1.0
    # tokens [eiffel, tower] vs [eiffel, tower, in, paris]: precision 1, recall 1/2 -> F1 2/3
    assert token_f1("the Eiffel Tower", "Eiffel Tower in Paris") == pytest.approx(2 / 3)
    assert token_f1("Paris", "London") == 0.0 and token_f1("a", "the") == 0.0  # only articles: nothing left


def record_meta(queries):
    """(query id, candidates, answers) -> one record per candidate, as data.expand_record writes them."""
    out = []
    for q, cands, answers in queries:
        for j, e in enumerate(cands):
            out.append({"idx": {"passage": 0, "query": q, "entity": j}, "entity": e, "answers": answers})
    return out


def test_record_f1_and_em_worked_example():
    meta = record_meta([
        (0, ["Paris", "London", "Rome"], ["London"]),                   # No Yes Yes -> "London": F1 1, EM 1
        (1, ["President Obama", "Michelle"], ["Barack Obama", "Obama"]),  # Yes No -> "President Obama"
        (2, ["Kim", "Lee"], ["Lee"]),                                   # No No -> no prediction: 0, 0
    ])
    gold = [0, 1, 0, 0, 0, 0, 1]
    pred = [0, 1, 1, 1, 0, 0, 0]
    # query 1: vs "Barack Obama" 1 common token of 2 and 2 -> F1 1/2; vs "Obama" P 1/2 R 1 -> F1 2/3; EM 0
    m = compute_metrics(gold, pred, get_task("record"), meta=meta)
    assert m["record_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["record_em"] == pytest.approx(1 / 3)
    assert m["score"] == pytest.approx(((1 + 2 / 3) / 3 + 1 / 3) / 2)


# ---- bootstrap confidence intervals ----
def acc_units(n, p_correct, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < p_correct, g, 1 - g)
    return g, pred


def test_bootstrap_is_seeded_and_contains_the_estimate():
    g, p = acc_units(200, 0.7)
    rte = get_task("rte")
    a = compute_metrics(g, p, rte, resamples=300, seed=5)
    b = compute_metrics(g, p, rte, resamples=300, seed=5)
    c = compute_metrics(g, p, rte, resamples=300, seed=6)
    assert a["ci"] == b["ci"] and a["ci"] != c["ci"]
    lo, hi = a["ci"]["accuracy"]
    assert lo < a["accuracy"] < hi and a["ci"]["score"] == a["ci"]["accuracy"]
    assert a["bootstrap"] == {"units": 200, "resamples": 300, "seed": 5, "confidence": 0.95}
    assert "ci" not in compute_metrics(g, p, rte)  # resamples=0: no interval


def test_bootstrap_narrows_with_more_data():
    rte = get_task("rte")
    widths = []
    for n in (50, 500, 5000):
        g, p = acc_units(n, 0.7, seed=n)
        lo, hi = compute_metrics(g, p, rte, resamples=400)["ci"]["accuracy"]
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(10, rel=0.3)  # width ~ 1/sqrt(n)


def test_bootstrap_accuracy_matches_normal_approximation():
    g, p = acc_units(4000, 0.7, seed=1)
    m = compute_metrics(g, p, get_task("rte"), resamples=1000)
    acc = m["accuracy"]
    half = stats.norm.ppf(0.975) * np.sqrt(acc * (1 - acc) / len(g))
    lo, hi = m["ci"]["accuracy"]
    assert lo == pytest.approx(acc - half, abs=0.004) and hi == pytest.approx(acc + half, abs=0.004)


def test_bootstrap_of_two_metric_task_covers_each_metric_and_the_score():
    g, p = acc_units(300, 0.8, seed=2)
    m = compute_metrics(g, p, get_task("mrpc"), resamples=200)
    assert set(m["ci"]) == {"f1", "accuracy", "score"}
    for k in ("f1", "accuracy", "score"):
        assert m["ci"][k][0] <= m[k] <= m["ci"][k][1]


def test_grouped_bootstrap_resamples_whole_questions():
    meta = multirc_meta([(0, q, 3) for q in range(40)])
    rng = np.random.default_rng(0)
    gold = list(rng.integers(0, 2, 120))
    pred = [g if rng.random() < 0.8 else 1 - g for g in gold]
    n_units, fn = scoring_units(gold, pred, get_task("multirc"), meta)
    assert n_units == 40
    m = compute_metrics(gold, pred, get_task("multirc"), meta=meta, resamples=200)
    assert m["bootstrap"]["units"] == 40
    # a replicate drawing one question 40 times scores that question alone
    one = fn(np.zeros(40, dtype=int))
    assert one["multirc_em"] == float(all(g == p for g, p in zip(gold[:3], pred[:3])))
    assert m["ci"]["multirc_em"][0] <= m["multirc_em"] <= m["ci"]["multirc_em"][1]


def test_bootstrap_percentiles_match_numpy_on_the_same_draws():
    vals = np.arange(10.0)
    ci = bootstrap(10, lambda ix: {"mean": float(vals[ix].mean())}, resamples=50, seed=3, confidence=0.9)
    rng = np.random.default_rng(3)
    means = [vals[rng.integers(0, 10, 10)].mean() for _ in range(50)]
    assert ci["mean"] == pytest.approx(list(np.percentile(means, [5, 95])))
    assert ci["score"] == ci["mean"]


def test_planning_the_dag_does_not_import_scipy():
    """The rules import gluerl.transfer (and so this module) each time Snakemake plans; scipy.stats took
    about 2 of a dry-run's 5.5 s, so it is imported only when a correlation is computed."""
    import subprocess
    import sys

    code = ("import sys, gluerl.config, gluerl.prompts, gluerl.scopes, gluerl.tables, gluerl.tasks, "
            "gluerl.transfer, gluerl.tracking; print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
    from gluerl.metrics import pearson, spearman

    assert pearson([1, 2, 3], [1, 2, 4]) > 0.9 and spearman([1, 2, 3], [1, 2, 4]) == 1.0
