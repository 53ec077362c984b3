"""benchmarks/rl_time_to_accuracy.py and benchmarks/eval_vs_vllm.py, end to end on a tiny model.

The time-to-accuracy script runs both sides for real (our PPO and TRL's GRPO from one adapter) on a
tiny Llama. The vLLM script runs its parent against a stand-in ``vllm`` module (a fake ``LLM``
that answers every prompt with one fixed completion), which checks the plumbing (prompt file,
subprocess, completions back, parsing, table) without vLLM; with vLLM the same command measures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from gluerl import testing
from gluerl.io import write_jsonl
from training_helpers import subprocess_env, write_prompts

REPO = Path(__file__).resolve().parents[1]


def load(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_time_to_threshold_and_accuracy_at_equal_time():
    bench = load("rl_time_to_accuracy")
    points = [(0, 0.0, 0.60), (64, 100.0, 0.62), (128, 200.0, 0.66), (192, 300.0, 0.70)]
    assert bench.time_to(points, 0.65) == (200.0, 128)
    assert bench.time_to(points, 0.60) == (0.0, 0)
    assert bench.time_to(points, 0.71) is None
    assert bench.accuracy_at(points, 250.0) == 0.66 and bench.accuracy_at(points, 99.0) == 0.60


def test_train_seed_defaults_to_the_seed():
    bench = load("rl_time_to_accuracy")
    args = bench.build_parser().parse_args(["--model-dir", "m", "--sft-adapter", "a", "--config", "c",
                                            "--train-prompts", "t", "--heldout", "h", "--seed", "3"])
    assert bench.train_seed(args) == 3
    args.train_seed = 7
    assert bench.train_seed(args) == 7


def test_rl_time_to_accuracy_runs_both_sides(tiny_model, tmp_path):
    from test_ppo_fidelity import perturbed_adapter

    adapter = perturbed_adapter(tiny_model, tmp_path / "sft")
    prompts = write_prompts(tmp_path / "train.jsonl", "sst2", 16)
    heldout = write_jsonl(tmp_path / "validation.jsonl", testing.generate_rows("sst2", 12, seed=3))
    exclude = write_jsonl(tmp_path / "scored.jsonl", [{"idx": 0}, {"idx": 1}])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "tasks": ["sst2"], "models": {"tiny": {"hub": "unused"}},
        "ppo": {"batch_size": 4, "mini_batch_size": 2, "min_new_tokens": 6, "max_new_tokens": 6, "adaptive_kl": False},
        "grpo": {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 6,
                 "logging_steps": 1, "beta": 0.0},
        "evaluation": {"batch_size": 4, "max_new_tokens": 6},
    }))
    out = tmp_path / "points.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "rl_time_to_accuracy.py"),
                           "--model-dir", str(tiny_model), "--sft-adapter", str(adapter), "--config", str(cfg),
                           "--train-prompts", str(prompts), "--heldout", str(heldout), "--exclude", str(exclude),
                           "--heldout-n", "8", "--episodes", "8", "--eval-every", "4", "--json", str(out),
                           "--train-seed", "5"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for side in ("ours", "grpo"):
        points = res[side]["points"]
        assert [p[0] for p in points] == [0, 4, 8], points
        assert points[1][1] > 0 and points[2][1] > points[1][1]  # training seconds grow
        assert res[side]["heldout"] == 8
    # both start from the same adapter on the same held-out rows: the same first accuracy
    assert res["ours"]["points"][0][2] == res["grpo"]["points"][0][2]
    assert "| ours (sft_ppo) | 8 |" in proc.stdout and "| TRL GRPO | 8 |" in proc.stdout
    assert "ratio" in proc.stdout and "accuracy at" in proc.stdout
    # --kl equal (the default): ours' KL coefficient is GRPO's beta (0 here): no reference forward, no KL
    assert "KL: equal" in proc.stdout and "training seed 5" in proc.stdout
    assert res["ours"]["train_seed"] == res["grpo"]["train_seed"] == 5  # both sides trained with --train-seed
    assert [s["episodes"] for s in res["ours"]["steps"]] == [4, 4]
    assert [(s["kl_coef"], s["kl"]) for s in res["ours"]["steps"]] == [(0.0, None), (0.0, None)]


def test_eval_vs_vllm_with_a_stand_in_engine(tiny_model, tmp_path):
    fake = tmp_path / "fake" / "vllm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "class SamplingParams:\n"
        "    def __init__(self, **kw):\n        self.kw = kw\n"
        "class _Out:\n"
        "    def __init__(self, text):\n        self.text = text\n"
        "class _Req:\n"
        "    def __init__(self, text):\n        self.outputs = [_Out(text)]\n"
        "class LLM:\n"
        "    def __init__(self, model, dtype, **kw):\n        self.dtype = dtype\n"
        "    def generate(self, prompts, params, use_tqdm=False):\n"
        "        assert params.kw['stop'] == ['</Judgement>'] and params.kw['temperature'] == 0.0\n"
        "        assert all(p['prompt_token_ids'] and all(isinstance(i, int) for i in p['prompt_token_ids'])\n"
        "                   for p in prompts)\n"
        "        return [_Req('positive</Judgement>') for _ in prompts]\n")
    wrapper = tmp_path / "fake-python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={fake.parent} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    data = tmp_path / "glue"
    write_jsonl(data / "sst2" / "validation.jsonl", testing.generate_rows("sst2", 10, seed=1))
    write_jsonl(data / "sst2" / "train.jsonl", testing.generate_rows("sst2", 20, seed=2))
    out = tmp_path / "vllm.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_vs_vllm.py"), "--vllm-python", str(wrapper),
                           "--model-dir", str(tiny_model), "--data-dir", str(data), "--limit", "sst2=6",
                           "--shots", "0", "2", "--threads", "1", "--vllm-dtype", "float32", "--json", str(out)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    fake_rows = [r for r in rows if r["side"] == "vllm float32"]
    assert [r["shots"] for r in fake_rows] == [0, 2]
    for r in fake_rows:
        assert r["n"] == 6 and r["completions"] == ["positive</Judgement>"] * 6
        assert r["invalid_rate"] == 0.0
    assert "| sst2 | 0-shot | 6 of 10 | vllm float32 |" in proc.stdout


def test_eval_vs_vllm_without_its_python_says_so(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_vs_vllm.py"),
                           "--vllm-python", str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode != 0 and "--vllm-python" in proc.stderr and proc.stderr.count("\n") == 1
