"""Stages are MLflow runs: an evaluation and a PPO training stage, read back with MlflowClient,
against the default SQLite store and against a real ``mlflow server`` on a loopback port."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gluerl.io import write_jsonl
from gluerl.prompts import format_split
from gluerl.tasks import get_task
from gluerl.testing import generate_rows

REPO = Path(__file__).resolve().parents[1]


def run_stage(script, args, cwd, env, cfg):
    cmd = [sys.executable, str(REPO / "scripts" / script), "--config-json", json.dumps(cfg), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_training_and_evaluation_stages_are_mlflow_runs(store, tiny_model, tmp_path, request):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(GLUERL_PIPELINE_ID=f"pipe-{store}", GLUERL_RULE="stage-test", OMP_NUM_THREADS="1")
    if store == "server":
        uri = request.getfixturevalue("mlflow_server").url
        env["MLFLOW_TRACKING_URI"] = uri  # the user's URI wins over the default store
    else:
        uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"  # default: <cwd>/results/mlflow.db
    rte = get_task("rte")
    train = write_jsonl(tmp_path / "train.jsonl", format_split(generate_rows("rte", 16), rte))
    val = write_jsonl(tmp_path / "val.jsonl", format_split(generate_rows("rte", 6, seed=1), rte))
    exp = f"stages-{store}"
    ppo = {"steps": 3, "batch_size": 4, "mini_batch_size": 4, "ppo_epochs": 1, "min_new_tokens": 6,
           "max_new_tokens": 6, "save_every": 10}
    run_stage("train_ppo.py", ["--model-dir", tiny_model, "--prompts", f"rte={train}", "--output-dir",
                               tmp_path / "ppo", "--seed", 2], tmp_path, env,
              {"mlflow": {"experiment": exp}, "ppo": ppo})
    run_stage("evaluate.py", ["--task", "rte", "--method", "ppo", "--model", "tiny", "--seed", "2", "--model-dir",
                              tiny_model, "--adapter", tmp_path / "ppo", "--prompts", f"validation={val}",
                              "--output", tmp_path / "eval" / "rte.json",
                              "--predictions", tmp_path / "eval" / "rte.predictions.jsonl"], tmp_path, env,
              {"mlflow": {"experiment": exp}, "evaluation": {"batch_size": 3, "max_new_tokens": 6}})

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = {r.data.tags["gluerl.stage"]: r for r in
            client.search_runs([client.get_experiment_by_name(exp).experiment_id])}
    assert set(runs) == {"ppo", "evaluate"}
    for r in runs.values():
        assert r.info.status == "FINISHED"
        assert r.data.tags["gluerl.pipeline_id"] == f"pipe-{store}"
        assert r.data.params["snakemake_rule"] == "stage-test" and "git_commit" in r.data.params
        assert r.data.params["versions.torch"]

    train_run, eval_run = runs["ppo"], runs["evaluate"]
    assert train_run.data.params["ppo.steps"] == "3" and train_run.data.params["lora.r"] == "16"
    assert train_run.data.params["tasks"] == "rte" and train_run.data.params["seed"] == "2"
    history = client.get_metric_history(train_run.info.run_id, "objective/reward_mean")
    logged = [json.loads(x) for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert sorted((m.step, m.value) for m in history) == [(m["step"], pytest.approx(m["reward_mean"])) for m in logged]
    assert {a.path for a in client.list_artifacts(train_run.info.run_id)} >= {"train_summary.json", "metrics.jsonl"}
    assert "adapter/adapter_model.safetensors" in {a.path for a in client.list_artifacts(train_run.info.run_id, "adapter")}
    assert eval_run.data.tags["gluerl.training_run_id"] == train_run.info.run_id  # the adapter's run
    assert "step" not in train_run.data.metrics and "objective/kl" in train_run.data.metrics

    p = eval_run.data.params
    assert p["task"] == "rte" and p["method"] == "ppo" and p["evaluation.batch_size"] == "3"
    assert p["adapter"] == str(tmp_path / "ppo")
    result = json.loads((tmp_path / "eval" / "rte.json").read_text())["columns"]["rte"]
    assert eval_run.data.metrics["eval/rte/accuracy"] == pytest.approx(result["accuracy"])
    assert eval_run.data.metrics["eval/rte/invalid_rate"] == pytest.approx(result["invalid_rate"])
    names = {a.path for a in client.list_artifacts(eval_run.info.run_id)}
    assert {"rte.json", "rte.predictions.jsonl"} <= names
    local = client.download_artifacts(eval_run.info.run_id, "rte.json", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (tmp_path / "eval" / "rte.json").read_bytes()
