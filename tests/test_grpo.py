"""GRPO with the rule reward (gluerl.grpo, scripts/train_grpo.py): reward, stop at the tag, learning, CLI.

The model is a tiny Llama made by ``gluerl.testing.make_tiny_model`` and briefly pretrained (full
weights, plain language modelling on the fixture texts), like a small base model: on the chat
prompts it writes some label word of some GLUE task now and then and junk otherwise, so most of its
first answers are invalid (-3). GRPO has to find out that the SST-2 words pay (-1 or +1).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from training_helpers import config, pretrained_tiny_model, subprocess_env, write_prompts
from training_helpers import one_thread  # noqa: F401  (autouse: these tests run on one thread)

ROOT = Path(__file__).resolve().parents[1]
LEARN_CFG = {"grpo": {"learning_rate": 5e-3, "max_steps": 60, "per_device_train_batch_size": 32, "num_generations": 4,
                      "max_completion_length": 16, "temperature": 1.0, "beta": 0.04, "logging_steps": 2,
                      "save_steps": 1000}}


def random_adapter(model_dir: Path, out: Path, seed: int = 3) -> Path:
    """A LoRA adapter (the config's ``lora``) with random non-zero weights, saved to ``out``."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from gluerl.training import lora_config

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora_config(config()["lora"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return pretrained_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def sst2_file(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "sst2" / "train.jsonl", "sst2", 64)


# ------------------------------------------------------------------------------------------------
def test_reward_function_gives_the_registry_rewards():
    from gluerl.grpo import make_reward_function
    from gluerl.rewards import RewardRule, reward
    from gluerl.tasks import get_task

    fn = make_reward_function(config()["ppo"]["reward"])
    completions = ["positive</Judgement>", "negative</Judgement>", "banana</Judgement>",
                   "positive or negative</Judgement>", "", "not_equivalent</Judgement>", "3.5</Judgement>", "n/a"]
    labels = [1, 1, 1, 0, 0, 0, 4.0, 2.0]
    tasks = ["sst2"] * 5 + ["mrpc", "stsb", "stsb"]
    logged = {}
    got = fn(completions=completions, label=labels, task=tasks, prompts=[""] * 8,
             log_metric=lambda k, v: logged.__setitem__(k, v))
    assert got == [1.0, -1.0, -3.0, -3.0, -3.0, 1.0, 2.0, -2.5]
    assert got == [reward(c, y, get_task(t), RewardRule()) for c, y, t in zip(completions, labels, tasks)]
    assert logged == {"rule/correct_rate": 2 / 6, "rule/invalid_rate": 3 / 6}
    # the rule comes from the config (ppo.reward), dict or RewardRule
    custom = make_reward_function({"correct": 2.0, "wrong": -0.5, "invalid": -7.0})
    assert custom(completions=completions[:3], label=labels[:3], task=tasks[:3]) == [2.0, -0.5, -7.0]
    # dataset labels arrive as floats (one column for every task)
    assert fn(completions=["negative</Judgement>"], label=[0.0], task=["sst2"]) == [1.0]


def test_cut_after_stop(model_dir):
    from gluerl.grpo import cut_after_stop
    from gluerl.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    ids = tok("positive</Judgement> and more text</Judgement>", add_special_tokens=False)["input_ids"]
    cut = cut_after_stop(ids, tok)
    assert tok.decode(cut) == "positive</Judgement>"
    plain = tok("negative and no tag", add_special_tokens=False)["input_ids"]
    assert cut_after_stop(plain, tok) == plain


def test_bad_group_size_is_a_config_error(tmp_path):
    from gluerl.errors import ConfigError
    from gluerl.grpo import grpo_args

    with pytest.raises(ConfigError, match="grpo"):
        grpo_args(config({"grpo": {"per_device_train_batch_size": 6, "num_generations": 4}}), tmp_path, device="cpu")


def test_generation_stops_at_the_tag_and_init_adapter(model_dir, sst2_file, tmp_path):
    import torch
    from safetensors.torch import load_file

    from gluerl.grpo import build_grpo_trainer
    from gluerl.parsing import CLOSE_TAG

    init = random_adapter(model_dir, tmp_path / "init")
    trainer, _, info = build_grpo_trainer(config(LEARN_CFG), model_dir, [("sst2", sst2_file)], tmp_path / "out",
                                          init_adapter=init)
    assert info["init_adapter"] == str(init) and info["trainable_parameters"] > 0
    # the policy starts from the given adapter; the frozen "ref" copy is the KL's reference
    saved = load_file(str(init / "adapter_model.safetensors"))
    params = dict(trainer.model.named_parameters())
    for key, value in saved.items():
        name = key.replace(".weight", ".default.weight")
        assert torch.equal(params[name].detach().cpu(), value), name
        assert torch.equal(params[name.replace(".default.", ".ref.")].detach().cpu(), value)
        assert params[name].requires_grad and not params[name.replace(".default.", ".ref.")].requires_grad
    # completions end at the first closing tag (and the generated rest is dropped)
    tok = trainer.processing_class
    prompts = [trainer.train_dataset[i]["prompt"] for i in range(8)] * 4
    trainer.model.eval()
    torch.manual_seed(0)
    completion_ids, _ = trainer._generate_single_turn(tok(prompts)["input_ids"], None, {}, 4)
    texts = [tok.decode(ids) for ids in completion_ids]
    with_tag = [t for t in texts if CLOSE_TAG in t]
    assert with_tag, f"no completion reached the tag: {texts}"
    # nothing after the tag but the rest of the token that completed it (e.g. '>.' is one token)
    assert all(t.count(CLOSE_TAG) == 1 and len(t.split(CLOSE_TAG)[1]) <= 2 for t in with_tag), with_tag
    assert all(len(ids) <= LEARN_CFG["grpo"]["max_completion_length"] for ids in completion_ids)


def test_grpo_learns_the_answer_format(model_dir, sst2_file, tmp_path):
    import torch

    from gluerl.grpo import train_grpo
    from gluerl.models import load_model

    out = tmp_path / "grpo"
    summary = train_grpo(config(LEARN_CFG), model_dir, [("sst2", sst2_file)], out, seed=1)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "ref").exists() and not (out / "checkpoints").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] + list(range(2, 61, 2))
    for key in ("reward", "reward_std", "loss", "kl", "completions/mean_length", "rule/invalid_rate"):
        assert all(key in r for r in rows), key
    rewards = [r["reward"] for r in rows]
    invalid = [r["rule/invalid_rate"] for r in rows]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-5:]) / 5
    print(f"GRPO rewards: {[round(x, 2) for x in rewards]}")
    print(f"GRPO invalid rate: {[round(x, 2) for x in invalid]}")
    assert last > first + 0.5, f"mean reward did not rise: {first:.2f} -> {last:.2f} ({rewards})"
    assert sum(invalid[-5:]) / 5 < sum(invalid[:3]) / 3 - 0.15
    assert summary["steps"] == 60 and summary["first_reward"] == rewards[0] and summary["final_reward"] == rewards[-1]
    assert json.loads((out / "train_summary.json").read_text()) == summary
    base = load_model(model_dir, device="cpu")
    tuned = load_model(model_dir, adapter=out, device="cpu")
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(base(x).logits, tuned(x).logits)


def test_cli_end_to_end_with_accelerate(model_dir, sst2_file, tmp_path):
    cola = write_prompts(tmp_path / "cola" / "train.jsonl", "cola", 16)
    init = random_adapter(model_dir, tmp_path / "init")
    out = tmp_path / "out"
    cfg = {"grpo": {**LEARN_CFG["grpo"], "max_steps": 2, "per_device_train_batch_size": 8, "logging_steps": 1}}
    launch = ([shutil.which("accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
               "--dynamo_backend", "no", "--mixed_precision", "no"] if shutil.which("accelerate") else [sys.executable])
    cmd = launch + [str(ROOT / "scripts" / "train_grpo.py"), "--config-json", json.dumps(cfg), "--model-dir", str(model_dir),
                    "--prompts", f"sst2={sst2_file}", "--prompts", f"cola={cola}", "--init-adapter", str(init),
                    "--output-dir", str(out), "--seed", "1"]
    res = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["tasks"] == ["cola", "sst2"] and summary["records"] == 80 and summary["steps"] == 2
    assert summary["init_adapter"] == str(init)
    assert not (out / "ref").exists(), "only the trained adapter is saved, not the frozen reference copy"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_cli_bad_input_exits_1(model_dir, tmp_path):
    missing = tmp_path / "nope.jsonl"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_grpo.py"), "--model-dir", str(model_dir), "--prompts", f"sst2={missing}",
           "--output-dir", str(tmp_path / "out")]
    res = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and str(missing) in res.stderr and "Traceback" not in res.stderr
