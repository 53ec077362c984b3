"""An unreachable Hugging Face hub fails the data and model steps at once, in one line that names the
config key, the repository and the alternatives; with ``HF_HUB_OFFLINE=1`` a filled cache is used.

The hub is ``HF_ENDPOINT`` pointed at a closed port on 127.0.0.1: nothing leaves the machine.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port

from gluerl.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "src/gluerl/embedded"
LIMIT_S = 10.0


def hub_env(tmp_path: Path, offline: bool, **extra) -> dict:
    """Environment of a step: the hub at a closed local port, a private cache, online or offline."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1", **extra)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_script(script: str, args: list[str], env: dict, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - t0


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line the user reads: exit status 1, no traceback, the last stderr line."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    return last


def download(tmp_path: Path, env: dict, task: str = "sst2", split: str = "validation"):
    out = tmp_path / "out" / f"{task}-{split}.jsonl"
    proc, took = run_script("download_dataset.py", ["--config-json", json.dumps({"data": {"source": "hub"}}),
                                                    "--task", task, "--split", split, "--output", str(out)],
                            env, tmp_path)
    return proc, took, out


def prepare(tmp_path: Path, env: dict, repo_id: str = "some-org/some-model"):
    cfg = {"models": {"mine": {"hub": repo_id}}}
    out = tmp_path / "models" / "mine"
    proc, took = run_script("prepare_model.py", ["--config-json", json.dumps(cfg), "--model", "mine",
                                                 "--output", str(out)], env, tmp_path)
    return proc, took, out


def test_unreachable_hub_data_is_one_line_within_seconds(tmp_path):
    env = hub_env(tmp_path, offline=False)
    proc, took, out = download(tmp_path, env)
    line = error_line(proc)
    assert took < LIMIT_S, f"took {took:.1f} s"
    assert line.startswith(f"error: data.source: cannot reach the Hugging Face hub at {env['HF_ENDPOINT']} "
                           "for dataset nyu-mll/glue ("), line
    for remedy in ("data.source: local with data.local_dir", "config/offline.yaml", "HF_HUB_OFFLINE=1",
                   "data.source: embedded for the demo tasks (cola, sst2)"):
        assert remedy in line, remedy
    assert "cache has a copy" not in line and not out.exists()
    assert "Retrying" not in proc.stderr


def test_unreachable_hub_model_is_one_line_within_seconds(tmp_path):
    env = hub_env(tmp_path, offline=False)
    proc, took, out = prepare(tmp_path, env)
    line = error_line(proc)
    assert took < LIMIT_S, f"took {took:.1f} s"
    assert line.startswith(f"error: models.mine.hub: cannot reach the Hugging Face hub at {env['HF_ENDPOINT']} "
                           "for model some-org/some-model ("), line
    for remedy in ("models.mine.path", "HF_HUB_OFFLINE=1", "models.mine.gguf"):
        assert remedy in line, remedy
    assert not out.exists()


def test_offline_without_the_cache_says_so(tmp_path):
    env = hub_env(tmp_path, offline=True)
    line = error_line(download(tmp_path, env)[0])
    assert line.startswith("error: data.source: HF_HUB_OFFLINE is set and the Hugging Face cache ("), line
    assert "has no dataset nyu-mll/glue" in line and "data.source: embedded" in line
    line = error_line(prepare(tmp_path, env)[0])
    assert line.startswith("error: models.mine.hub: HF_HUB_OFFLINE is set and the Hugging Face cache ("), line
    assert "hf download some-org/some-model" in line and "models.mine.path" in line


def fill_dataset_cache(cache: Path, config_name: str, files: dict[str, Path], repo_id: str = "nyu-mll/glue") -> None:
    """What ``load_dataset(repo_id, config_name)`` leaves in HF_DATASETS_CACHE (prepared from local files)."""
    code = f"""
import glob, os
from datasets.packaged_modules.json.json import Json
b = Json(cache_dir={str(cache)!r}, dataset_name={repo_id.split('/')[1]!r}, config_name={config_name!r},
         data_files={ {k: str(v) for k, v in files.items()}!r}, hash="0" * 16)
b.download_and_prepare()
dest = os.path.join({str(cache)!r}, {repo_id.replace('/', '___')!r})
os.makedirs(dest, exist_ok=True)
os.rename(glob.glob(os.path.join({str(cache)!r}, {repo_id.split('/')[1]!r}, {config_name!r} + "*"))[0],
          os.path.join(dest, {config_name!r}))
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_offline_with_a_filled_dataset_cache_works(tmp_path):
    cache = tmp_path / "hf-home" / "datasets"
    fill_dataset_cache(cache, "sst2", {"validation": EMBEDDED / "sst2/validation.jsonl"})
    proc, took, out = download(tmp_path, hub_env(tmp_path, offline=True))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_jsonl(out) == read_jsonl(EMBEDDED / "sst2/validation.jsonl")
    # the same cache while the hub is unreachable and HF_HUB_OFFLINE unset: one line that points at it
    line = error_line(download(tmp_path, hub_env(tmp_path, offline=False))[0])
    assert "the Hugging Face cache has a copy: set HF_HUB_OFFLINE=1 to use it" in line


def test_offline_with_a_filled_model_cache_works(tmp_path, tiny_model):
    """A model in the hub cache layout (models--org--name/snapshots/SHA, refs/main) prepares offline."""
    repo = tmp_path / "hf-home" / "hub" / "models--some-org--some-model"
    sha = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model, repo / "snapshots" / sha, ignore=shutil.ignore_patterns("gluerl_model.json"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    proc, took, out = prepare(tmp_path, hub_env(tmp_path, offline=True))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "gluerl_model.json").read_text())
    assert info["source"] == {"hub": "some-org/some-model", "revision": None}
    assert glob.glob(str(out / "*.safetensors"))
    line = error_line(prepare(tmp_path, hub_env(tmp_path, offline=False))[0])
    assert "the Hugging Face cache has a copy: set HF_HUB_OFFLINE=1 to use it" in line


def test_embedded_source_needs_no_hub(tmp_path):
    env = hub_env(tmp_path, offline=False)
    out = tmp_path / "sst2.jsonl"
    proc, took = run_script("download_dataset.py", ["--config-json", json.dumps({"data": {"source": "embedded"}}),
                                                    "--task", "sst2", "--split", "validation", "--output", str(out)],
                            env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_jsonl(out)) == 300


def test_snakemake_shows_the_one_line(tmp_path):
    """What the user reads at the terminal: the failed job's log (show-failed-logs) holds the line once."""
    from test_workflow import copy_workflow

    work = copy_workflow(tmp_path / "work")
    env = hub_env(tmp_path, offline=False)
    overlay = tmp_path / "hub.yaml"  # the demo reads the embedded sample; a user's experiment the hub
    overlay.write_text("data: {source: hub}\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config/config.yaml",
                           str(overlay), "--", "data/raw/sst2/validation.jsonl"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("error: data.source: cannot reach the Hugging Face hub") == 1, out[-4000:]
    assert "Traceback" not in out and "Retrying" not in out, out[-4000:]
    assert took < 60, f"snakemake took {took:.0f} s"
