"""PPO as the paper ran it (issue 13): reference policy, value head start, sampling settings, dropout,
optimizer, gradient clipping and a warning when the policy collapses onto one answer.

Every check runs a few PPO steps on the session's tiny Llama (``conftest.tiny_model``) with generated
SST-2 prompts. ``perturbed_adapter`` saves a LoRA adapter moved away from zero (an SFT adapter
stand-in), so that the starting policy differs from the base model and LoRA dropout changes outputs.
"""

import json
import logging
import math

import pytest
import torch

from gluerl import testing
from gluerl.config import load_config
from gluerl.io import write_jsonl
from gluerl.models import load_tokenizer
from gluerl.prompts import format_split
from gluerl.tasks import get_task
from gluerl.training import load_train_records
from training_helpers import one_thread  # noqa: F401  (autouse: these tests run on one thread)

PPO = {"steps": 1, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "min_new_tokens": 6,
       "max_new_tokens": 6, "save_every": 1000, "adaptive_kl": False}


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_fidelity")
    prompts = root / "sst2.jsonl"
    write_jsonl(prompts, format_split(testing.generate_rows("sst2", 8), get_task("sst2")))
    tok = load_tokenizer(tiny_model)
    return {"root": root, "model": tiny_model, "tok": tok, "records": load_train_records([("sst2", prompts)], tok)}


def perturbed_adapter(model_dir, out, seed=0):
    """A LoRA adapter (the config's lora section) whose A and B are random: policy != base model."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from gluerl.training import lora_config

    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model_dir)), lora_config(load_config(None)["lora"]))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.3 if "lora_B" in name else 0.1)
    peft.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def adapter(setup):
    return perturbed_adapter(setup["model"], setup["root"] / "sft_adapter")


def trainer(setup, out, model=None, init_adapter=None, callbacks=(), lora=None, **ppo):
    from gluerl.ppo import PPOTrainer

    cfg = load_config(None, {"ppo": dict(PPO, **ppo), "lora": lora or {}})
    return PPOTrainer(cfg, model or setup["model"], setup["records"], out, seed=3, init_adapter=init_adapter,
                      callbacks=callbacks, tokenizer=setup["tok"])


# --- 1. the reference policy is the starting policy ----------------------------------------------

def test_sft_ppo_reference_is_the_starting_adapter(setup, adapter, tmp_path):
    seen = []
    t = trainer(setup, tmp_path / "initial", init_adapter=adapter, callbacks=[seen.append], learning_rate=0.0)
    t.train()
    print("first-step KL, reference initial:", seen[0]["kl"])
    assert abs(seen[0]["kl"]) < 1e-4, seen[0]["kl"]  # policy == reference at the first step
    # only the trained adapter is saved: one adapter folder that evaluation loads on the base model
    assert (tmp_path / "initial" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "initial" / "reference").exists()
    assert not any((tmp_path / "initial" / "checkpoints").glob("*/adapter/reference"))

    seen_base = []
    trainer(setup, tmp_path / "base", init_adapter=adapter, callbacks=[seen_base.append], learning_rate=0.0,
            reference="base").train()
    print("first-step KL, reference base:", seen_base[0]["kl"])
    assert abs(seen_base[0]["kl"]) > 0.05, seen_base[0]["kl"]  # reference: base is the model without the adapter


def test_reference_adapter_stays_frozen_and_trainable_adapter_trains(setup, adapter, tmp_path):
    t = trainer(setup, tmp_path / "run", init_adapter=adapter, learning_rate=1e-2, steps=2)
    before = {n: p.detach().clone() for n, p in t.model.named_parameters() if "lora_" in n}
    t.train()
    after = dict(t.model.named_parameters())
    ref = [n for n in before if ".reference." in n]
    trained = [n for n in before if ".default." in n]
    assert ref and trained
    assert all(not after[n].requires_grad and torch.equal(after[n], before[n]) for n in ref)
    assert all(after[n].requires_grad for n in trained)
    assert any(not torch.equal(after[n], before[n]) for n in trained if "lora_B" in n)
    # a rerun resumes from the last checkpoint: the trained adapter as it was, the reference the starting one
    resumed = trainer(setup, tmp_path / "run", init_adapter=adapter, learning_rate=1e-2, steps=2)
    assert resumed.step == 2
    params = dict(resumed.model.named_parameters())
    assert all(torch.equal(params[n], after[n]) for n in before)


# --- 2. the value head starts at zero ------------------------------------------------------------

def test_value_head_starts_at_zero(setup, tmp_path):
    t = trainer(setup, tmp_path / "zero")
    head = t.model.value_head
    assert torch.count_nonzero(head.weight) == 0 and torch.count_nonzero(head.bias) == 0
    roll = t.rollout(setup["records"][:4])
    assert torch.count_nonzero(roll.values) == 0

    normal = trainer(setup, tmp_path / "normal", value_head_init="normal").model.value_head
    hidden = normal.weight.shape[1]
    assert normal.weight.std().item() == pytest.approx(1 / math.sqrt(hidden + 1), rel=0.5)


# --- 3. rollouts sample from the distribution whose log-probs PPO uses ----------------------------

def test_rollout_ignores_the_models_generation_config(setup, tmp_path, monkeypatch):
    import shutil

    from transformers import GenerationConfig

    from gluerl.ppo import logprobs_from_logits

    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    gen = GenerationConfig.from_pretrained(str(model))
    gen.update(repetition_penalty=1.1, temperature=0.7, top_k=20, do_sample=True)
    gen.save_pretrained(str(model))
    t = trainer(setup, tmp_path / "run", model=model, temperature=1.0)

    scores = []
    real = t.model.policy.generate

    def spy(**kwargs):  # the scores generate sampled from (after its logits processors)
        out = real(**kwargs, output_scores=True)
        scores.append(torch.stack(out.scores, 1))
        return out

    monkeypatch.setattr(t.model.policy, "generate", spy)
    roll = t.rollout(setup["records"][:4])
    mask, R = roll.mask > 0, roll.response.shape[1]
    sampled = logprobs_from_logits(scores[0], roll.response)
    torch.testing.assert_close(roll.logprobs[mask], sampled[mask], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # and they equal a teacher-forced pass over the finished sequences
        t.model.eval()
        logits, _ = t.model(roll.input_ids, roll.attention_mask, R)
    torch.testing.assert_close(roll.logprobs[mask], logprobs_from_logits(logits, roll.response)[mask],
                               atol=1e-4, rtol=1e-4)


# --- 4. the first ratio is 1 with LoRA dropout on ------------------------------------------------

def test_first_minibatch_ratio_is_one_with_lora_dropout(setup, adapter, tmp_path, monkeypatch):
    import gluerl.ppo.trainer as ppo  # where the trainer looks the names up

    calls = []
    real = ppo.policy_loss

    def spy(logprobs, old_logprobs, advantages, mask, cliprange):
        calls.append(((logprobs - old_logprobs) * mask).detach().abs().max().item())
        return real(logprobs, old_logprobs, advantages, mask, cliprange)

    monkeypatch.setattr(ppo, "policy_loss", spy)
    t = trainer(setup, tmp_path / "run", init_adapter=adapter, lora={"dropout": 0.05})
    assert t.model.policy.peft_config["default"].lora_dropout == 0.05
    t.train_step()
    assert calls[0] < 1e-5, calls  # log ratio 0 (float noise): before any update the policy is the rollout's


# --- 7. optimizer and clipping follow the config --------------------------------------------------

def test_optimizer_follows_config(setup, tmp_path):
    from transformers.optimization import Adafactor

    assert isinstance(trainer(setup, tmp_path / "adamw").opt.optimizer, torch.optim.AdamW)
    opt = trainer(setup, tmp_path / "adafactor", optimizer="adafactor", learning_rate=3e-5).opt.optimizer
    assert isinstance(opt, Adafactor)
    group = opt.param_groups[0]
    assert group["lr"] == 3e-5 and group["scale_parameter"] is False and group["relative_step"] is False
    assert group["warmup_init"] is False


@pytest.mark.parametrize("max_grad_norm", [None, 1e-4])
def test_max_grad_norm_null_does_not_clip(setup, adapter, tmp_path, max_grad_norm):
    seen, norms = [], []
    t = trainer(setup, tmp_path / "run", init_adapter=adapter, callbacks=[seen.append], max_grad_norm=max_grad_norm,
                learning_rate=1e-3, mini_batch_size=4)
    real = t.opt.step

    def step(*args, **kwargs):  # the gradient norm the optimizer is handed
        grads = [p.grad for p in t.net.parameters() if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return real(*args, **kwargs)

    t.opt.step = step
    t.train()
    assert len(norms) == 1 and seen[0]["grad_norm"] > 1e-2  # grad_norm: the norm before any clipping
    if max_grad_norm is None:
        assert norms[0] == pytest.approx(seen[0]["grad_norm"], rel=1e-5)
    else:
        assert norms[0] == pytest.approx(max_grad_norm, rel=1e-3)


def test_paper_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "config" / "paper").glob("*.yaml")):
        cfg = load_config(path, check=True)
        assert cfg["ppo"]["optimizer"] == "adafactor" and cfg["ppo"]["max_grad_norm"] is None, path
        assert cfg["ppo"]["gradient_accumulation_steps"] == 2, path
        assert cfg["lora"]["target_modules"] == (["Wqkv"] if "mpt" in path.name else ["q_proj", "v_proj"]), path


# --- 10. a policy that collapses onto one answer is reported ---------------------------------------

def test_collapsed_answer():
    from gluerl.ppo import collapsed_answer

    # 20 of 20 say "positive", gold 10/10: collapse
    assert collapsed_answer({"negative": 0, "positive": 20}, {"negative": 10, "positive": 10}, 20) == "positive"
    # 19 of 20 (95%) is not above 95%
    assert collapsed_answer({"negative": 1, "positive": 19}, {"negative": 10, "positive": 10}, 20) is None
    # the gold labels agree (20 of 20 positive): answering positive everywhere is no collapse
    assert collapsed_answer({"negative": 0, "positive": 20}, {"negative": 0, "positive": 20}, 20) is None
    assert collapsed_answer({"negative": 0, "positive": 0}, {"negative": 0, "positive": 0}, 0) is None


def test_prediction_shares_are_logged_and_collapse_warned(setup, tmp_path, monkeypatch, caplog):
    import gluerl.ppo.trainer as ppo  # where the trainer looks the names up

    t = trainer(setup, tmp_path / "run", steps=2, batch_size=8, mini_batch_size=4)
    words = get_task("sst2").labels
    monkeypatch.setattr(ppo, "parse_answer", lambda text, task: 1)  # every episode answers "positive"
    with caplog.at_level(logging.WARNING, logger="gluerl.ppo"):
        t.train()
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0][f"pred_frac/sst2/{words[1]}"] == 1.0
    assert metrics[0][f"pred_frac/sst2/{words[0]}"] == 0.0 and metrics[0]["pred_frac/sst2/invalid"] == 0.0
    warned = [r for r in caplog.records if "collapse" in r.getMessage()]
    assert len(warned) == 1 and "sst2" in warned[0].getMessage() and words[1] in warned[0].getMessage()
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["collapse"] == [{"task": "sst2", "label": words[1], "first_step": 1, "last_step": 2, "steps": 2,
                                    "share": 1.0}]


def test_no_collapse_warning_for_mixed_answers(setup, tmp_path, monkeypatch, caplog):
    import gluerl.ppo.trainer as ppo  # where the trainer looks the names up

    t = trainer(setup, tmp_path / "run", batch_size=8, mini_batch_size=4)
    answers = iter([0, 1] * 10)
    monkeypatch.setattr(ppo, "parse_answer", lambda text, task: next(answers))
    with caplog.at_level(logging.WARNING, logger="gluerl.ppo"):
        t.train()
    assert not [r for r in caplog.records if "collapse" in r.getMessage()]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["collapse"] == [] and summary["final_metrics"]["pred_frac/sst2/positive"] == 0.5


# --- a KL coefficient of 0 needs no reference forward --------------------------------------------

@pytest.mark.parametrize("adaptive", [False, True])
def test_zero_kl_coefficient_skips_the_reference_forward_and_trains_the_same(setup, adapter, tmp_path, monkeypatch,
                                                                             adaptive):
    """At ``kl_coef: 0`` (which neither controller leaves) the reference's log-probs weigh nothing in the
    rewards: the rollout does not compute them, and the update is the one with them computed."""
    from gluerl.ppo import PPOTrainer

    calls = []
    real = None

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    runs = {}
    for name, forced in (("skipped", False), ("forced", True)):
        seen = []
        t = trainer(setup, tmp_path / name, init_adapter=adapter, callbacks=[seen.append], kl_coef=0.0,
                    adaptive_kl=adaptive, learning_rate=1e-2, steps=2)
        real = type(t.model).reference_logits
        monkeypatch.setattr(type(t.model), "reference_logits", counted)
        if forced:  # the reference forward runs as at any other coefficient
            monkeypatch.setattr(PPOTrainer, "uses_reference", property(lambda self: True), raising=False)
        calls.clear()
        t.train()
        runs[name] = (len(calls), seen, {n: p.detach().clone() for n, p in t.model.named_parameters()
                                         if p.requires_grad})
        monkeypatch.undo()
    n_skipped, seen_skipped, weights_skipped = runs["skipped"]
    n_forced, seen_forced, weights_forced = runs["forced"]
    assert n_skipped == 0 and n_forced > 0
    assert [m["kl"] for m in seen_skipped] == [None, None]  # not computed, not a made-up 0
    assert all(m["kl"] is not None for m in seen_forced)
    assert [m["kl_coef"] for m in seen_skipped] == [0.0, 0.0]
    assert weights_skipped.keys() == weights_forced.keys()
    assert all(torch.equal(weights_skipped[n], weights_forced[n]) for n in weights_skipped)


# --- learning-rate warmup --------------------------------------------------------------------------

def test_warmup_steps_raise_the_learning_rate_linearly_and_resume_where_they_were(setup, adapter, tmp_path):
    """``ppo.warmup_steps: 3``: updates 1-4 step the optimizer at 1/4, 2/4, 3/4 and 4/4 of the rate; a
    rerun that resumes after update 2 goes on at 3/4."""
    lr = 1e-2

    def run(out, steps):
        seen, used = [], []
        t = trainer(setup, out, init_adapter=adapter, callbacks=[seen.append], learning_rate=lr, warmup_steps=3,
                    steps=steps, save_every=2)
        real = t.opt.step

        def step(*args, **kwargs):  # the rate the optimizer is handed
            used.append(t.opt.param_groups[0]["lr"])
            return real(*args, **kwargs)

        t.opt.step = step
        t.train()
        return [m["learning_rate"] for m in seen], used

    def twice(rates):  # minibatches of 2 of 4 rollouts: two optimizer steps an update
        return [r for r in rates for _ in range(2)]

    logged, used = run(tmp_path / "run", 4)
    assert logged == pytest.approx([lr / 4, lr / 2, 3 * lr / 4, lr]) and used == pytest.approx(twice(logged))
    logged, used = run(tmp_path / "resumed", 2)
    logged, used = run(tmp_path / "resumed", 4)  # resumes at update 3
    assert logged == pytest.approx([3 * lr / 4, lr]) and used == pytest.approx(twice(logged))


# --- several rollouts a prompt, and their leave-one-out advantages --------------------------------

def test_group_advantage_rolls_each_prompt_out_k_times_and_leaves_the_value_head_alone(setup, adapter, tmp_path):
    """``rollouts_per_prompt: 2`` with ``advantage: group``: every update samples its batch of 4 as 2 prompts
    twice each, one after the other; the prompts go on through the stream (4 distinct ones in 2
    updates, a resumed run the same); the policy is trained, the value head is not (no value loss, so
    its metrics are None)."""
    from gluerl.ppo import PPOTrainer

    def run(out, steps, rolled):
        seen = []
        t = trainer(setup, out, init_adapter=adapter, callbacks=[seen.append], learning_rate=1e-2, steps=steps,
                    save_every=1, advantage="group", rollouts_per_prompt=2)
        start = {n: p.detach().clone() for n, p in t.model.named_parameters() if p.requires_grad}
        real = PPOTrainer.rollout

        def spy(self, records):
            rolled.append([r["prompt"] for r in records])
            return real(self, records)

        t.rollout = spy.__get__(t)
        t.train()
        moved = {n for n, p in t.model.named_parameters() if p.requires_grad and not torch.equal(p, start[n])}
        return seen, moved

    rolled = []
    seen, moved = run(tmp_path / "run", 2, rolled)
    assert len(rolled) == 2 and all(len(b) == 4 and b[0] == b[1] and b[2] == b[3] and b[0] != b[2] for b in rolled)
    assert len({p for b in rolled for p in b}) == 4  # the cursor moves by prompts, not rollouts
    assert moved and any("lora_" in n for n in moved)
    assert not any(n.startswith("value_head") for n in moved), moved
    assert all(m[k] is None for m in seen for k in ("value_loss", "value_clipfrac", "explained_variance"))
    assert all(m["policy_loss"] is not None and m["episodes"] == 4 for m in seen)
    resumed = []
    run(tmp_path / "resumed", 1, [])
    run(tmp_path / "resumed", 2, resumed)  # resumes after update 1: the second update's prompts
    assert resumed == rolled[1:]


def test_value_learning_rate_gives_the_value_head_its_own_rate_which_warmup_scales(setup, adapter, tmp_path):
    """``ppo.value_learning_rate``: the value head is a parameter group of its own at that rate (the
    adapter at ``learning_rate``), and a warmup scales both; unset, one group holds everything."""
    t = trainer(setup, tmp_path / "one", init_adapter=adapter)
    assert len(t.opt.param_groups) == 1
    lr, vlr = 1e-3, 1e-1
    t = trainer(setup, tmp_path / "two", init_adapter=adapter, learning_rate=lr, value_learning_rate=vlr,
                warmup_steps=1, steps=2, mini_batch_size=4)
    head = {id(p) for p in t.model.value_head.parameters()}
    groups = t.opt.param_groups
    assert len(groups) == 2 and {id(p) for p in groups[1]["params"]} == head
    assert not head & {id(p) for p in groups[0]["params"]} and any(p.requires_grad for p in groups[0]["params"])
    used, real = [], t.opt.step

    def step(*args, **kwargs):
        used.append([g["lr"] for g in t.opt.param_groups])
        return real(*args, **kwargs)

    t.opt.step = step
    start = t.model.value_head.weight.detach().clone()
    t.train()
    assert used == [pytest.approx([lr / 2, vlr / 2]), pytest.approx([lr, vlr])]
    assert not torch.equal(t.model.value_head.weight, start)
