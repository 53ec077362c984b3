"""gluerl.tracking against a SQLite store and a real ``mlflow server`` (CPU, offline, tmp dirs)."""

import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gluerl import tracking
from gluerl.errors import ConfigError
from gluerl.tracking import flatten, resolve_uri, start_run

REPO = Path(__file__).resolve().parents[1]
REWARDS = [0.1, 0.25, 0.5, 0.75, 1.0]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Every test runs in its own empty folder with no tracking variables set."""
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "GLUERL_PIPELINE_ID", "GLUERL_PARENT_RUN_ID", "RANK"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def store(tmp_path, template_db):
    """The default store (``results/mlflow.db`` under the cwd), pre-made from the template; its URI."""
    (tmp_path / "results").mkdir()
    shutil.copy(template_db, tmp_path / "results" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def exercise(mlflow_cfg, tmp_path, **kw):
    """A run with params, 5 steps of reward, an artifact file and a dict; returns the tracker."""
    artifact = tmp_path / "summary.txt"
    artifact.write_text("accuracy 0.9\n")
    params = {"model": "tiny", "task": "rte", "method": "ppo", "seed": 1, "snakemake_rule": "train_ppo",
              "wildcards.model": "tiny",
              **flatten({"ppo": {"lr": 1e-5, "kl": {"target": 6.0}}, "tasks": ["rte", "sst2"]})}
    with start_run(mlflow_cfg, run_name="ppo-tiny-rte", stage="ppo", params=params,
                   tags={"owner": "ci"}, **kw) as tr:
        for step, r in enumerate(REWARDS):
            tr.log_metrics({"reward": r, "note": "not a number"}, step=step)
        tr.log_artifact(artifact, artifact_path="outputs")
        tr.log_dict({"final_reward": 1.0, "steps": 5}, "summary.json")
    return tr


def verify(uri, tr, experiment, tmp_path):
    import mlflow

    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None and exp.experiment_id == tr.experiment_id
    run = c.get_run(tr.run_id)
    assert run.info.experiment_id == exp.experiment_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "ppo-tiny-rte"
    p = run.data.params
    assert p["model"] == "tiny" and p["seed"] == "1" and p["ppo.kl.target"] == "6.0"
    assert json.loads(p["tasks"]) == ["rte", "sst2"]
    assert p["git_commit"] == "unknown"  # tmp_path is not a git repository
    for pkg in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "gluerl", "mlflow"):
        assert p[f"versions.{pkg}"] and p[f"versions.{pkg}"] != "not installed"
    assert run.data.tags["gluerl.stage"] == "ppo"
    assert run.data.tags["gluerl.pipeline_id"] == "pipe-42"
    assert p["snakemake_rule"] == "train_ppo" and p["wildcards.model"] == "tiny"
    assert run.data.tags["owner"] == "ci"
    hist = sorted(c.get_metric_history(tr.run_id, "objective/reward"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in hist] == list(enumerate(REWARDS))
    assert "note" not in run.data.metrics
    files = {f.path for f in c.list_artifacts(tr.run_id)} | {f.path for f in c.list_artifacts(tr.run_id, "outputs")}
    assert {"summary.json", "outputs/summary.txt"} <= files
    dst = tmp_path / "download"
    dst.mkdir()
    got = mlflow.artifacts.download_artifacts(run_id=tr.run_id, artifact_path="outputs/summary.txt",
                                              dst_path=str(dst), tracking_uri=uri)
    assert Path(got).read_text() == "accuracy 0.9\n"
    got = mlflow.artifacts.download_artifacts(run_id=tr.run_id, artifact_path="summary.json",
                                              dst_path=str(dst), tracking_uri=uri)
    assert json.loads(Path(got).read_text()) == {"final_reward": 1.0, "steps": 5}


# --------------------------------------------------------------------------- pure helpers

def test_flatten_and_uri_resolution(tmp_path, monkeypatch):
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    assert flatten({"x": 1}, "ppo") == {"ppo.x": 1}
    assert resolve_uri({"tracking_uri": None}) == f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    assert (tmp_path / "results").is_dir()
    assert resolve_uri({"tracking_uri": "http://cfg:5000"}) == "http://cfg:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # empty: ignored
    assert resolve_uri({"tracking_uri": "http://cfg:5000"}) == "http://cfg:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_uri({"tracking_uri": "http://cfg:5000"}) == "http://env:5000"
    assert re.fullmatch(r"[0-9a-f]{40}", tracking.git_commit(REPO))
    assert tracking.git_commit(tmp_path) == "unknown"


def test_clean_params_redacts_and_truncates():
    out = tracking.clean_params({
        "hf_token": "hf_abcdefghijklmnopqrstuvwx", "mlflow.password": "pw", "HF_API_KEY": "x",
        "auth.authorization": "Bearer y", "client_secret": "z", "note": "uses hf_abcdefghijklmnopqrstuvwx here",
        "url": "https://user:pass@host/x", "generation.max_new_tokens": 12, "long": "x" * 7000, "bad key!": 1,
    })
    for k in ("hf_token", "mlflow.password", "HF_API_KEY", "auth.authorization", "client_secret"):
        assert out[k] == "***", k
    assert out["note"] == "uses *** here" and out["url"] == "https://***@host/x"
    assert out["generation.max_new_tokens"] == "12"  # 'tokens' is not a credential
    assert len(out["long"]) <= 6000 and out["long"].endswith("[truncated 7000 chars]")
    assert out["bad key_"] == "1"


# --------------------------------------------------------------------------- SQLite store (default)

def test_default_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GLUERL_PIPELINE_ID", "pipe-42")
    tr = exercise({"enabled": True, "tracking_uri": None, "experiment": "glue-test"}, tmp_path)
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    assert tr.uri == uri and (tmp_path / "results" / "mlflow.db").is_file()
    verify(uri, tr, "glue-test", tmp_path)
    assert not (tmp_path / "mlruns").exists()  # artifacts live beside the database
    assert (tmp_path / "results" / "mlartifacts").is_dir()

    # a second run of the same invocation: same experiment, same pipeline id
    with start_run({"experiment": "glue-test"}, run_name="eval", stage="evaluate") as tr2:
        pass
    assert tr2.experiment_id == tr.experiment_id
    assert client(uri).get_run(tr2.run_id).data.tags["gluerl.pipeline_id"] == "pipe-42"


def test_credentials_never_logged(tmp_path, store):
    with start_run({"experiment": "e"}, run_name="r", stage="sft",
                   params={"hf_token": "hf_abcdefghijklmnopqrstuvwx", "mlflow.password": "hunter2",
                           "generation.max_new_tokens": 12},
                   tags={"api_key": "k"}) as tr:
        tr.log_params({"later.secret": "s", "later.ok": 1})
    run = client(tr.uri).get_run(tr.run_id)
    p = run.data.params
    assert p["hf_token"] == "***" and p["mlflow.password"] == "***" and p["later.secret"] == "***"
    assert p["generation.max_new_tokens"] == "12" and p["later.ok"] == "1"
    assert run.data.tags["api_key"] == "***"
    assert "hf_abcdefghijklmnopqrstuvwx" not in json.dumps(run.to_dictionary())
    assert tr.run_id and not any(k.startswith("env") for k in p)


# --------------------------------------------------------------------------- failures

def test_unreachable_store_fails_fast(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        start_run({"tracking_uri": uri}, run_name="r", stage="ppo")
    assert time.monotonic() - t0 < 15
    msg = str(err.value)
    assert uri in msg and "cannot be reached" in msg and "MLFLOW_TRACKING_URI" in msg and "enabled: false" in msg
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the check's settings are restored


def test_exception_in_block_marks_run_failed(tmp_path, store):
    with pytest.raises(ValueError, match="boom"):
        with start_run({"experiment": "e"}, run_name="r", stage="grpo") as tr:
            tr.log_metrics({"loss": 1.0}, step=1)
            raise ValueError("boom")
    run = client(tr.uri).get_run(tr.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["gluerl.error"] == "ValueError: boom"


def test_mlflow_failure_at_the_end_is_only_a_warning(tmp_path, monkeypatch, caplog, store):
    from mlflow import MlflowClient

    def broken(*args, **kwargs):
        raise RuntimeError("store went away")

    (tmp_path / "ckpt.bin").write_bytes(b"weights")
    with start_run({"experiment": "e"}, run_name="r", stage="sft") as tr:
        monkeypatch.setattr(MlflowClient, "log_artifact", broken)
        monkeypatch.setattr(MlflowClient, "log_batch", broken)
        monkeypatch.setattr(MlflowClient, "set_terminated", broken)
        tr.log_metrics({"loss": 0.5}, step=1)
        tr.log_artifact(tmp_path / "ckpt.bin")
        tr.log_artifact(tmp_path / "missing.bin")
        work_done = True
    assert work_done and (tmp_path / "ckpt.bin").read_bytes() == b"weights"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("could not log metrics" in w for w in warnings)
    assert any("could not log artifact" in w and "store went away" in w for w in warnings)
    assert any("missing.bin does not exist" in w for w in warnings)
    assert any("could not end the run as FINISHED" in w for w in warnings)


# --------------------------------------------------------------------------- disabled

@pytest.mark.parametrize("how", ["argument", "config", "rank"])
def test_disabled_touches_nothing(tmp_path, monkeypatch, how):
    import mlflow

    def no_mlflow(*a, **k):
        raise AssertionError("MLflow touched while disabled")

    monkeypatch.setattr(mlflow, "MlflowClient", no_mlflow)
    monkeypatch.setattr(mlflow, "start_run", no_mlflow)
    cfg = {"enabled": how != "config", "tracking_uri": None, "experiment": "e"}
    if how == "rank":
        monkeypatch.setenv("RANK", "1")
    (tmp_path / "f.txt").write_text("x")
    with start_run(cfg, run_name="r", stage="ppo", params={"a": 1}, enabled=how != "argument") as tr:
        tr.log_metrics({"x": 1.0}, step=0)
        tr.log_params({"b": 2})
        tr.set_tags({"t": "v"})
        tr.log_artifact(tmp_path / "f.txt")
        tr.log_dict({"a": 1}, "a.json")
    assert not tr.enabled and tr.run_id is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no results/, mlruns/, mlflow.db


# --------------------------------------------------------------------------- Trainer callback

def test_trainer_callback_logs_numeric_values_on_main_process(tmp_path, store):
    import numpy as np
    from transformers import TrainerCallback

    from gluerl.tracking import MlflowTrainerCallback

    assert issubclass(MlflowTrainerCallback, TrainerCallback)
    with start_run({"experiment": "e"}, run_name="r", stage="sft") as tr:
        cb = MlflowTrainerCallback(tr)
        args, control = SimpleNamespace(), SimpleNamespace()
        for step, loss in ((10, 2.0), (20, 1.5)):
            state = SimpleNamespace(global_step=step, is_world_process_zero=True)
            cb.on_log(args, state, control, logs={"loss": loss, "learning_rate": np.float32(1e-4),
                                                   "epoch": step / 20, "note": "text", "hist": [1, 2]})
        cb.on_log(args, SimpleNamespace(global_step=30, is_world_process_zero=False), control, logs={"loss": 9.0})
    c = client(tr.uri)
    assert [(m.step, m.value) for m in sorted(c.get_metric_history(tr.run_id, "train/loss"), key=lambda m: m.step)] \
        == [(10, 2.0), (20, 1.5)]
    metrics = c.get_run(tr.run_id).data.metrics
    assert metrics["train/learning_rate"] == pytest.approx(1e-4) and metrics["train/epoch"] == 1.0
    assert "note" not in metrics and "hist" not in metrics


# --------------------------------------------------------------------------- real tracking server

def test_tracking_server_env_uri_wins(tmp_path, monkeypatch, mlflow_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("GLUERL_PIPELINE_ID", "pipe-42")
    cfg = {"enabled": True, "tracking_uri": f"sqlite:///{tmp_path / 'not-used.db'}", "experiment": "glue-server"}
    tr = exercise(cfg, tmp_path)
    assert tr.uri == mlflow_server.url
    assert not (tmp_path / "not-used.db").exists() and not (tmp_path / "results").exists()
    verify(mlflow_server.url, tr, "glue-server", tmp_path)
    # the artifacts went through the server to its --artifacts-destination
    stored = list((mlflow_server.root / "artifacts").rglob("summary.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "accuracy 0.9\n"


def test_sigterm_ends_the_run_as_killed(tmp_path, store):
    """A job stopped with SIGTERM (Snakemake, a scheduler) leaves a KILLED run, not a RUNNING one."""
    code = (
        "import os, signal, sys, time\n"
        "from gluerl.tracking import start_run\n"
        "with start_run({'enabled': True, 'tracking_uri': sys.argv[1], 'experiment': 'term'}, 'victim', 'sft') as tr:\n"
        "    tr.log_metrics({'loss': 1.0}, step=1)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-c", code, store], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr[-2000:]
    (run,) = client(store).search_runs([client(store).get_experiment_by_name("term").experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.metrics["train/loss"] == 1.0
