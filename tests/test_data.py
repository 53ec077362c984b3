import fnmatch
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from gluerl.config import load_config
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


# ---- SuperGLUE: ReCoRD expansion, grouped subsampling, renamed columns ----
RECORD, MULTIRC, AXB = get_task("record"), get_task("multirc"), get_task("axb")


def record_row(q, entities, answers):
    return {"passage": "Kim met Lee in Paris.\n@highlight\nA meeting", "query": "@placeholder met Lee.",
            "entities": entities, "entity_spans": {}, "answers": answers, "idx": {"passage": 0, "query": q}}


def test_record_query_becomes_one_yes_no_row_per_distinct_entity(tmp_path):
    write(tmp_path / "record" / "validation.jsonl",
          [record_row(0, ["Kim", "Lee", "Paris", "Kim"], ["Kim"]), record_row(1, ["Lee", "Paris"], ["Paris"])])
    rows = load_split(RECORD, "validation", local(tmp_path))
    assert [(r["query"], r["entity"], r["label"]) for r in rows[:3]] == [
        ("Kim met Lee.", "Kim", 1), ("Lee met Lee.", "Lee", 0), ("Paris met Lee.", "Paris", 0)]
    assert len(rows) == 5 and rows[0]["answers"] == ["Kim"]
    assert rows[0]["idx"] == {"passage": 0, "query": 0, "entity": 0} and rows[4]["idx"]["query"] == 1
    assert "@highlight" not in rows[0]["passage"]
    assert set(rows[0]) == {"passage", "query", "entity", "answers", "label", "idx"}


@pytest.mark.parametrize("row,msg", [
    ({"query": "no slot"}, "line 2: query has no '@placeholder'"),
    ({"entities": []}, "line 2: 'entities' must be a non-empty list"),
    ({"answers": "Kim"}, "line 2: 'answers' must be a list of strings"),
    ({"idx": 3}, "line 2: 'idx' must be a mapping"),
])
def test_bad_record_rows_are_named(tmp_path, row, msg):
    path = write(tmp_path / "record" / "validation.jsonl",
                 [record_row(0, ["Kim"], ["Kim"]), {**record_row(1, ["Kim"], ["Kim"]), **row}])
    with pytest.raises(DataError, match=msg) as e:
        load_split(RECORD, "validation", local(tmp_path))
    assert str(path) in str(e.value)


def test_grouped_tasks_subsample_whole_questions(tmp_path):
    rows = [{"paragraph": f"Paragraph {p}.", "question": f"Q{q}?", "answer": f"A{a}", "label": a % 2,
             "idx": {"paragraph": p, "question": q, "answer": a}}
            for p in range(3) for q in range(4) for a in range(3)]
    write(tmp_path / "multirc" / "validation.jsonl", rows)
    out = load_split(MULTIRC, "validation", local(tmp_path, max_samples={"eval": 5}))
    questions = {(r["idx"]["paragraph"], r["idx"]["question"]) for r in out}
    assert len(questions) == 5 and len(out) == 15  # five questions with all three options each
    assert out == load_split(MULTIRC, "validation", local(tmp_path, max_samples={"eval": 5}))
    write(tmp_path / "record" / "validation.jsonl", [record_row(q, ["Kim", "Lee"], ["Lee"]) for q in range(6)])
    rec = load_split(RECORD, "validation", local(tmp_path, max_samples={"eval": 2}))
    assert len({r["idx"]["query"] for r in rec}) == 2 and len(rec) == 4


def test_axb_reads_hub_columns_under_the_rte_field_names(tmp_path):
    write(tmp_path / "axb" / "test.jsonl", [{"sentence1": "A dog runs.", "sentence2": "An animal moves.",
                                             "label": -1, "idx": 0}])
    rows = load_split(AXB, "test", local(tmp_path))
    assert rows == [{"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": -1, "idx": 0}]


# ---- the embedded demo sample (data.source: embedded) ----
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "src/gluerl/embedded"
SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared/glue"


@pytest.mark.parametrize("task", ["sst2", "cola"])
def test_embedded_source_reads_the_packaged_sample(task):
    cfg = {"source": "embedded", "max_samples": {}, "subsample_seed": 0}
    train, val = load_split(get_task(task), "train", cfg), load_split(get_task(task), "validation", cfg)
    assert (len(train), len(val)) == (400, 300)  # the demo evaluates on at least 200 rows a task
    assert {r["label"] for r in val} == {0, 1} and set(val[0]) == {"sentence", "label", "idx"}
    assert not {r["sentence"] for r in train} & {r["sentence"] for r in val}
    sub = load_split(get_task(task), "validation", {**cfg, "max_samples": {"eval": 32}})
    assert len(sub) == 32


def test_embedded_source_names_what_it_lacks():
    with pytest.raises(ConfigError, match=r"embedded ships only the demo sample \(cola: train, validation; "
                                          r"sst2: train, validation\); task 'rte' split 'train'"):
        load_split(RTE, "train", {"source": "embedded"})
    with pytest.raises(ConfigError, match=r"tasks: rte needs rte/train, rte/validation: use data.source: hub or local"):
        load_config(None, {"tasks": ["sst2", "rte"], "data": {"source": "embedded"}}, check=True)
    assert load_config(None, {"tasks": ["sst2", "cola"], "data": {"source": "embedded"}}, check=True)


def test_embedded_sample_ships_in_the_package():
    """pyproject's package-data patterns cover every file of the sample (a non-editable install has them)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((EMBEDDED_DIR.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["gluerl"]
    files = [p.relative_to(EMBEDDED_DIR.parent).as_posix() for p in EMBEDDED_DIR.rglob("*") if p.is_file()]
    assert len(files) == 5 and "embedded/README.md" in files
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)
    assert sum((EMBEDDED_DIR / f.split("/", 1)[1]).stat().st_size for f in files) < 300_000


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="needs the offline GLUE copy ../shared/glue")
def test_embedded_sample_is_what_the_script_draws(tmp_path):
    spec = importlib.util.spec_from_file_location("make_demo_sample", EMBEDDED_DIR.parents[2] / "scripts/make_demo_sample.py")
    make_demo_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_demo_sample)
    make_demo_sample.main(["--source", str(SHARED_GLUE), "--output", str(tmp_path)])
    for task in ("sst2", "cola"):
        for split in ("train", "validation"):
            assert (tmp_path / task / f"{split}.jsonl").read_bytes() == (EMBEDDED_DIR / task / f"{split}.jsonl").read_bytes()
