"""PPO learns: a random tiny model's mean rule reward rises clearly within a few updates.

The task is generated STS-B (``gluerl.testing.generate_rows``): the answer is read as the first
number in the completion and scored ``2.5 - |pred - gold|``, ``-2.5`` with no number. A random
model writes a number in about a third of its completions, so the reward starts near -2 and the
signal is dense enough to learn from in 15 updates of 24 episodes: seeds 1, 2 and 3 each end 1.7
to 2.4 above their start (the test asks for 1.0; the defaults of issue 13: zero value head, eval
mode in the updates). With ``learning_rate: 0`` the same check fails.

(Generated SST-2 also learns, from -3 to about -0.5 with seed 1, but only ~2% of random
completions name exactly one label word with word boundaries, so how fast it takes off depends
on the seed: too fragile for a short test.)

The model: ``gluerl.testing.make_tiny_model`` ties its output layer to the embedding and
initialises it with std 0.02, so its logits stay within about +-0.6 whatever LoRA does to the
(frozen-output) network, and its output distribution can never leave uniform. We build the same
tiny Llama with an untied output layer of std 0.15 (logits can reach about +-10).
"""

import json

import pytest
import torch

from gluerl import testing
from gluerl.config import load_config
from gluerl.errors import TrainingError
from gluerl.io import write_jsonl
from gluerl.models import load_tokenizer
from gluerl.prompts import format_split
from gluerl.tasks import get_task
from gluerl.training import load_train_records

PPO = {"steps": 15, "batch_size": 24, "mini_batch_size": 24, "ppo_epochs": 4, "min_new_tokens": 4,
       "max_new_tokens": 8, "adaptive_kl": False, "kl_coef": 0.01, "save_every": 1000, "learning_rate": 1e-2}


def make_model(path, hidden=64, out_std=0.15, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = testing.make_tokenizer(testing.fixture_texts())
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, out_std)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "gluerl_model.json").write_text(json.dumps({"name": "tiny-untied"}) + "\n")
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and on a shared 2-core machine
    OpenMP threads waiting on another busy process made steps 10-40x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_learn")
    model = make_model(root / "model")
    prompts = root / "stsb.jsonl"
    write_jsonl(prompts, format_split(testing.generate_rows("stsb", 64), get_task("stsb")))
    tok = load_tokenizer(model)
    records = load_train_records([("stsb", prompts)], tok)
    return {"model": model, "records": records, "tok": tok}


def train(setup, out, seed=1, init_adapter=None, callbacks=(), **ppo):
    from gluerl.ppo import PPOTrainer

    cfg = load_config(None, {"models": {"tiny": {"path": str(setup["model"])}}, "ppo": dict(PPO, **ppo)})
    trainer = PPOTrainer(cfg, setup["model"], setup["records"], out, seed=seed, init_adapter=init_adapter,
                         callbacks=callbacks, tokenizer=setup["tok"])
    return trainer, trainer.train()


def improvement(rewards):
    """Mean reward of the last 3 updates minus that of the first 3."""
    return sum(rewards[-3:]) / 3 - sum(rewards[:3]) / 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ppo_raises_mean_reward(setup, tmp_path, seed):
    seen = []
    _, summary = train(setup, tmp_path / "run", seed=seed, callbacks=[seen.append])
    rewards = [m["reward_mean"] for m in seen]
    print(f"PPO learning curve, seed {seed} (reward_mean per step):", " ".join(f"{r:.2f}" for r in rewards))
    assert len(rewards) == PPO["steps"]
    assert sum(rewards[:3]) / 3 < -1.0, "a random model should start mostly without a usable number"
    assert improvement(rewards) > 1.0, rewards
    assert sum(rewards[-3:]) / 3 > -1.0, rewards
    # the callback saw exactly what metrics.jsonl holds
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["reward_mean"] for m in lines] == rewards
    assert summary["steps"] == PPO["steps"] and summary["final_metrics"]["step"] == PPO["steps"]
    for key in ("reward_mean", "invalid_rate", "kl", "kl_coef", "entropy", "policy_loss", "value_loss", "clipfrac",
                "value_clipfrac", "explained_variance", "tokens_per_second", "seconds_generation",
                "seconds_scoring", "seconds_optimisation", "accuracy"):
        assert key in lines[-1], key
    assert sum(m["invalid_rate"] for m in lines[-3:]) < sum(m["invalid_rate"] for m in lines[:3])
    for name in ("adapter_config.json", "adapter_model.safetensors", "value_head.safetensors", "train_summary.json"):
        assert (tmp_path / "run" / name).is_file(), name


def test_init_adapter_is_loaded_trainable(setup, tmp_path):
    from safetensors.torch import load_file

    train(setup, tmp_path / "first", steps=3, batch_size=8, mini_batch_size=8)
    saved = load_file(str(tmp_path / "first" / "adapter_model.safetensors"))
    seen = []
    trainer, _ = train(setup, tmp_path / "warm", init_adapter=tmp_path / "first", callbacks=[seen.append],
                       steps=1, batch_size=8, mini_batch_size=8, learning_rate=0.0, reference="base")
    loaded = {n: p for n, p in trainer.model.policy.named_parameters() if p.requires_grad}
    assert len(loaded) == len(saved)
    for name, tensor in saved.items():  # saved names lack the adapter name ("default")
        key = name.replace(".weight", ".default.weight")
        assert torch.equal(loaded[key].detach(), tensor), name
    assert seen[0]["kl"] > 0.05  # the warm policy differs from the reference (reference: base) from step 1


def test_same_check_fails_without_learning(setup, tmp_path):
    seen = []
    train(setup, tmp_path / "frozen", callbacks=[seen.append], learning_rate=0.0, steps=6)
    rewards = [m["reward_mean"] for m in seen]
    assert improvement(rewards) < 1.0, rewards
    assert max(abs(m["kl"]) for m in seen) < 1e-4  # the policy never moved from the reference


def test_non_finite_reward_stops_training_and_keeps_last_checkpoint(setup, tmp_path, monkeypatch):
    import gluerl.ppo.trainer as ppo  # where the trainer looks score_prediction up

    calls = {"n": 0}
    real = ppo.score_prediction

    def flaky(pred, gold, task, rule):
        calls["n"] += 1
        return float("nan") if calls["n"] > 4 else real(pred, gold, task, rule)  # batch 4: step 2 goes bad

    monkeypatch.setattr(ppo, "score_prediction", flaky)
    with pytest.raises(TrainingError, match=r"non-finite reward at step 2.*last metrics.*\"step\": 1"):
        train(setup, tmp_path / "nan", steps=3, batch_size=4, mini_batch_size=4, save_every=1)
    assert (tmp_path / "nan" / "checkpoints" / "step-1" / "trainer_state.json").is_file()
    assert not (tmp_path / "nan" / "checkpoints" / "step-2").exists()
