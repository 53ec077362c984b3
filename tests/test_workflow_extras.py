"""Transfer table and leaderboard submissions through the real Snakemake DAG (tiny model, CPU, offline)."""

import csv
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from gluerl.tasks import get_task
from gluerl.testing import fixture_texts, generate_rows, make_glue_fixture, make_tiny_model
from gluerl.transfer import collapse, parse_targets, score
from test_workflow import METHODS, copy_workflow, snakemake, tiny_config

REPO = Path(__file__).resolve().parents[1]
N_TEST = 5


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def transfer_entries(root: Path) -> list[dict]:
    """Two local targets with their own column names and label values (one coarser than MNLI)."""
    rte_rows = generate_rows("rte", 6, seed=7)
    write_jsonl(root / "claims" / "test.jsonl",
                [{"context": r["sentence1"], "claim": r["sentence2"], "verdict": ["yes", "no"][r["label"]]}
                 for r in rte_rows])
    with open(root / "babi.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "story", "question", "gold"])
        for i, r in enumerate(generate_rows("mnli", 6, seed=3)):
            w.writerow([f"q{i}", r["premise"], r["hypothesis"], "entailed" if r["label"] == 0 else "not-entailed"])
    return [
        {"name": "claims", "source_task": "rte", "dataset": {"local_dir": str(root / "claims")},
         "fields": {"sentence1": "context", "sentence2": "claim"}, "labels": {"yes": 0, "no": 1},
         "label_field": "verdict"},
        {"name": "babi", "source_task": "mnli", "dataset": {"path": str(root / "babi.csv")},
         "fields": {"premise": "story", "hypothesis": "question"}, "labels": {"entailed": 0, "not-entailed": [1, 2]},
         "label_field": "gold", "idx_field": "id"},
    ]


@pytest.fixture(scope="module")
def extras(tmp_path_factory):
    root = tmp_path_factory.mktemp("wfx")
    make_tiny_model(root / "tiny-src", fixture_texts())
    glue = make_glue_fixture(root / "glue", ["rte", "mnli"], n_train=30, n_eval=8)
    for task, splits in (("rte", ["test"]), ("mnli", ["test_matched", "test_mismatched"])):
        for split in splits:
            rows = generate_rows(task, N_TEST, seed=len(split))
            write_jsonl(glue / task / f"{split}.jsonl", [{**r, "label": -1} for r in rows])
    work = copy_workflow(root / "work")
    cfg = tiny_config(root, tasks=["rte", "mnli"], methods=["zeroshot", "sft"], seeds=[1],
                      transfer=transfer_entries(root))
    (work / "config" / "extras.yaml").write_text(yaml.safe_dump(cfg))
    return root, work, cfg


def args(*extra):
    return ["--configfile", "config/extras.yaml", "--replace-workflow-config", *extra]


def read_jsonl(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.mark.slow
def test_submissions_and_transfer_end_to_end(extras):
    root, work, cfg = extras
    snakemake(work, *args("submissions", "results/tables/transfer.csv"))

    allowed = {"RTE.tsv": {"entailment", "not_entailment"},
               "MNLI-m.tsv": {"entailment", "neutral", "contradiction"},
               "MNLI-mm.tsv": {"entailment", "neutral", "contradiction"}}
    for method in ("zeroshot", "sft"):
        base = work / f"results/submissions/{method}/tiny/seed1"
        manifest = json.loads((base / "glue.json").read_text())
        preds = read_jsonl(work / f"results/test_predictions/{method}/tiny/seed1/rte.jsonl")
        preds += read_jsonl(work / f"results/test_predictions/{method}/tiny/seed1/mnli.jsonl")
        assert len(preds) == 3 * N_TEST and all("correct" not in p for p in preds)
        assert manifest["fallbacks"] == sum(p["prediction"] is None for p in preds)
        assert manifest["rows"] == 3 * N_TEST and "AX.tsv" in manifest["missing_files"]
        with zipfile.ZipFile(base / "glue.zip") as z:
            assert z.namelist() == ["MNLI-m.tsv", "MNLI-mm.tsv", "RTE.tsv"]
            for name in z.namelist():
                lines = z.read(name).decode().split("\n")
                assert lines[0] == "index\tprediction" and lines[-1] == ""
                cells = [x.split("\t") for x in lines[1:-1]]
                assert [int(i) for i, _ in cells] == list(range(N_TEST))
                assert {v for _, v in cells} <= allowed[name]
    sft_log = (work / "logs/predict_test/sft/tiny/seed1/rte.log")
    assert sft_log.exists()

    # transfer: a row per method, a column per target; each value from the result file, whose
    # score is recomputed here from its predictions with the target's label mapping
    rows = list(csv.DictReader((work / "results/tables/transfer.csv").open()))
    assert [r["method"] for r in rows] == ["zeroshot", "sft"]
    assert list(rows[0]) == ["method", "model", "seeds", "claims", "claims_lo", "claims_hi", "babi", "babi_lo", "babi_hi",
                             "average"]
    assert all(float(r["claims_lo"]) <= float(r["claims"]) <= float(r["claims_hi"]) for r in rows)  # bootstrap interval
    targets = {t.name: t for t in parse_targets(cfg, {n: get_task(n) for n in ("rte", "mnli")}, check_files=False)}
    for r in rows:
        for name, source in (("claims", "rte"), ("babi", "mnli")):
            res = json.loads((work / f"results/transfer/{r['method']}/tiny/seed1/{name}.json").read_text())
            preds = read_jsonl(work / f"results/transfer/{r['method']}/tiny/seed1/{name}.predictions.jsonl")
            assert len(preds) == 6 and res["source_task"] == source
            again = score(preds, targets[name], get_task(source))
            assert res["columns"][name]["score"] == pytest.approx(again["score"])
            assert float(r[name]) == round(100 * again["score"], 1)
            if r["method"] == "sft":
                assert res["adapter"] == "results/checkpoints/sft/tiny/multi/seed1"
    raw = read_jsonl(work / "data/transfer/babi.jsonl")
    assert [x["idx"] for x in raw] == [f"q{i}" for i in range(6)]
    assert {x["label"] for x in raw} <= set(collapse(targets["babi"]).values())
    assert "babi: trained on mnli" in (work / "results/tables/transfer.md").read_text()

    again = snakemake(work, *args("-n", "submissions", "results/tables/transfer.csv"))
    assert "Nothing to be done" in again.stdout + again.stderr


def plan(tmp_path, cfg, *targets):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", *targets, "--configfile",
                           str(tmp_path / "grid.yaml"), "--replace-workflow-config", "--quiet", "rules"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    return dict((k, int(v)) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)), out


GRID_TRANSFER = [
    {"name": "imdb", "source_task": "sst2", "dataset": {"hub": "stanfordnlp/imdb"}, "fields": {"sentence": "text"},
     "labels": {0: 0, 1: 1}},
    {"name": "babi_nli", "source_task": "mnli", "dataset": {"hub": "tasksource/babi_nli", "name": "counting"},
     "fields": {"premise": "premise", "hypothesis": "hypothesis"}, "labels": {1: 0, 0: [1, 2]}},
]


def test_full_grid_plans_transfer_table_and_submissions(tmp_path):
    """All GLUE tasks, every method, two seeds: every test prediction, archive and transfer evaluation."""
    cfg = {"tasks": ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"],
           "methods": METHODS, "seeds": [1, 2], "models": {"m": {"hub": "org/model"}}, "transfer": GRID_TRANSFER}
    counts, out = plan(tmp_path, cfg, "submissions", "results/tables/transfer.csv")
    assert counts["predict_test"] == 10 * 6 * 2, out          # ax too: its AX.tsv uses MNLI's adapter
    assert counts["make_submission"] == 6 * 2, out            # one glue.zip per method, model and seed
    assert counts["evaluate_transfer"] == 2 * 6 * 2, out      # targets x methods x seeds
    assert counts["download_transfer"] == 2 and counts["assemble_transfer_table"] == 1, out
    assert counts["format_transfer_prompts"] == 2 * 3, out    # 0shot and one 5-shot file per seed
    for rule in ("train_sft", "train_ppo", "train_sft_ppo", "train_grpo"):
        assert counts[rule] == 9 * 2, (rule, out)              # one adapter per trainable task and seed
    # the default target builds the transfer table when targets are configured
    counts, out = plan(tmp_path, cfg)
    assert counts["assemble_transfer_table"] == 1 and counts["evaluate_model"] == 9 * 6 * 2, out
    assert "predict_test" not in counts, out                  # test sets only on request


def test_multi_task_transfer_uses_the_multi_adapter(tmp_path):
    cfg = {"tasks": ["sst2", "mnli"], "methods": ["sft"], "models": {"m": {"hub": "org/model"}},
           "training": {"mode": "multi"}, "transfer": GRID_TRANSFER}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "results/transfer/sft/m/seed1/imdb.json",
                           "--configfile", str(tmp_path / "c.yaml"), "--replace-workflow-config"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--adapter results/checkpoints/sft/m/multi/seed1 --prompts data/transfer/prompts/0shot/imdb.jsonl" in proc.stdout
