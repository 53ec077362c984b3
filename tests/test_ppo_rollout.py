"""The rollout's shortcuts give the numbers of the plain computation.

``PPOTrainer.rollout`` takes the policy's log-probs and values from the sampling pass itself (the
logits each token was sampled from; the value head on the last hidden state of each ``generate``
step) instead of a second forward pass of the policy, and forwards sub-batches without their
all-padding columns. Here both are checked against a plain teacher-forced forward over the
finished, left-padded sequences, with a LoRA adapter moved away from zero so that the policy and
the reference (adapter off) differ.
"""

import dataclasses

import pytest
import torch

from gluerl import testing
from gluerl.config import load_config
from gluerl.io import write_jsonl
from gluerl.models import load_tokenizer
from gluerl.ppo import PPOTrainer, logprobs_from_logits, trim_left_padding
from gluerl.prompts import format_split
from gluerl.tasks import get_task
from gluerl.training import load_train_records


@pytest.fixture(scope="module")
def trainer(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_rollout")
    prompts = root / "sst2.jsonl"
    write_jsonl(prompts, format_split(testing.generate_rows("sst2", 8), get_task("sst2")))
    tok = load_tokenizer(tiny_model)
    records = load_train_records([("sst2", prompts)], tok)
    cfg = load_config(None, {"ppo": {"batch_size": 4, "mini_batch_size": 2, "min_new_tokens": 6,
                                     "max_new_tokens": 6, "temperature": 0.7, "steps": 1}})
    t = PPOTrainer(cfg, tiny_model, records, root / "out", seed=5, tokenizer=tok)
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero adapter and value head: policy != reference, values not all 0
        for name, p in t.model.named_parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.3 if "lora_B" in name else 0.1)
    return t


def test_rollout_logprobs_values_and_reference_match_a_plain_forward(trainer):
    records = trainer.records[:4]
    assert len({len(trainer.tok(r["prompt"])["input_ids"]) for r in records}) > 1, "want left padding"
    roll = trainer.rollout(records)
    model, T, R = trainer.model, trainer.ppo.temperature, roll.response.shape[1]
    mask = roll.mask > 0
    assert R == 6 and mask.sum() > 8
    with torch.no_grad():
        model.eval()
        logits, values = model(roll.input_ids, roll.attention_mask, R)
        logprobs = logprobs_from_logits(logits / T, roll.response)
        with model.policy.disable_adapter():
            ref_logits, _ = model(roll.input_ids, roll.attention_mask, R)
        ref_logprobs = logprobs_from_logits(ref_logits / T, roll.response)
    torch.testing.assert_close(roll.logprobs[mask], logprobs[mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(roll.values[mask], values[mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(roll.ref_logprobs[mask], ref_logprobs[mask], atol=1e-4, rtol=1e-4)
    # the check can tell the three apart
    assert (logprobs[mask] - ref_logprobs[mask]).abs().max() > 1e-2
    assert values[mask].std() > 1e-3


def test_trimming_left_padding_changes_no_output(trainer):
    model = trainer.model
    ids = trainer.tok([r["prompt"] for r in trainer.records[:3]], add_special_tokens=False, padding=True,
                      return_tensors="pt")
    extra = 5  # five more padding columns in front of every row
    pad = torch.full((3, extra), trainer.tok.pad_token_id)
    padded_ids = torch.cat([pad, ids["input_ids"]], 1)
    padded_mask = torch.cat([torch.zeros_like(pad), ids["attention_mask"]], 1)
    trimmed_ids, trimmed_mask = trim_left_padding(padded_ids, padded_mask)
    assert trimmed_ids.shape[1] == ids["input_ids"].shape[1]
    assert torch.equal(trimmed_ids, ids["input_ids"]) and torch.equal(trimmed_mask, ids["attention_mask"])
    sub_ids, sub_mask = trim_left_padding(ids["input_ids"][1:2], ids["attention_mask"][1:2])  # one row: no padding
    assert bool(sub_mask.all())
    with torch.no_grad():
        model.eval()
        full_logits, full_values = model(padded_ids, padded_mask, 4)
        row_logits, row_values = model(ids["input_ids"][1:2], ids["attention_mask"][1:2], 4)
    torch.testing.assert_close(full_logits[1:2], row_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full_values[1:2], row_values, atol=1e-5, rtol=1e-5)


def test_rollout_lays_prompts_out_behind_their_shared_start(trainer):
    roll = trainer.rollout(trainer.records[:4])
    P = roll.prefix_len
    assert P >= 8, "the chat template and the instruction are shared"
    ids, mask = roll.input_ids, roll.attention_mask
    assert bool((ids[:, :P] == ids[:1, :P]).all()) and bool(mask[:, :P].all())
    shared = trainer.ppo
    trainer.ppo = dataclasses.replace(shared, share_prefix=False)
    try:
        enc, plain = trainer.encode_prompts([r["prompt"] for r in trainer.records[:4]])
    finally:
        trainer.ppo = shared
    assert plain == 0 and not bool(enc["attention_mask"][:, -1].eq(0).any())  # plain left padding


@pytest.mark.parametrize("reference", [False, True])
def test_shared_prefix_pass_gives_the_whole_rows_outputs_and_gradients(trainer, reference):
    """The prefix once (a batch of one, keys and values expanded to every row) gives the logits,
    values and gradients of running every row whole."""
    roll = trainer.rollout(trainer.records[:4])
    P, R = roll.prefix_len, roll.response.shape[1]
    assert P > 0
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]

    def run(prefix_len):
        model.zero_grad(set_to_none=True)
        model.eval()
        if reference:
            with torch.no_grad():
                return model.reference_logits(roll.input_ids, roll.attention_mask, R, prefix_len), None, None
        logits, values = model(roll.input_ids, roll.attention_mask, R, prefix_len)
        m = roll.mask
        loss = (logprobs_from_logits(logits, roll.response) * m).sum() + (values * m).pow(2).sum()
        loss.backward()
        return logits.detach(), values.detach(), [p.grad.clone() for p in params]

    whole_logits, whole_values, whole_grads = run(0)
    shared_logits, shared_values, shared_grads = run(P)
    torch.testing.assert_close(shared_logits, whole_logits, atol=1e-5, rtol=1e-5)
    if not reference:
        torch.testing.assert_close(shared_values, whole_values, atol=1e-5, rtol=1e-5)
        assert sum(float(g.abs().sum()) for g in whole_grads) > 0
        for a, b in zip(shared_grads, whole_grads):  # float rounding only: relative to each gradient's size
            assert float((a - b).norm()) <= 1e-4 * float(b.norm()) + 1e-7, float((a - b).norm() / b.norm())
    model.zero_grad(set_to_none=True)
