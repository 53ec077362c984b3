"""SuperGLUE through the real Snakemake DAG (tiny random model, generated rows in the aps/super_glue schema):
ReCoRD expanded per entity, MultiRC scored per question, intervals in the eval JSON and superglue.csv."""

import csv
import json
import random
from pathlib import Path

import pytest
import yaml

from gluerl.metrics import compute_metrics
from gluerl.tasks import get_task
from gluerl.testing import fixture_texts, make_tiny_model

from test_workflow import copy_workflow, snakemake

NAMES = ["Kim", "Lee", "Paris", "Rome", "Ada", "Bo"]


def cb_rows(n, rng):
    return [{"premise": f"The {rng.choice(NAMES)} was here.", "hypothesis": "Someone was here.", "label": i % 3,
             "idx": i} for i in range(n)]


def multirc_rows(n_questions, rng):
    rows = []
    for q in range(n_questions):
        for a in range(3):
            rows.append({"paragraph": f"{rng.choice(NAMES)} met {rng.choice(NAMES)}.", "question": "Who met?",
                         "answer": rng.choice(NAMES), "label": int(rng.random() < 0.5),
                         "idx": {"paragraph": q // 2, "question": q, "answer": a}})
    return rows


def record_rows(n, rng):
    rows = []
    for q in range(n):
        ents = rng.sample(NAMES, 3)
        rows.append({"passage": f"{ents[0]} met {ents[1]} and {ents[2]}.\n@highlight\nA meeting",
                     "query": "@placeholder met them.", "entities": ents, "entity_spans": {},
                     "answers": [ents[0]], "idx": {"passage": q, "query": q}})
    return rows


def write(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_superglue_dag_to_superglue_csv(tmp_path):
    rng = random.Random(0)
    make_tiny_model(tmp_path / "tiny-src", fixture_texts())
    data = tmp_path / "sg"
    for split, n in (("train", 12), ("validation", 8)):
        write(data / "cb" / f"{split}.jsonl", cb_rows(n, rng))
        write(data / "multirc" / f"{split}.jsonl", multirc_rows(n, rng))
        write(data / "record" / f"{split}.jsonl", record_rows(n, rng))
    work = copy_workflow(tmp_path / "work")
    cfg = {"tasks": ["cb", "multirc", "record"], "methods": ["zeroshot", "fewshot"], "seeds": [1],
           "models": {"tiny": {"path": str(tmp_path / "tiny-src")}},
           "data": {"source": "local", "local_dir": str(data), "max_samples": {"train": 6, "eval": 5}},
           "prompting": {"num_shots": 2}, "evaluation": {"batch_size": 8, "max_new_tokens": 8, "bootstrap_resamples": 200},
           "mlflow": {"enabled": False}}
    (work / "config" / "sg.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(work, "--configfile", "config/sg.yaml", "--replace-workflow-config")

    rows = list(csv.DictReader((work / "results/tables/superglue.csv").open()))
    cols = ["cb", "multirc", "record"]
    assert list(rows[0]) == ["method", "model", "seeds", *[c + s for c in cols for s in ("", "_lo", "_hi")], "average"]
    assert [r["method"] for r in rows] == ["zeroshot", "fewshot"]
    assert not (work / "results/tables/glue.csv").exists()
    assert (work / "results/tables/superglue.md").read_text().startswith("# SUPERGLUE")

    # ReCoRD: five queries (max_samples counts queries), three candidate rows each
    raw = [json.loads(x) for x in (work / "data/raw/record/validation.jsonl").read_text().splitlines()]
    assert len(raw) == 15 and len({r["idx"]["query"] for r in raw}) == 5 and sum(r["label"] for r in raw) == 5
    for task, n_units in (("record", 5), ("multirc", 5), ("cb", 5)):
        res = json.loads((work / f"results/eval/zeroshot/tiny/seed1/{task}.json").read_text())["columns"][task]
        assert res["bootstrap"] == {"units": n_units, "resamples": 200, "seed": 0, "confidence": 0.95}, task
        t = get_task(task)
        for m in (*t.metrics, "score"):
            assert res["ci"][m][0] <= res[m] <= res["ci"][m][1], (task, m)
        # the scores are those of the predictions file (traceable to the completions)
        preds = [json.loads(x) for x in
                 (work / f"results/eval/zeroshot/tiny/seed1/{task}.predictions.jsonl").read_text().splitlines()]
        again = compute_metrics([p["label"] for p in preds], [p["prediction"] for p in preds], t, meta=preds)
        assert {m: again[m] for m in t.metrics} == {m: res[m] for m in t.metrics}, task
    assert float(rows[0]["record"]) == round(100 * json.loads(
        (work / "results/eval/zeroshot/tiny/seed1/record.json").read_text())["columns"]["record"]["score"], 1)
