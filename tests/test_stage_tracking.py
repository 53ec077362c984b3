"""Stages log to MLflow: the evaluation CLI against the default SQLite store, read back with MlflowClient."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gluerl.io import write_jsonl
from gluerl.prompts import format_split
from gluerl.tasks import get_task
from gluerl.testing import generate_rows

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_evaluation_stage_is_an_mlflow_run(tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    prompts = write_jsonl(tmp_path / "p.jsonl", format_split(generate_rows("rte", 6), get_task("rte")))
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(GLUERL_PIPELINE_ID="pipe-123", GLUERL_RULE="evaluate_model")
    cfg = json.dumps({"mlflow": {"experiment": "stage-test"}, "evaluation": {"batch_size": 3, "max_new_tokens": 4}})
    out = tmp_path / "results" / "rte.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--config-json", cfg, "--task", "rte",
                    "--method", "zeroshot", "--model", "tiny", "--seed", "3", "--model-dir", str(tiny_model),
                    "--prompts", f"validation={prompts}", "--output", str(out),
                    "--predictions", str(tmp_path / "results" / "rte.predictions.jsonl")],
                   cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=600)
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("stage-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["task"] == "rte" and p["method"] == "zeroshot" and p["seed"] == "3" and p["model"] == "tiny"
    assert p["evaluation.batch_size"] == "3" and p["snakemake_rule"] == "evaluate_model"
    assert "git_commit" in p and "versions.transformers" in p
    assert run.data.tags["gluerl.pipeline_id"] == "pipe-123"
    result = json.loads(out.read_text())["columns"]["rte"]
    assert run.data.metrics["rte.accuracy"] == pytest.approx(result["accuracy"])
    assert run.data.metrics["rte.invalid_rate"] == pytest.approx(result["invalid_rate"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"rte.json", "rte.predictions.jsonl"} <= names
