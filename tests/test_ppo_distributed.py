"""Two-process PPO on CPU (torchrun, gloo): ranks stay identical, and a rerun resumes exactly.

One module fixture runs the CLI three times with ``torchrun --nproc_per_node 2`` on a multi-task
(sst2 + stsb) tiny setup: 2 steps with a checkpoint after each; the same command asking for 4
steps (resumes from step 2); and 4 steps from scratch in another folder. The hidden
``--dump-rank-state`` flag makes every rank save its trainable weights at the end.
"""

import json
import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gluerl import testing
from gluerl.io import write_jsonl
from gluerl.prompts import format_split
from gluerl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_ppo.py"
PPO = {"batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 2, "gradient_accumulation_steps": 2, "save_every": 1,
       "min_new_tokens": 6, "max_new_tokens": 8, "learning_rate": 1e-3}


def _env():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_CONFIG_FILE", None)
    return env


def _launch(args, distributed=True, timeout=240):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = (torchrun if distributed else [sys.executable]) + [str(SCRIPT)] + [str(a) for a in args]
    # run outside the repository: the CLI's MLflow run goes to <cwd>/results/mlflow.db
    return subprocess.run(cmd, cwd=tempfile.gettempdir(), env=_env(), capture_output=True, text=True, timeout=timeout)


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_dist")
    model = testing.make_tiny_model(root / "model", testing.fixture_texts())
    prompts = []
    for task in ("sst2", "stsb"):
        path = root / f"{task}.jsonl"
        write_jsonl(path, format_split(testing.generate_rows(task, 16), get_task(task)))
        prompts += ["--prompts", f"{task}={path}"]

    def args(out, steps, dump=None):
        cfg = {"models": {"tiny": {"path": str(model)}}, "ppo": dict(PPO, steps=steps)}
        a = ["--config-json", json.dumps(cfg), "--model-dir", model, *prompts, "--output-dir", out, "--seed", 3]
        return a + (["--dump-rank-state", dump] if dump else [])

    runs = {"root": root, "model": model, "args": args}
    runs["first"] = _ok(_launch(args(root / "out", 2)))
    runs["first_summary"] = json.loads((root / "out" / "train_summary.json").read_text())
    runs["first_checkpoints"] = sorted(p.name for p in (root / "out" / "checkpoints").iterdir())
    runs["resumed"] = _ok(_launch(args(root / "out", 4, root / "dump_resumed")))
    runs["fresh"] = _ok(_launch(args(root / "fresh", 4, root / "dump_fresh")))
    return runs


def _weights(folder):
    return load_file(str(folder / "rank0.safetensors")), load_file(str(folder / "rank1.safetensors"))


def test_two_ranks_hold_identical_weights(setup):
    r0, r1 = _weights(setup["root"] / "dump_fresh")
    assert r0.keys() == r1.keys() and any("value_head" in k for k in r0) and any("lora_B" in k for k in r0)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # the weights did move (LoRA B starts at zero), so equality is not trivial
    assert any(r0[k].abs().max() > 0 for k in r0 if "lora_B" in k)


def test_both_processes_contribute_episodes(setup):
    out = setup["root"] / "fresh"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(m["episodes"] == 2 * PPO["batch_size"] for m in metrics)
    assert "2 process(es)" in setup["fresh"].stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == 4
    for name in ("adapter_config.json", "adapter_model.safetensors", "value_head.safetensors"):
        assert (out / name).is_file(), name


def test_first_run_checkpoints(setup):
    assert setup["first_summary"]["steps"] == 2
    assert setup["first_summary"]["resumed_from_step"] is None
    assert setup["first_checkpoints"] == ["step-1", "step-2"]


def test_rerun_resumes_from_step_2_and_reaches_step_4(setup):
    out = setup["root"] / "out"
    assert "resuming from checkpoint" in setup["resumed"].stderr and "at step 2" in setup["resumed"].stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 4 and summary["steps_this_run"] == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3", "step-4"]  # the last two
    state = json.loads((out / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["cursor"] == 4 * 2 * PPO["batch_size"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_resumed_run_equals_uninterrupted_run(setup):
    resumed, fresh = _weights(setup["root"] / "dump_resumed"), _weights(setup["root"] / "dump_fresh")
    for rank in (0, 1):
        for k in fresh[rank]:
            assert torch.equal(resumed[rank][k], fresh[rank][k]), (rank, k)
    def kl(run):
        return [json.loads(x)["kl"] for x in (setup["root"] / run / "metrics.jsonl").read_text().splitlines()]

    assert kl("out") == kl("fresh")


def test_refuses_checkpoint_of_another_model(setup):
    root = setup["root"]
    other = testing.make_tiny_model(root / "other", testing.fixture_texts(), hidden=48)
    out = root / "refuse"
    shutil.copytree(root / "out", out)
    args = setup["args"](out, 5)
    args[args.index("--model-dir") + 1] = other
    proc = _launch(args, distributed=False)  # plain python: a single process
    assert proc.returncode == 1
    assert "another model" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "checkpoints" / "step-4" / "trainer_state.json").is_file()
