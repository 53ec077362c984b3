"""Safe loading and no leaked credentials.

- A model folder with only pickle weights (``pytorch_model.bin``) is refused with a message naming
  the model and the ``allow_pickle`` key; with ``allow_pickle: true`` it loads (and is saved as
  safetensors, so every later stage loads safetensors only).
- A folder whose model needs its own Python code is refused, and the code is not run, unless the
  model's ``trust_remote_code`` is true; every loader passes ``trust_remote_code=False`` by default.
- A workflow run with a fake HF token, MLflow password and a tracking URI holding user:password
  (a real ``mlflow server``): none of them appears in any log, output file, Snakemake metadata,
  MLflow param, tag, metric name or artifact, nor in the server's database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_reliability_data import run_script

from gluerl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pickle_only(tiny_model, tmp_path_factory):
    """A copy of the tiny model whose weights are only a pickle (``pytorch_model.bin``)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("pickle") / "model"
    shutil.copytree(tiny_model, folder)
    (folder / "model.safetensors").unlink()
    state = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    torch.save(state, folder / "pytorch_model.bin")
    return folder, state


def test_pickle_weights_refused_with_a_clear_message(pickle_only, tmp_path, capsys):
    folder, _ = pickle_only
    cfg = json.dumps({"models": {"binm": {"path": str(folder)}}})
    code, err = run_script("prepare_model", ["--config-json", cfg, "--model", "binm", "--output",
                                             str(tmp_path / "out")], capsys)
    assert code == 1 and "Traceback" not in err
    assert f"models.binm: {folder} has only pickle-based weights (pytorch_model.bin)" in err, err
    assert "models.binm.allow_pickle: true" in err
    assert not (tmp_path / "out").exists()


def test_pickle_weights_load_when_allowed_and_are_saved_as_safetensors(pickle_only, tmp_path):
    import torch
    from safetensors.torch import load_file

    from gluerl.models import load_model, prepare_model

    folder, state = pickle_only
    out = prepare_model("binm", {"path": str(folder), "allow_pickle": True}, tmp_path / "out")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    saved = load_file(str(out / "model.safetensors"))
    for k, v in saved.items():
        assert torch.equal(v, state[k]), k
    load_model(out, device="cpu")  # later stages load it (safetensors only)


def test_later_stages_load_safetensors_only(pickle_only):
    from gluerl.models import load_model

    folder, _ = pickle_only
    with pytest.raises(OSError, match="model.safetensors"):
        load_model(folder, device="cpu")


def remote_code_model(tiny_model, folder: Path) -> Path:
    """A copy of the tiny model whose config asks for its own code (``evil.py`` writes $MARKER when imported)."""
    import shutil

    shutil.copytree(tiny_model, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="gluerlremote", auto_map={"AutoConfig": "evil.RemoteConfig",
                                                    "AutoModelForCausalLM": "evil.RemoteModel"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "evil.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['GLUERL_TEST_MARKER']).write_text('executed')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class RemoteConfig(LlamaConfig):\n    model_type = 'gluerlremote'\n"
        "class RemoteModel(LlamaForCausalLM):\n    config_class = RemoteConfig\n")
    return folder


def test_remote_code_is_not_run_unless_the_model_trusts_it(tiny_model, tmp_path, capsys, monkeypatch):
    folder = remote_code_model(tiny_model, tmp_path / "remote")
    marker = tmp_path / "executed"
    monkeypatch.setenv("GLUERL_TEST_MARKER", str(marker))
    cfg = {"models": {"rm": {"path": str(folder)}}}
    code, err = run_script("prepare_model", ["--config-json", json.dumps(cfg), "--model", "rm", "--output",
                                             str(tmp_path / "out")], capsys)
    assert code == 1 and "models.rm.trust_remote_code is true" in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()

    # the same folder with trust_remote_code: true runs its code (in a subprocess, own modules cache)
    cfg["models"]["rm"]["trust_remote_code"] = True
    env = {**os.environ, "GLUERL_TEST_MARKER": str(marker), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_model.py"), "--config-json",
                           json.dumps(cfg), "--model", "rm", "--output", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert marker.exists() and marker.read_text() == "executed", proc.stderr[-2000:]


def test_every_loader_passes_trust_remote_code_false_by_default(tiny_model, tmp_path, monkeypatch):
    import transformers

    from gluerl.models import load_model, load_tokenizer, prepare_model
    from gluerl.training import load_base_model

    seen = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        orig = cls.from_pretrained.__func__

        def spy(klass, *a, _orig=orig, **kw):
            seen.append((klass.__name__, kw.get("trust_remote_code"), kw.get("use_safetensors")))
            return _orig(klass, *a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))

    prepare_model("m", {"path": str(tiny_model)}, tmp_path / "p")
    load_model(tiny_model, device="cpu")
    load_tokenizer(tiny_model)
    load_base_model(tiny_model, "float32")
    assert seen and all(t is False for _, t, _ in seen), seen
    assert all(s is True for c, _, s in seen if c == "AutoModelForCausalLM"), seen
    seen.clear()
    prepare_model("m", {"path": str(tiny_model), "trust_remote_code": True}, tmp_path / "p2")
    assert seen and all(t is True for _, t, _ in seen), seen


def test_evaluation_passes_the_models_own_trust_setting(monkeypatch, tmp_path):
    """The evaluate_model stage (gluerl.evaluation.evaluate_model, behind scripts/evaluate.py) takes
    trust_remote_code from the config entry of the model it evaluates."""
    from gluerl.config import load_config
    from gluerl.evaluation import evaluate_model
    from gluerl.io import write_jsonl
    from gluerl.prompts import format_split
    from gluerl.tasks import get_task
    from gluerl.testing import generate_rows

    val = write_jsonl(tmp_path / "val.jsonl", format_split(generate_rows("rte", 2), get_task("rte")))
    calls = []
    # evaluate_model loads through gluerl.models: stop at the tokenizer, once its flag is seen
    monkeypatch.setattr("gluerl.models.load_tokenizer", lambda path, trust: calls.append(("tok", trust)) or 1 / 0)
    for model_spec, expected in (({}, False), ({"trust_remote_code": True}, True)):
        cfg = load_config(None, {"models": {"m": model_spec}, "mlflow": {"enabled": False}}, check=False)
        with pytest.raises(ZeroDivisionError):
            evaluate_model(cfg, "rte", [f"validation={val}"], "x", tmp_path / "r.json", tmp_path / "p.jsonl",
                           method="zeroshot", model="m")
        assert calls[-1] == ("tok", expected)


# ---------------------------------------------------------------------------------------------
# credentials
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_no_credential_in_logs_outputs_or_mlflow(tmp_path, mlflow_server):
    from mlflow import MlflowClient
    from reliability_helpers import make_project, run_smk

    secrets = {"HF_TOKEN": "hf_" + uuid.uuid4().hex + "Zq", "MLFLOW_TRACKING_PASSWORD": "pw" + uuid.uuid4().hex,
               "uri": "u" + uuid.uuid4().hex[:12]}
    host = mlflow_server.url.split("://", 1)[1]
    experiment = "secrets-" + uuid.uuid4().hex[:6]
    env = {"HF_TOKEN": secrets["HF_TOKEN"], "HUGGING_FACE_HUB_TOKEN": secrets["HF_TOKEN"],
           "MLFLOW_TRACKING_USERNAME": "ci-user", "MLFLOW_TRACKING_PASSWORD": secrets["MLFLOW_TRACKING_PASSWORD"],
           "MLFLOW_TRACKING_URI": f"http://ci-user:{secrets['uri']}@{host}"}
    work = make_project(tmp_path, {
        "methods": ["zeroshot", "ppo"], "mlflow": {"enabled": True, "experiment": experiment},
        "ppo": {"steps": 2, "batch_size": 4, "mini_batch_size": 4, "ppo_epochs": 1, "min_new_tokens": 6,
                "max_new_tokens": 6, "save_every": 1}})
    proc = run_smk(work, "results/tables/glue.csv", env=env)
    assert (work / "results/tables/glue.csv").is_file()

    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    stages = sorted(r.data.tags.get("gluerl.stage") for r in runs)
    assert {"ppo", "evaluate"} <= set(stages), stages
    texts = [proc.stdout, proc.stderr]
    for run in runs:
        texts.append(json.dumps(run.to_dictionary()))
        dst = tmp_path / "artifacts" / run.info.run_id
        dst.mkdir(parents=True)
        client.download_artifacts(run.info.run_id, "", str(dst))
        texts += [p.read_bytes().decode("utf-8", "replace") for p in dst.rglob("*") if p.is_file()]
    files = [p for p in work.rglob("*") if p.is_file()]
    files += [p for p in mlflow_server.root.rglob("*") if p.is_file()]  # the server's database and artifacts
    assert any(p.suffix == ".log" for p in files) and any(p.name == "mlflow.db" for p in files)
    for name, value in secrets.items():
        assert not any(value in t for t in texts), name
        leaked = [str(p) for p in files if value.encode() in p.read_bytes()]
        assert leaked == [], (name, leaked)
    # the run did use the credentials' carrier: it reached the server through the URI with user:password
    assert len(runs) >= 3


def test_credentials_in_the_config_file_are_refused():
    """Config sections travel as job parameters (command lines, Snakemake metadata): a URI with a password is refused."""
    from gluerl.config import check_names, load_config

    cfg = load_config(None, {"mlflow": {"tracking_uri": "https://bob:s3cr3t-pw@mlflow.example.org"}})
    with pytest.raises(ConfigError, match="mlflow.tracking_uri holds credentials") as e:
        check_names(cfg)
    assert "s3cr3t-pw" not in str(e.value)
    check_names(load_config(None, {"mlflow": {"tracking_uri": "https://mlflow.example.org"}}))
