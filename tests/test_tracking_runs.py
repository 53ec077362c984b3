"""MLflow the MLflow way, against a temporary SQLite store: a parent run per workflow invocation
with stage runs nested under it, grouped metric names, system metrics, datasets as inputs, the
adapter as artifacts and evaluation runs linked to the training run of their adapter."""

import json
import shutil
import time

import pytest

from gluerl import tracking
from gluerl.records import write_provenance
from gluerl.tracking import eval_metrics, metric_key, start_run


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "GLUERL_PIPELINE_ID", "GLUERL_PARENT_RUN_ID", "RANK",
                "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")  # on where a test says so


@pytest.fixture
def cfg(tmp_path, template_db):
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "nested"}


def client(cfg):
    from mlflow import MlflowClient

    return MlflowClient(cfg["tracking_uri"])


def test_metric_names_are_grouped_and_step_is_not_a_metric():
    assert metric_key("reward_mean") == "objective/reward_mean"
    assert metric_key("kl_coef") == "objective/kl_coef"
    assert metric_key("policy_loss") == "policy/policy_loss" and metric_key("entropy") == "policy/entropy"
    assert metric_key("value_loss") == "value/value_loss" and metric_key("explained_variance") == "value/explained_variance"
    assert metric_key("pred_frac/sst2/positive") == "answers/sst2/positive"
    assert metric_key("loss") == "train/loss" and metric_key("seconds_step") == "time/seconds_step"
    assert metric_key("step") is None and metric_key("max_new_tokens") is None
    assert metric_key("rewards/judgement/mean") == "rewards/judgement/mean"  # TRL's own groups stay
    assert metric_key("final.reward_mean") == "final/objective/reward_mean"
    assert metric_key("rte.accuracy", "eval") == "eval/rte/accuracy"


def test_interval_bounds_are_metrics():
    got = eval_metrics("cola", {"mcc": 0.2, "n": 10, "valid": True, "ci": {"mcc": [0.1, 0.3], "score": [0.1, 0.3]}})
    assert got == {"eval/cola/mcc": 0.2, "eval/cola/n": 10, "eval/cola/mcc_ci_lo": 0.1, "eval/cola/mcc_ci_hi": 0.3,
                   "eval/cola/score_ci_lo": 0.1, "eval/cola/score_ci_hi": 0.3}


def test_stage_runs_nest_under_the_invocations_parent(cfg, capsys):
    parent = tracking.start_pipeline_run(cfg, params={"tasks": ["sst2"], "data.source": "embedded"})
    assert parent and parent in capsys.readouterr().out  # printed at start
    import os

    assert os.environ["GLUERL_PARENT_RUN_ID"] == parent
    assert tracking.start_pipeline_run(cfg) == parent  # a job's own Snakemake: no second parent
    with start_run(cfg, "ppo-m-sst2-seed1", "ppo") as train:
        train.log_metrics({"step": 1, "reward_mean": 0.5, "kl": 0.01, "value_loss": 2.0, "max_new_tokens": 8}, step=1)
    with start_run(cfg, "eval-ppo-m-sst2-seed1", "evaluate") as ev:
        pass
    tracking.end_pipeline_run("FINISHED")
    assert "GLUERL_PARENT_RUN_ID" not in os.environ

    c = client(cfg)
    runs = {r.info.run_name: r for r in c.search_runs([c.get_experiment_by_name("nested").experiment_id])}
    assert set(runs) == {"ppo-m-sst2-seed1", "eval-ppo-m-sst2-seed1", next(n for n in runs if n.startswith("snakemake"))}
    top = runs[next(n for n in runs if n.startswith("snakemake"))]
    assert top.info.run_id == parent and top.info.status == "FINISHED" and "mlflow.parentRunId" not in top.data.tags
    assert top.data.tags["gluerl.stage"] == "pipeline" and top.data.params["data.source"] == "embedded"
    for run in (train, ev):
        assert c.get_run(run.run_id).data.tags["mlflow.parentRunId"] == parent
    metrics = c.get_run(train.run_id).data.metrics
    assert set(metrics) == {"objective/reward_mean", "objective/kl", "value/value_loss"}
    assert [m.step for m in c.get_metric_history(train.run_id, "objective/kl")] == [1]


def test_system_metrics_are_sampled(cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    with start_run(cfg, "busy", "sft") as tr:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(k.startswith("system/") for k in client(cfg).get_run(tr.run_id).data.metrics):
                break
            time.sleep(0.3)
    names = set(client(cfg).get_run(tr.run_id).data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= names


def test_datasets_adapter_and_the_link_from_evaluation(cfg, tmp_path):
    from gluerl.training import log_training_outputs

    prompts = tmp_path / "train.jsonl"
    rows = [{"idx": i, "label": i % 2, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(5)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_provenance(prompts, {"raw": {"source": "embedded", "max_samples": None, "subsampled": False}})
    out = tmp_path / "ckpt"
    out.mkdir()
    for name, data in (("adapter_model.safetensors", b"weights"), ("adapter_config.json", b"{}"),
                       ("value_head.safetensors", b"vh"), ("train_summary.json", b'{"steps": 3}')):
        (out / name).write_bytes(data)
    with start_run(cfg, "sft-m-sst2-seed1", "sft") as train:
        train.log_datasets({"sst2-train": prompts}, "training")
        log_training_outputs(train, out, {"steps": 3, "train_loss": 0.5})
    assert tracking.training_run_of(out) == train.run_id
    assert tracking.training_run_of(tmp_path / "nothing") is None and tracking.training_run_of(None) is None

    c = client(cfg)
    run = c.get_run(train.run_id)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "sst2-train" and str(prompts) in inp.dataset.source
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    assert json.loads(inp.dataset.profile)["num_rows"] == 5
    assert {a.path for a in c.list_artifacts(train.run_id, "adapter")} == {
        "adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/value_head.safetensors"}
    assert run.data.metrics["final/steps"] == 3


@pytest.mark.slow
def test_evaluate_script_links_to_training_and_logs_intervals(cfg, tmp_path, tiny_model, monkeypatch):
    """scripts/evaluate.py on an adapter folder with a run reference: tag, data params, CI metrics."""
    import importlib.util
    from pathlib import Path

    from gluerl.io import write_jsonl
    from gluerl.prompts import format_split
    from gluerl.tasks import get_task
    from gluerl.testing import generate_rows

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("script_evaluate", root / "scripts" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    val = write_jsonl(tmp_path / "val.jsonl", format_split(generate_rows("rte", 6, seed=1), get_task("rte")))
    write_provenance(val, {"raw": {"source": "local", "dataset": "x/rte/validation.jsonl", "max_samples": 6,
                                   "subsampled": True}, "template": {"name": "0shot", "num_fewshot": 0}})
    with start_run(cfg, "training", "sft") as train:
        pass
    ref = tmp_path / "adapter"
    ref.mkdir()
    (ref / "mlflow_run.json").write_text(json.dumps({"run_id": train.run_id}))
    from gluerl.models import load_model

    # the folder holds only the run reference: load the base model, not an adapter
    monkeypatch.setattr("gluerl.models.load_model", lambda path, adapter, *a: load_model(path))
    mod.main(["--config-json", json.dumps({"mlflow": cfg, "evaluation": {"batch_size": 3, "max_new_tokens": 6,
                                                                         "bootstrap_resamples": 20}}),
              "--task", "rte", "--method", "sft", "--model", "tiny", "--model-dir", str(tiny_model), "--adapter", str(ref),
              "--prompts", f"validation={val}", "--output", str(tmp_path / "rte.json"),
              "--predictions", str(tmp_path / "rte.predictions.jsonl")])
    c = client(cfg)
    (run,) = [r for r in c.search_runs([c.get_experiment_by_name("nested").experiment_id])
              if r.data.tags.get("gluerl.stage") == "evaluate"]
    assert run.data.tags["gluerl.training_run_id"] == train.run_id
    res = json.loads((tmp_path / "rte.json").read_text())["columns"]["rte"]
    m = run.data.metrics
    assert m["eval/rte/accuracy"] == pytest.approx(res["accuracy"])
    assert (m["eval/rte/accuracy_ci_lo"], m["eval/rte/accuracy_ci_hi"]) == pytest.approx(tuple(res["ci"]["accuracy"]))
    p = run.data.params
    assert p["data.rte.source"] == "local" and p["data.rte.max_samples"] == "6" and p["data.rte.subsampled"] == "True"
    assert p["data.rte.num_fewshot"] == "0"
    (inp,) = run.inputs.dataset_inputs
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "evaluation"


@pytest.mark.slow
def test_a_snakemake_invocation_is_one_parent_run(tmp_path):
    """The real workflow: the parent's id is printed at start, the evaluation run nests under it, and
    the record names the data the download step read (provenance through format_prompts)."""
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient
    from reliability_helpers import SNAKEMAKE_ENV, make_project

    work = make_project(tmp_path, {"methods": ["zeroshot"], "mlflow": {"enabled": True, "experiment": "wf"}})
    target = "results/eval/zeroshot/tiny/seed1/rte.json"
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config/test.yaml",
                           "--replace-workflow-config", target], cwd=work, capture_output=True, text=True,
                          env={**os.environ, **SNAKEMAKE_ENV}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    c = MlflowClient(f"sqlite:///{work / 'results' / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("wf").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("gluerl.stage") == "pipeline"]
    (ev,) = [r for r in runs if r.data.tags.get("gluerl.stage") == "evaluate"]
    assert f"parent run {parent.info.run_id}" in proc.stdout + proc.stderr
    assert parent.info.status == "FINISHED" and ev.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.params["data.source"] == "local" and parent.data.params["tasks"] == '["rte"]'
    rec = json.loads((work / target).read_text())
    d = rec["data"]["rte"]["data"]
    assert d["source"] == "local" and d["rows_in_source"] == 6 and d["max_samples"] == 6 and not d["subsampled"]
    assert ev.data.params["data.rte.source"] == "local"
