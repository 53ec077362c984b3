"""Transfer targets: config checks, reading and mapping datasets, scoring over coarser classes, the table."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gluerl.config import validate
from gluerl.errors import ConfigError, DataError
from gluerl.tasks import registry
from gluerl.transfer import check_targets, collapse, load_target, parse_targets, score, target_task

REPO = Path(__file__).resolve().parents[1]
TASKS = registry()


def entry(**over):
    e = {"name": "reviews", "source_task": "sst2", "dataset": {"path": "x.csv"}, "fields": {"sentence": "review"},
         "labels": {"pos": 1, "neg": 0}}
    e.update(over)
    return e


def cfg_with(*entries, **over):
    cfg = {"transfer": list(entries), **over}
    return validate(cfg)


def test_schema_fills_defaults_of_each_target():
    cfg = cfg_with(entry(dataset={"hub": "org/data"}))
    t = cfg["transfer"][0]
    assert t["dataset"]["split"] == "test" and t["label_field"] == "label" and t["max_samples"] is None
    with pytest.raises(ConfigError, match="transfer.0.name"):
        cfg_with(entry(name="bad name", dataset={"hub": "org/data"}))


@pytest.mark.parametrize("change,msg", [
    ({"source_task": "nope"}, "transfer[0] (reviews).source_task: unknown task 'nope'"),
    ({"fields": {"text": "review"}}, "map every field of sst2 (['sentence'])"),
    ({"labels": {"pos": 1, "neg": 5}}, "transfer[0] (reviews).labels.neg: 5 is not a label id of sst2"),
    ({"labels": {"pos": 1, "neg": [0, 1]}}, "source id 1 is mapped from both 'pos' and 'neg'"),
    ({"labels": {}}, "labels: map each label value"),
    ({"dataset": {"hub": "a/b", "path": "c.csv"}}, "give exactly one of hub, path or local_dir"),
    ({"dataset": {"path": "/no/such.csv"}}, "dataset.path: file /no/such.csv does not exist"),
    ({"source_task": "stsb", "fields": {"sentence1": "a", "sentence2": "b"}, "labels": {"1": 1}},
     "stsb is a regression task"),
])
def test_bad_targets_name_entry_and_key(change, msg):
    with pytest.raises(ConfigError) as e:
        parse_targets(cfg_with(entry(**change)), TASKS)
    assert msg in str(e.value)


def test_multi_task_training_needs_the_source_among_the_tasks(tmp_path):
    (tmp_path / "x.csv").write_text("review,label\nok,pos\n")
    cfg = cfg_with(entry(dataset={"path": str(tmp_path / "x.csv")}), tasks=["rte"], training={"mode": "multi"})
    with pytest.raises(ConfigError, match="source_task sst2 is not in tasks"):
        check_targets(cfg, TASKS)
    cfg["training"]["mode"] = "single"
    assert [t.name for t in check_targets(cfg, TASKS)] == ["reviews"]


def test_local_csv_is_renamed_and_relabelled(tmp_path):
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "stars", "rating"])
        for i, (text, r) in enumerate([("great fun", "pos"), ("dull", "neg"), ("fine", "pos"), ("awful", "neg")]):
            w.writerow([text, i, r])
    cfg = cfg_with(entry(dataset={"path": str(path)}, label_field="rating", idx_field="stars"))
    (t,) = parse_targets(cfg, TASKS)
    rows = load_target(t, TASKS["sst2"], cfg["data"])
    assert rows[0] == {"sentence": "great fun", "label": 1, "idx": "0", "target_label": "pos"}
    assert [r["label"] for r in rows] == [1, 0, 1, 0]
    cfg["transfer"][0]["max_samples"] = 2
    (t,) = parse_targets(cfg, TASKS)
    assert len(load_target(t, TASKS["sst2"], cfg["data"])) == 2


def test_unmapped_label_names_file_row_and_value(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text('{"review": "good", "label": "pos"}\n{"review": "meh", "label": "mixed"}\n')
    cfg = cfg_with(entry(dataset={"path": str(path)}))
    (t,) = parse_targets(cfg, TASKS)
    with pytest.raises(DataError) as e:
        load_target(t, TASKS["sst2"], cfg["data"])
    assert f"{path}, line 2" in str(e.value) and "label 'mixed' is not one of the mapped values" in str(e.value)
    path.write_text('{"text": "good", "label": "pos"}\n')
    with pytest.raises(DataError, match="row has no text column 'review'"):
        load_target(t, TASKS["sst2"], cfg["data"])


def test_hub_code_path_reads_a_dataset_folder(tmp_path):
    """``dataset.hub`` goes to datasets.load_dataset; a local folder stands in for the hub here."""
    folder = tmp_path / "nli_hub"
    folder.mkdir()
    rows = [{"p": f"Mary went to room {i}.", "h": "Mary moved.", "lab": i % 2, "uid": 100 + i} for i in range(6)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "train.jsonl").write_text(json.dumps(rows[0]) + "\n")
    cfg = cfg_with(entry(name="babi", source_task="mnli", dataset={"hub": str(folder), "split": "test"},
                         fields={"premise": "p", "hypothesis": "h"}, labels={1: 0, 0: [1, 2]}, idx_field="uid", label_field="lab"))
    (t,) = parse_targets(cfg, TASKS)
    out = load_target(t, TASKS["mnli"], cfg["data"])
    assert [(r["idx"], r["label"], r["target_label"]) for r in out] == [(100 + i, 0 if i % 2 else 1, i % 2) for i in range(6)]
    assert out[0]["premise"] == "Mary went to room 0."
    t2 = parse_targets(cfg_with(entry(dataset={"hub": str(folder), "split": "nope"})), TASKS)[0]
    with pytest.raises(DataError, match="cannot load"):
        load_target(t2, TASKS["sst2"], cfg["data"])


def test_score_counts_any_source_label_of_a_coarser_class_as_right():
    (t,) = parse_targets(cfg_with(entry(name="babi", source_task="mnli", dataset={"hub": "x/y"},
                                        fields={"premise": "p", "hypothesis": "h"}, labels={1: 0, 0: [1, 2]})), TASKS)
    assert collapse(t) == {0: 0, 1: 1, 2: 1}
    gold = [0, 0, 1, 1, 1, 1]            # entailed x2, not entailed x4 (stored as the class's first id)
    pred = [0, 2, 1, 2, 0, None]         # right, wrong, right (neutral), right (contradiction), wrong, invalid
    res = score([{"label": g, "prediction": p} for g, p in zip(gold, pred)], t, TASKS["mnli"])
    assert res["accuracy"] == pytest.approx(3 / 6) and res["score"] == pytest.approx(3 / 6)
    assert res["invalid_rate"] == pytest.approx(1 / 6) and res["unmapped_rate"] == 0 and res["n"] == 6


def test_score_with_an_f1_source_keeps_its_positive_class():
    (t,) = parse_targets(cfg_with(entry(name="para", source_task="mrpc", dataset={"hub": "x/y"},
                                        fields={"sentence1": "a", "sentence2": "b"}, labels={"yes": 1, "no": 0})),
                         TASKS)
    rows = [{"label": g, "prediction": p} for g, p in [(1, 1), (1, 0), (0, 1), (0, 0)]]
    res = score(rows, t, TASKS["mrpc"])
    assert res["f1"] == pytest.approx(0.5) and res["accuracy"] == pytest.approx(0.5)
    assert "ci" not in res
    boot = score(rows * 10, t, TASKS["mrpc"], {"bootstrap_resamples": 200, "bootstrap_seed": 3})
    lo, hi = boot["ci"]["score"]
    assert boot["score"] == pytest.approx(0.5) and lo < 0.5 < hi and boot["bootstrap"]["units"] == 40
    assert boot["ci"] == score(rows * 10, t, TASKS["mrpc"], {"bootstrap_resamples": 200, "bootstrap_seed": 3})["ci"]


def result(method, seed, target, value, invalid=0.0):
    return {"task": target, "benchmark": "transfer", "method": method, "model": "tiny", "seed": seed,
            "columns": {target: {"score": value, "invalid_rate": invalid}}}


def test_table_has_a_row_per_method_and_a_column_per_target(tmp_path):
    cfg = {"mlflow": {"enabled": False},
           "transfer": [entry(name="imdb", dataset={"hub": "a/imdb"}),
                        entry(name="babi", source_task="mnli", dataset={"hub": "a/babi"},
                              fields={"premise": "p", "hypothesis": "h"}, labels={1: 0, 0: [1, 2]})]}
    values = {("zeroshot", 1, "imdb"): 0.50, ("zeroshot", 2, "imdb"): 0.60, ("zeroshot", 1, "babi"): 0.40,
              ("zeroshot", 2, "babi"): 0.45, ("sft", 1, "imdb"): 0.80, ("sft", 2, "imdb"): 0.90,
              ("sft", 1, "babi"): 0.55, ("sft", 2, "babi"): 0.52}
    files = []
    for (m, s, t), v in values.items():
        p = tmp_path / f"{m}-{s}-{t}.json"
        p.write_text(json.dumps(result(m, s, t, v, invalid=0.1 if m == "zeroshot" else 0.0)))
        files.append(str(p))
    out = tmp_path / "tables"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/assemble_transfer_table.py"), "--config-json",
                           json.dumps(cfg), "--csv", str(out / "transfer.csv"), "--markdown", str(out / "transfer.md"),
                           "--png", str(out / "transfer.png"), "--metrics", str(out / "transfer.json"), *files],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "transfer.csv").open()))
    assert list(rows[0]) == ["method", "model", "seeds", "imdb", "imdb_lo", "imdb_hi", "babi", "babi_lo", "babi_hi",
                             "average"]
    assert rows[0]["imdb_lo"] == ""  # these results carry no bootstrap interval
    assert [r["method"] for r in rows] == ["zeroshot", "sft"]
    assert [float(rows[0][c]) for c in ("imdb", "babi", "average")] == [55.0, 42.5, 48.8]  # 48.75 rounds half-even
    assert [float(rows[1][c]) for c in ("imdb", "babi", "average")] == [85.0, 53.5, 69.2]
    md = (out / "transfer.md").read_text()
    assert "- babi: trained on mnli, rows from a/babi[test]" in md and "| zeroshot | tiny | 10.0 | 10.0 |" in md
    assert (out / "transfer.png").read_bytes()[:4] == b"\x89PNG"


def test_target_task_is_the_source_under_the_target_name():
    (t,) = parse_targets(cfg_with(entry(dataset={"hub": "x/y", "split": "validation"})), TASKS)
    task = target_task(t, TASKS["sst2"])
    assert (task.name, task.benchmark, task.eval_splits) == ("reviews", "transfer", {"validation": "reviews"})
    assert task.labels == TASKS["sst2"].labels and task.instruction == TASKS["sst2"].instruction
