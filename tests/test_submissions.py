"""Leaderboard submission files: exact GLUE/SuperGLUE formats, fallbacks, archive, CLI, data splits."""

import io
import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from gluerl.data import load_split, max_rows
from gluerl.errors import ConfigError, DataError
from gluerl.submissions import build_files, expected_files, fallback_label, format_file, resolve, zip_bytes
from gluerl.tasks import get_task, registry

REPO = Path(__file__).resolve().parents[1]
GLUE_FILES = ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv",
              "RTE.tsv", "WNLI.tsv", "AX.tsv"]


def preds(split, pairs):
    return [{"split": split, "idx": i, "prediction": p} for i, p in pairs]


def test_glue_registry_declares_every_server_file_in_order():
    assert expected_files(registry().values(), "glue") == GLUE_FILES
    assert get_task("mnli").test_splits == ["test_matched", "test_mismatched"]
    assert get_task("ax").submission.files == {"test": "AX.tsv"}  # not MNLI's, which it inherits from


def test_glue_tsv_exact_text_order_labels_and_fallback():
    rte, mnli, stsb, cola = (get_task(t) for t in ("rte", "mnli", "stsb", "cola"))
    train = {"rte": [{"label": 1}, {"label": 1}, {"label": 0}],          # majority not_entailment
             "mnli": [{"label": 2}, {"label": 1}, {"label": 2}, {"label": 1}],  # tie 1/2 -> smaller id 1 (neutral)
             "stsb": [{"label": 1.0}, {"label": 4.0}, {"label": 2.5}],    # mean 2.5
             "cola": [{"label": 0}, {"label": 1}, {"label": 1}]}
    predictions = {
        "rte": preds("test", [(2, 0), (0, None), (1, 1)]),              # rows out of order; one invalid
        "mnli": preds("test_matched", [(0, 2), (1, 0)]) + preds("test_mismatched", [(0, None), (1, 1)]),
        "stsb": preds("test", [(0, 3.14159), (1, None), (2, 5.0)]),
        "cola": preds("test", [(0, 1), (1, 0)]),
    }
    files, report = build_files([rte, mnli, stsb, cola], predictions, train)
    assert files["RTE.tsv"] == "index\tprediction\n0\tnot_entailment\n1\tnot_entailment\n2\tentailment\n"
    assert files["MNLI-m.tsv"] == "index\tprediction\n0\tcontradiction\n1\tentailment\n"
    assert files["MNLI-mm.tsv"] == "index\tprediction\n0\tneutral\n1\tneutral\n"
    assert files["STS-B.tsv"] == "index\tprediction\n0\t3.142\n1\t2.500\n2\t5.000\n"
    assert files["CoLA.tsv"] == "index\tprediction\n0\t1\n1\t0\n"
    assert report["RTE.tsv"] == {"task": "rte", "split": "test", "rows": 3, "fallbacks": 1, "fallback_rate": 0.3333,
                                 "fallback_label": "not_entailment"}
    assert report["MNLI-mm.tsv"]["fallbacks"] == 1 and report["MNLI-m.tsv"]["fallbacks"] == 0
    assert report["STS-B.tsv"]["fallback_label"] == 2.5


def test_fallback_is_majority_with_smallest_id_on_ties():
    rte = get_task("rte")
    assert fallback_label(rte, [{"label": 0}, {"label": 1}]) == 0
    assert fallback_label(rte, [{"label": 1}, {"label": 1}, {"label": 0}]) == 1
    with pytest.raises(DataError, match="no labelled training rows"):
        fallback_label(rte, [{"label": -1}])


def test_bad_predictions_are_refused():
    rte = get_task("rte")
    train = {"rte": [{"label": 0}]}
    with pytest.raises(DataError, match="idx 1 is predicted twice"):
        build_files([rte], {"rte": preds("test", [(1, 0), (1, 1)])}, train)
    with pytest.raises(DataError, match="no predictions for test split 'test'"):
        build_files([rte], {"rte": preds("validation", [])}, train)
    with pytest.raises(DataError, match=r"split\(s\) \['validation'\]"):
        build_files([rte], {"rte": preds("validation", [(0, 1)])}, train)
    with pytest.raises(DataError, match="prediction 7 is not a label id"):
        build_files([rte], {"rte": preds("test", [(0, 7)])}, train)


def test_zip_members_flat_in_order_and_deterministic():
    files = {"CoLA.tsv": "index\tprediction\n0\t1\n", "AX.tsv": "index\tprediction\n0\tneutral\n"}
    data = zip_bytes(files)
    assert data == zip_bytes(dict(files))  # same bytes for the same predictions
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.namelist() == ["CoLA.tsv", "AX.tsv"]
        assert z.read("AX.tsv").decode() == files["AX.tsv"]
        assert z.testzip() is None


# a test-only SuperGLUE registry (the real superglue.yaml is another change): the formats only
SUPERGLUE = {
    "benchmark": "superglue_test",
    "tasks": {
        "_sg": {"abstract": True, "hub": {"path": "aps/super_glue"}, "eval_splits": {"validation": "{name}"},
                "metrics": ["accuracy"], "instruction": "x"},
        "boolq_t": {"base": "_sg", "fields": {"question": "Q", "passage": "P"}, "labels": {0: "no", 1: "yes"},
                    "submission": {"format": "jsonl", "files": {"test": "BoolQ.jsonl"},
                                   "labels": {0: "false", 1: "true"}}},
        "cb_t": {"base": "_sg", "fields": {"premise": "P", "hypothesis": "H"},
                 "labels": {0: "entailment", 1: "contradiction", 2: "neutral"},
                 "submission": {"format": "jsonl", "files": {"test": "CB.jsonl"},
                                "labels": {0: "entailment", 1: "contradiction", 2: "neutral"}}},
        "copa_t": {"base": "_sg", "fields": {"premise": "P"}, "labels": {0: "1", 1: "2"},
                   "submission": {"format": "jsonl", "files": {"test": "COPA.jsonl"}}},
        "multirc_t": {"base": "_sg", "fields": {"paragraph": "P"}, "labels": {0: "false", 1: "true"},
                      "submission": {"format": "jsonl", "files": {"test": "MultiRC.jsonl"}, "layout": "multirc"}},
        "axb_t": {"base": "_sg", "fields": {"sentence1": "A"}, "labels": {0: "entailment", 1: "not_entailment"},
                  "submission": {"format": "jsonl", "files": {"test": "AX-b.jsonl"},
                                 "labels": {0: "entailment", 1: "not_entailment"}}},
        "record_t": {"base": "_sg", "fields": {"passage": "P"}, "labels": {0: "entity"},
                     "submission": {"format": "jsonl", "files": {"test": "ReCoRD.jsonl"}, "idx_key": "query"}},
    },
}


@pytest.fixture()
def sg(tmp_path):
    path = tmp_path / "superglue_test.yaml"
    path.write_text(yaml.safe_dump(SUPERGLUE))
    return registry([path])


def lines(text):
    return [json.loads(x) for x in text.splitlines()]


def test_superglue_jsonl_formats(sg):
    train = {t: [{"label": 0}, {"label": 1}, {"label": 1}] for t in ("boolq_t", "cb_t", "copa_t", "axb_t")}
    files, report = build_files(
        [sg["boolq_t"], sg["cb_t"], sg["copa_t"], sg["axb_t"]],
        {"boolq_t": preds("test", [(1, 0), (0, 1)]), "cb_t": preds("test", [(0, 2), (1, None)]),
         "copa_t": preds("test", [(0, 1), (1, 0)]), "axb_t": preds("test", [(0, 1)])}, train)
    assert files["BoolQ.jsonl"] == '{"idx": 0, "label": "true"}\n{"idx": 1, "label": "false"}\n'
    assert lines(files["CB.jsonl"]) == [{"idx": 0, "label": "neutral"}, {"idx": 1, "label": "contradiction"}]
    assert report["CB.jsonl"]["fallbacks"] == 1
    assert files["COPA.jsonl"] == '{"idx": 0, "label": 1}\n{"idx": 1, "label": 0}\n'  # integers, not strings
    assert lines(files["AX-b.jsonl"]) == [{"idx": 0, "label": "not_entailment"}]


def test_superglue_multirc_nests_answers_per_paragraph_and_question(sg):
    task = sg["multirc_t"]
    rows = [{"split": "test", "idx": {"paragraph": p, "question": q, "answer": a}, "prediction": y}
            for p, q, a, y in [(1, 0, 0, 1), (0, 1, 0, 0), (0, 0, 1, 1), (0, 0, 0, 0), (1, 0, 1, None)]]
    random.Random(0).shuffle(rows)
    files, report = build_files([task], {"multirc_t": rows}, {"multirc_t": [{"label": 1}]})
    assert lines(files["MultiRC.jsonl"]) == [
        {"idx": 0, "passage": {"questions": [{"idx": 0, "answers": [{"idx": 0, "label": 0}, {"idx": 1, "label": 1}]},
                                             {"idx": 1, "answers": [{"idx": 0, "label": 0}]}]}},
        {"idx": 1, "passage": {"questions": [{"idx": 0, "answers": [{"idx": 0, "label": 1}, {"idx": 1, "label": 1}]}]}},
    ]
    assert report["MultiRC.jsonl"]["fallbacks"] == 1


def test_superglue_record_uses_the_query_idx_and_the_entity(sg):
    task = sg["record_t"]
    resolved, n = resolve(task, [{"idx": {"passage": 0, "query": 5}, "prediction": "Obama"},
                                 {"idx": {"passage": 0, "query": 3}, "prediction": "Paris"}], fallback=0)
    assert n == 0
    assert format_file(task, resolved) == '{"idx": 3, "label": "Paris"}\n{"idx": 5, "label": "Obama"}\n'
    files, report = build_files([task], {"record_t": [{"split": "test", "idx": {"passage": 0, "query": 1},
                                                       "prediction": None}]},
                                {"record_t": [{"label": "Rome"}, {"label": "Oslo"}, {"label": "Rome"}]})
    assert files["ReCoRD.jsonl"] == '{"idx": 1, "label": "Rome"}\n' and report["ReCoRD.jsonl"]["fallbacks"] == 1


@pytest.mark.parametrize("block,msg", [
    ({"format": "csv", "files": {"test": "X.csv"}}, "format: 'csv' is not one of"),
    ({"format": "tsv", "files": {"test": "X.jsonl"}}, "must be a plain .tsv file name"),
    ({"format": "tsv", "files": {"test": "X.tsv"}, "labels": {0: "a"}}, "differ from the task's label ids"),
    ({"format": "tsv", "files": {"test": "X.tsv"}, "colour": 1}, "unknown key(s) ['colour']"),
])
def test_bad_submission_block_names_task_and_key(tmp_path, block, msg):
    decl = {"tasks": {"bad": {"hub": {"path": "x"}, "fields": {"s": "S"}, "labels": {0: "a", 1: "b"},
                              "metrics": ["accuracy"], "instruction": "x", "eval_splits": {"validation": "bad"},
                              "submission": block}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(decl))
    with pytest.raises(ConfigError) as e:
        registry([tmp_path / "bad.yaml"])
    assert "task 'bad'" in str(e.value) and msg in str(e.value)


def write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_test_split_loads_unlabelled_and_ignores_the_eval_cap(tmp_path):
    rte = get_task("rte")
    rows = [{"sentence1": f"a {i}", "sentence2": "b", "label": -1, "idx": i} for i in range(10)]
    write_rows(tmp_path / "rte" / "test.jsonl", rows)
    cfg = {"source": "local", "local_dir": str(tmp_path), "max_samples": {"eval": 3}}
    assert len(load_split(rte, "test", cfg)) == 10  # the server needs every row
    assert max_rows(rte, "validation", cfg) == 3
    assert len(load_split(rte, "test", {**cfg, "max_samples": {"test": 4}})) == 4  # an explicit cap still applies
    with pytest.raises(ConfigError, match="has no split 'dev'"):
        load_split(rte, "dev", cfg)


def test_make_submission_cli_writes_archive_and_manifest(tmp_path):
    write_rows(tmp_path / "rte.jsonl", preds("test", [(1, None), (0, 0)]))
    write_rows(tmp_path / "rte_train.jsonl", [{"label": 1}, {"label": 1}, {"label": 0}])
    write_rows(tmp_path / "mnli.jsonl", preds("test_matched", [(0, 1)]) + preds("test_mismatched", [(0, 2)]))
    write_rows(tmp_path / "mnli_train.jsonl", [{"label": 0}])
    cfg = json.dumps({"mlflow": {"enabled": False}})
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts/make_submission.py"), "--config-json", cfg, "--benchmark", "glue",
         "--predictions", f"rte={tmp_path / 'rte.jsonl'}", "--train", f"rte={tmp_path / 'rte_train.jsonl'}",
         "--predictions", f"mnli={tmp_path / 'mnli.jsonl'}", "--train", f"mnli={tmp_path / 'mnli_train.jsonl'}",
         "--output", str(tmp_path / "out/glue.zip"), "--manifest", str(tmp_path / "out/glue.json")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(tmp_path / "out/glue.zip") as z:
        assert z.namelist() == ["MNLI-m.tsv", "MNLI-mm.tsv", "RTE.tsv"]  # the server's order
        assert z.read("RTE.tsv").decode() == "index\tprediction\n0\tentailment\n1\tnot_entailment\n"
    manifest = json.loads((tmp_path / "out/glue.json").read_text())
    assert manifest["fallbacks"] == 1 and manifest["rows"] == 4 and manifest["complete"] is False
    assert manifest["missing_files"] == [f for f in GLUE_FILES if f not in ("MNLI-m.tsv", "MNLI-mm.tsv", "RTE.tsv")]
    assert "AX.tsv" in proc.stderr  # the warning names the missing files

    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts/make_submission.py"), "--config-json", cfg, "--benchmark", "glue",
         "--predictions", f"rte={tmp_path / 'rte.jsonl'}", "--train", f"mnli={tmp_path / 'mnli_train.jsonl'}",
         "--output", str(tmp_path / "x.zip"), "--manifest", str(tmp_path / "x.json")],
        capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "--train is missing for task(s) ['rte']" in bad.stderr


def test_superglue_registry_record_test_predictions_become_one_entity_per_query():
    """The shipped ReCoRD task: test rows expand to candidates; the file has the first 'Yes' per query."""
    from gluerl.data import expand_record

    task = get_task("record")
    raw = [{"passage": "Paris and Rome @highlight\nOslo", "query": "@placeholder is in Italy.",
            "entities": ["Paris", "Rome", "Oslo", "Rome"], "answers": [], "idx": {"passage": 0, "query": 7}},
           {"passage": "Lima or Quito", "query": "@placeholder is in Peru.",
            "entities": ["Quito", "Lima"], "answers": [], "idx": {"passage": 1, "query": 2}}]
    rows = expand_record(raw, task, "test.jsonl")
    assert [r["label"] for r in rows] == [-1] * 5  # test rows: no answers, no labels
    answers = {("Paris", 7): 0, ("Rome", 7): 1, ("Oslo", 7): 1, ("Quito", 2): None, ("Lima", 2): 0}
    preds = [{"split": "test", "idx": r["idx"], "entity": r["entity"],
              "prediction": answers[(r["entity"], r["idx"]["query"])]} for r in rows]
    random.Random(1).shuffle(preds)
    files, report = build_files([task], {"record": preds}, {"record": []})
    # query 7: Rome is the first candidate (entity order) answered Yes; query 2: none -> its first candidate
    assert files["ReCoRD.jsonl"] == '{"idx": 2, "label": "Quito"}\n{"idx": 7, "label": "Rome"}\n'
    assert report["ReCoRD.jsonl"]["rows"] == 2 and report["ReCoRD.jsonl"]["fallbacks"] == 1


def test_every_superglue_task_with_a_test_split_has_a_submission_file():
    names = {t.submission.files["test"] for t in registry().values()
             if t.benchmark == "superglue" and t.submission is not None}
    assert names == {"BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "ReCoRD.jsonl", "RTE.jsonl",
                     "WiC.jsonl", "WSC.jsonl", "AX-b.jsonl", "AX-g.jsonl"}
