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
    f = tmp_path / "mybench.yaml"
    f.write_text(yaml.safe_dump({"benchmark": "mybench", "tasks": {
        "_mb": {"abstract": True, "hub": {"path": "org/mybench"}, "eval_splits": {"validation": "{name}"}},
        "yesno": {"base": "_mb", "fields": {"passage": "Passage", "question": "Question"},
                  "labels": {0: "False", 1: "True"}, "metrics": ["accuracy"], "instruction": "Answer the question."},
        "nli3": {"base": "_mb", "fields": {"premise": "Premise", "hypothesis": "Hypothesis"},
                 "labels": {0: "Entailment", 1: "Contradiction", 2: "Neutral"}, "metrics": ["accuracy", "macro_f1"],
                 "instruction": "Relation?"},
    }}))
    reg = registry([f])
    assert reg["yesno"].benchmark == "mybench" and reg["yesno"].hub_path == "org/mybench"
    assert reg["nli3"].eval_splits == {"validation": "nli3"}
    assert "cola" in reg and "boolq" in reg


SUPERGLUE = ["boolq", "cb", "copa", "multirc", "record", "superglue_rte", "wic", "wsc", "axb", "axg"]


def test_superglue_tasks_declared_with_hub_configs():
    reg = registry()
    for name in SUPERGLUE:
        t = reg[name]
        assert t.benchmark == "superglue" and t.hub_path == "aps/super_glue", name
    assert {n: reg[n].hub_name for n in SUPERGLUE} == {
        "boolq": "boolq", "cb": "cb", "copa": "copa", "multirc": "multirc", "record": "record",
        "superglue_rte": "rte", "wic": "wic", "wsc": "wsc.fixed", "axb": "axb", "axg": "axg"}


def test_superglue_label_words_and_metrics():
    assert get_task("copa").labels == {0: "Option one", 1: "Option two"}
    assert get_task("wic").labels == {0: "Different", 1: "Same"}
    assert get_task("multirc").labels == {0: "False", 1: "True"}
    assert get_task("cb").labels == {0: "Entailment", 1: "Contradiction", 2: "Neutral"}
    assert get_task("record").labels == {0: "No", 1: "Yes"} and get_task("record").expand == "record_entities"
    assert get_task("cb").metrics == ("accuracy", "macro_f1")
    assert get_task("multirc").metrics == ("multirc_em", "multirc_f1a") and get_task("multirc").grouped
    assert get_task("record").metrics == ("record_f1", "record_em") and get_task("record").grouped
    for name in ("boolq", "copa", "superglue_rte", "wic", "wsc"):
        assert get_task(name).metrics == ("accuracy",) and not get_task(name).grouped
    assert get_task("boolq").fields == {"passage": "Passage", "question": "Question"}
    assert list(get_task("copa").fields) == ["premise", "question", "choice1", "choice2"]
    assert set(get_task("wsc").fields) == {"text", "span1_text", "span2_text"}


def test_superglue_rte_does_not_replace_glue_rte():
    glue, sg = get_task("rte"), get_task("superglue_rte")
    assert glue.benchmark == "glue" and glue.hub_path == "nyu-mll/glue" and set(glue.fields) == {"sentence1", "sentence2"}
    assert sg.benchmark == "superglue" and sg.hub_name == "rte" and set(sg.fields) == {"premise", "hypothesis"}
    assert sg.eval_splits == {"validation": "rte"}  # column `rte` of superglue.csv
    assert glue.labels == sg.labels


def test_diagnostics_are_evaluation_only_with_the_rte_model():
    for name, col in (("axb", "axb"), ("axg", "axg")):
        t = get_task(name)
        assert t.evaluation_only and not t.labelled and not t.in_average
        assert t.train_task == "superglue_rte" and t.eval_splits == {"test": col}
        assert t.fields == get_task("superglue_rte").fields  # prompts like the model was trained on
    assert get_task("axb").rename == {"sentence1": "premise", "sentence2": "hypothesis"}


@pytest.mark.parametrize("bad,msg", [
    ({"t": {"hub": {"path": "x"}, "fields": {"a": "A"}, "instruction": "i", "metrics": ["bleu"],
            "eval_splits": {"v": "t"}, "labels": {0: "a"}}}, "unknown metric"),
    ({"t": {"base": "nope"}}, "unknown base"),
    ({"t": {"hub": {"path": "x"}, "fields": {"a": "A"}, "instruction": "i", "metrics": ["accuracy"],
            "eval_splits": {"v": "t"}}}, "exactly one of 'labels' or 'regression'"),
    ({"cola": {"base": "cola"}}, "declared twice"),
    ({"t": {"hub": {"path": "x"}, "fields": {"a": "A"}, "instruction": "i", "metrics": ["accuracy", "multirc_em"],
            "eval_splits": {"v": "t"}, "labels": {0: "a"}}}, "cannot be mixed"),
    ({"t": {"hub": {"path": "x"}, "fields": {"a": "A"}, "instruction": "i", "metrics": ["accuracy"],
            "eval_splits": {"v": "t"}, "labels": {0: "a"}, "expand": "magic"}}, "unknown expand 'magic'"),
    ({"t": {"hub": {"path": "x"}, "fields": {"a": "A"}, "instruction": "i", "metrics": ["multirc_em", "record_f1"],
            "eval_splits": {"v": "t"}, "labels": {0: "a"}, "expand": "record_entities"}}, "different grouped scorings"),
    ({"t": {"hub": {"path": "x"}, "fields": {"a": "A"}, "instruction": "i", "metrics": ["record_f1"],
            "eval_splits": {"v": "t"}, "labels": {0: "a"}}}, "need 'expand: record_entities'"),
])
def test_bad_declarations_name_the_task(tmp_path, bad, msg):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"tasks": bad}))
    with pytest.raises(ConfigError, match=msg):
        registry([f])


def test_unknown_task_lists_known():
    with pytest.raises(ConfigError, match="unknown task 'colaa'.*cola"):
        get_task("colaa")
