import pytest
import yaml

from gluerl.errors import ConfigError
from gluerl.tasks import get_task, registry

GLUE = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"]


def test_all_glue_tasks_declared():
    reg = registry()
    assert set(GLUE) <= set(reg)
    assert "_glue_base" not in reg  # abstract bases are not tasks


@pytest.mark.parametrize(
    "name,metrics",
    [("cola", ("mcc",)), ("sst2", ("accuracy",)), ("mrpc", ("f1", "accuracy")), ("qqp", ("f1", "accuracy")),
     ("stsb", ("pearson", "spearman")), ("mnli", ("accuracy",)), ("qnli", ("accuracy",)), ("rte", ("accuracy",)),
     ("wnli", ("accuracy",))],
)
def test_metrics_per_task(name, metrics):
    assert get_task(name).metrics == metrics


def test_mnli_has_matched_and_mismatched_columns():
    t = get_task("mnli")
    assert t.eval_splits == {"validation_matched": "mnli_m", "validation_mismatched": "mnli_mm"}
    assert t.splits == ["train", "validation_matched", "validation_mismatched"]


def test_ax_is_evaluation_only_and_inherits_mnli():
    ax, mnli = get_task("ax"), get_task("mnli")
    assert ax.evaluation_only and not ax.labelled and not ax.in_average
    assert ax.labels == mnli.labels and ax.fields == mnli.fields and ax.train_task == "mnli"
    assert ax.hub_name == "ax"


def test_label_words_match_hub_ids():
    assert get_task("rte").labels == {0: "entailment", 1: "not_entailment"}
    assert get_task("wnli").labels == {0: "not_entailment", 1: "entailment"}
    assert get_task("stsb").is_regression and get_task("stsb").regression == (0.0, 5.0)


def test_new_benchmark_is_a_data_change(tmp_path):
    f = tmp_path / "superglue.yaml"
    f.write_text(yaml.safe_dump({"benchmark": "superglue", "tasks": {
        "_sg": {"abstract": True, "hub": {"path": "aps/super_glue"}, "eval_splits": {"validation": "{name}"}},
        "boolq": {"base": "_sg", "fields": {"passage": "Passage", "question": "Question"},
                  "labels": {0: "False", 1: "True"}, "metrics": ["accuracy"], "instruction": "Answer the question."},
        "cb": {"base": "_sg", "fields": {"premise": "Premise", "hypothesis": "Hypothesis"},
               "labels": {0: "Entailment", 1: "Contradiction", 2: "Neutral"}, "metrics": ["accuracy", "f1"],
               "instruction": "Relation?"},
    }}))
    reg = registry([f])
    assert reg["boolq"].benchmark == "superglue" and reg["boolq"].hub_path == "aps/super_glue"
    assert reg["cb"].eval_splits == {"validation": "cb"}
    assert "cola" in reg


@pytest.mark.parametrize("bad,msg", [
    ({"t": {"hub": {"path": "x"}, "fields": {"a": "A"}, "instruction": "i", "metrics": ["bleu"],
            "eval_splits": {"v": "t"}, "labels": {0: "a"}}}, "unknown metric"),
    ({"t": {"base": "nope"}}, "unknown base"),
    ({"t": {"hub": {"path": "x"}, "fields": {"a": "A"}, "instruction": "i", "metrics": ["accuracy"],
            "eval_splits": {"v": "t"}}}, "exactly one of 'labels' or 'regression'"),
    ({"cola": {"base": "cola"}}, "declared twice"),
])
def test_bad_declarations_name_the_task(tmp_path, bad, msg):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"tasks": bad}))
    with pytest.raises(ConfigError, match=msg):
        registry([f])


def test_unknown_task_lists_known():
    with pytest.raises(ConfigError, match="unknown task 'colaa'.*cola"):
        get_task("colaa")
