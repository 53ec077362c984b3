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
