"""Evaluation records stand alone: download -> prompts -> evaluate through the three scripts, then
the result JSON names the code (versions, commit, date), the data (source, dataset, revision, caps,
subsample flag), the shots, and every prediction the SHA-256 of the prompt the model read."""

import hashlib
import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path

import pytest

from gluerl.io import read_jsonl
from gluerl.models import load_tokenizer
from gluerl.prompts import render_prompt
from gluerl.records import evaluation_record, num_shots, read_provenance, write_provenance
from gluerl.testing import make_glue_fixture

ROOT = Path(__file__).resolve().parents[1]


def script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_provenance_of_a_rewritten_file_is_not_trusted(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"a": 1}\n')
    write_provenance(data, {"raw": {"source": "local"}})
    assert read_provenance(data)["raw"] == {"source": "local"}
    data.write_text('{"a": 2}\n')  # rewritten without its provenance: the old one describes another file
    assert read_provenance(data) is None
    assert read_provenance(tmp_path / "none.jsonl") is None


def test_num_shots_counts_demonstration_turns():
    assert num_shots([{"role": "user", "content": "q"}]) == 0
    assert num_shots([{"role": "user", "content": "d"}, {"role": "assistant", "content": "a"}] * 2
                     + [{"role": "user", "content": "q"}]) == 2


def test_unknown_data_is_recorded_as_unknown(tmp_path):
    prompts = tmp_path / "p.jsonl"
    rows = [{"idx": i, "label": 0, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(3)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rec = evaluation_record({"validation": "rte"}, {"validation": prompts}, {"validation": rows[:2]}, limit=2)
    assert rec["data"]["rte"]["data"] is None  # no provenance file: not guessed
    assert rec["data"]["rte"]["rows"] == 2 and rec["data"]["rte"]["rows_in_file"] == 3
    assert rec["subsampled"] is True and rec["limit"] == 2  # --limit cut the file
    assert rec["num_fewshot"] == 0


@pytest.mark.parametrize("shots", [0, 2])
def test_evaluation_record_stands_alone(tiny_model, tmp_path, monkeypatch, shots):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    local = make_glue_fixture(tmp_path / "glue", ["rte"], n_train=20, n_eval=10)
    data_cfg = {"source": "local", "local_dir": str(local), "max_samples": {"eval": 6}, "subsample_seed": 3}
    raw = tmp_path / "raw"
    for split in ("train", "validation"):
        script("download_dataset").main(["--config-json", json.dumps({"data": data_cfg}), "--task", "rte",
                                         "--split", split, "--output", str(raw / f"{split}.jsonl")])
    template = "0shot" if shots == 0 else f"{shots}shot-seed1"
    prompts = tmp_path / "prompts" / "validation.jsonl"
    script("format_prompts").main(["--task", "rte", "--template", template, "--input", str(raw / "validation.jsonl"),
                                   "--train", str(raw / "train.jsonl"), "--output", str(prompts)])
    out, preds = tmp_path / "eval" / "rte.json", tmp_path / "eval" / "rte.predictions.jsonl"
    script("evaluate").main(["--config-json", json.dumps({"evaluation": {"batch_size": 4, "max_new_tokens": 6,
                                                                         "bootstrap_resamples": 10}}),
                             "--task", "rte", "--method", "zeroshot", "--model", "tiny", "--model-dir",
                             str(tiny_model), "--prompts", f"validation={prompts}", "--output", str(out),
                             "--predictions", str(preds)])
    rec = json.loads(out.read_text())

    # which code, when
    assert rec["versions"]["gluerl"] == importlib.metadata.version("gluerl")
    for pkg in ("torch", "transformers", "peft", "trl"):
        assert rec["versions"][pkg] == importlib.metadata.version(pkg)
    assert rec["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", rec["git_commit"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", rec["date"])
    # which data: the local folder's 10 validation rows cut to 6 by max_samples.eval with seed 3
    assert rec["num_fewshot"] == shots and rec["limit"] is None and rec["subsampled"] is True
    col = rec["data"]["rte"]
    assert col["num_fewshot"] == shots and col["template"]["name"] == template
    assert col["rows"] == col["rows_in_file"] == 6 == rec["columns"]["rte"]["n"]
    assert col["prompt_file_sha256"] == hashlib.sha256(prompts.read_bytes()).hexdigest()
    d = col["data"]
    assert d["source"] == "local" and d["dataset"] == str(local / "rte" / "validation.jsonl")
    assert d["rows_in_source"] == 10 and d["rows"] == 6 and d["max_samples"] == 6
    assert d["subsampled"] is True and d["subsample_seed"] == 3 and d["revision"] is None
    if shots:
        demo = col["demonstrations"]
        assert len(demo["idx"]) == shots and demo["data"]["split"] == "train" and demo["data"]["subsampled"] is False
        assert set(demo["idx"]) <= {r["idx"] for r in read_jsonl(raw / "train.jsonl")}
    else:
        assert col["demonstrations"] is None

    # every prediction: the hash of the exact text the model read
    tok = load_tokenizer(tiny_model)
    prompt_rows = {r["idx"]: r for r in read_jsonl(prompts)}
    rows = read_jsonl(preds)
    assert len(rows) == 6
    for row in rows:
        text = render_prompt(prompt_rows[row["idx"]]["messages"], tok, "auto")
        assert row["prompt_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert len({r["prompt_sha256"] for r in rows}) == 6
