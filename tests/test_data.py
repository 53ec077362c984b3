import json

import pytest
import yaml

from gluerl.data import load_split, subsample
from gluerl.errors import ConfigError, DataError
from gluerl.tasks import get_task
from gluerl.testing import generate_rows

RTE, STSB = get_task("rte"), get_task("stsb")


def write(path, rows, raw_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return path


def local(tmp_path, **kw):
    return {"source": "local", "local_dir": str(tmp_path), "max_samples": {}, "subsample_seed": 0, **kw}


def test_local_split_and_subsampling(tmp_path):
    write(tmp_path / "rte" / "train.jsonl", generate_rows("rte", 50))
    rows = load_split(RTE, "train", local(tmp_path))
    assert len(rows) == 50 and set(rows[0]) == {"sentence1", "sentence2", "label", "idx"}
    sub = load_split(RTE, "train", local(tmp_path, max_samples={"train": 10}))
    assert len(sub) == 10 and [r["idx"] for r in sub] == sorted(r["idx"] for r in sub)
    assert sub == load_split(RTE, "train", local(tmp_path, max_samples={"train": 10}))
    assert sub != load_split(RTE, "train", local(tmp_path, max_samples={"train": 10}, subsample_seed=1))


def test_eval_cap_applies_to_eval_splits_only(tmp_path):
    write(tmp_path / "rte" / "train.jsonl", generate_rows("rte", 30))
    write(tmp_path / "rte" / "validation.jsonl", generate_rows("rte", 30))
    cfg = local(tmp_path, max_samples={"eval": 5})
    assert len(load_split(RTE, "validation", cfg)) == 5
    assert len(load_split(RTE, "train", cfg)) == 30


@pytest.mark.parametrize("rows,raw,msg", [
    ([], ['{"sentence1": "a", "sentence2": '], "line 1: not valid JSON"),
    ([{"sentence1": "a", "label": 0, "idx": 0}], [], "line 1: row has no text field 'sentence2'"),
    ([{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0},
      {"sentence1": " ", "sentence2": "b", "label": 0, "idx": 1}], [], "line 2: text field 'sentence1' is empty"),
    ([{"sentence1": "a", "sentence2": "b", "label": 7, "idx": 0}], [], r"label 7 is not one of \[0, 1\]"),
    ([{"sentence1": "a", "sentence2": "b", "label": "yes", "idx": 0}], [], "not an integer id"),
    ([{"sentence1": "a", "sentence2": "b", "idx": 0}], [], "no 'label'"),
    ([], [], "is empty"),
])
def test_bad_rows_are_named(tmp_path, rows, raw, msg):
    path = write(tmp_path / "rte" / "train.jsonl", rows, raw)
    with pytest.raises(DataError, match=msg) as e:
        load_split(RTE, "train", local(tmp_path))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("label,msg", [(None, "not a finite number"), ("4.1", "not a finite number"),
                                       (7.5, "outside 0..5")])
def test_bad_stsb_scores(tmp_path, label, msg):
    write(tmp_path / "stsb" / "train.jsonl", [{"sentence1": "a", "sentence2": "b", "label": label, "idx": 0}])
    with pytest.raises(DataError, match=msg):
        load_split(STSB, "train", local(tmp_path))


def test_missing_file_and_unknown_split(tmp_path):
    with pytest.raises(DataError, match="rte/validation.jsonl: missing local data file"):
        load_split(RTE, "validation", local(tmp_path))
    with pytest.raises(ConfigError, match="no split 'dev'"):
        load_split(RTE, "dev", local(tmp_path))  # test is RTE's submission split


def test_hub_code_path_against_a_local_dataset_repo(tmp_path):
    """The hub branch calls datasets.load_dataset(path, name, split, revision): give it a local repo."""
    repo = tmp_path / "glue"
    write(repo / "rte" / "train.jsonl", generate_rows("rte", 12))
    write(repo / "rte" / "validation.jsonl", generate_rows("rte", 6))
    card = {"configs": [{"config_name": "rte", "data_files": [
        {"split": "train", "path": "rte/train.jsonl"}, {"split": "validation", "path": "rte/validation.jsonl"}]}]}
    (repo / "README.md").write_text("---\n" + yaml.safe_dump(card) + "---\n")
    task = get_task("rte")
    object.__setattr__(task, "hub_path", str(repo))  # frozen dataclass: a patched copy for this test
    try:
        rows = load_split(task, "validation", {"source": "hub", "hub_revision": None, "max_samples": {}})
    finally:
        object.__setattr__(task, "hub_path", "nyu-mll/glue")
    assert [r["idx"] for r in rows] == list(range(6)) and rows[0]["label"] in (0, 1)


def test_subsample_keeps_order():
    rows = [{"idx": i} for i in range(20)]
    assert subsample(rows, None, 0) is rows
    out = subsample(rows, 5, 0)
    assert [r["idx"] for r in out] == sorted(r["idx"] for r in out)
