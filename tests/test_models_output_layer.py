"""The output layer of a frozen model runs one ``mm``, not a ``bmm`` against a copied weight.

With ``logits_to_keep`` a causal LM slices its hidden states before the output layer; on a batch
of several rows that slice is not contiguous, and torch's ``matmul`` then folds it into a matrix
only when the weight needs a gradient. A LoRA model's output layer is frozen, so it ran a ``bmm``
against the weight expanded to every row (on the CPU in bf16: a copy of ``rows x hidden x vocab``
values per call, a quarter of a PPO update on SmolLM2). ``gluerl.models.contiguous_output_layer``
hands the layer a contiguous input; the evaluator's ``load_model`` and the PPO trainer apply it.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def vocab_bmms(model, vocab: int, **inputs) -> tuple[int, torch.Tensor]:
    """(number of ``aten::bmm`` calls with an operand of the vocabulary's size, the output) of one forward."""
    with torch.no_grad(), torch.profiler.profile(record_shapes=True) as prof:
        out = model(**inputs)
    n = sum(1 for e in prof.events()
            if e.name == "aten::bmm" and any(vocab in shape for shape in e.input_shapes if shape))
    return n, out


@pytest.fixture(scope="module")
def frozen(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).eval().requires_grad_(False)
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (3, 9))
    return model, ids


def test_a_frozen_output_layer_on_a_slice_runs_a_bmm_without_the_hook(frozen):
    """The premise: torch's folding rule as it is (if torch changes it, the hook is no longer needed)."""
    model, ids = frozen
    n, _ = vocab_bmms(model, model.config.vocab_size, input_ids=ids, logits_to_keep=4)
    assert n == 1


def test_contiguous_output_layer_runs_one_mm_with_the_same_logits(frozen, tiny_model):
    from transformers import AutoModelForCausalLM

    from gluerl.models import contiguous_output_layer

    model, ids = frozen
    _, before = vocab_bmms(model, model.config.vocab_size, input_ids=ids, logits_to_keep=4)
    fixed = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).eval().requires_grad_(False)
    assert contiguous_output_layer(contiguous_output_layer(fixed)) is fixed  # twice: one hook
    assert len(fixed.get_output_embeddings()._forward_pre_hooks) == 1
    n, after = vocab_bmms(fixed, model.config.vocab_size, input_ids=ids, logits_to_keep=4)
    assert n == 0
    torch.testing.assert_close(after.logits, before.logits)
    assert after.logits.shape == (3, 4, model.config.vocab_size)


def test_the_evaluators_model_with_an_adapter_folds_its_output_layer(tiny_model, tmp_path, frozen):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from gluerl.models import load_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    get_peft_model(base, LoraConfig(r=2, target_modules="all-linear")).save_pretrained(tmp_path / "adapter")
    model = load_model(tiny_model, tmp_path / "adapter", dtype="bfloat16", device="cpu")  # unmerged, frozen
    _, ids = frozen
    n, _ = vocab_bmms(model, model.config.vocab_size, input_ids=ids, logits_to_keep=4)
    assert n == 0


def test_the_ppo_policy_folds_its_output_layer(tiny_model, tmp_path):
    from gluerl import testing
    from gluerl.config import load_config
    from gluerl.io import write_jsonl
    from gluerl.models import load_tokenizer
    from gluerl.ppo import PPOTrainer
    from gluerl.prompts import format_split
    from gluerl.tasks import get_task
    from gluerl.training import load_train_records

    prompts = tmp_path / "sst2.jsonl"
    write_jsonl(prompts, format_split(testing.generate_rows("sst2", 4), get_task("sst2")))
    tok = load_tokenizer(tiny_model)
    records = load_train_records([("sst2", prompts)], tok)
    cfg = load_config(None, {"training": {"dtype": "bfloat16"}, "ppo": {"batch_size": 2, "mini_batch_size": 2,
                                                                        "steps": 1}})
    trainer = PPOTrainer(cfg, tiny_model, records, tmp_path / "out", seed=1, tokenizer=tok)
    batch = tok([r["prompt"] for r in records[:3]], return_tensors="pt", padding=True)
    vocab = trainer.model.policy.get_output_embeddings().weight.shape[0]
    n, (logits, values) = vocab_bmms(trainer.model, vocab, input_ids=batch.input_ids,
                                     attention_mask=batch.attention_mask, n_response=4)
    assert n == 0 and logits.shape == (3, 4, vocab) and values.shape == (3, 4)


def test_the_sft_and_grpo_base_model_folds_its_output_layer(tiny_model, frozen):
    """TRL's GRPOTrainer scores completions with ``logits_to_keep`` on the PEFT model's frozen head."""
    from gluerl.training import load_base_model

    model = load_base_model(tiny_model, torch.bfloat16).eval().requires_grad_(False)
    _, ids = frozen
    n, _ = vocab_bmms(model, model.config.vocab_size, input_ids=ids, logits_to_keep=4)
    assert n == 0


def test_fp32_models_keep_torchs_path_and_their_numbers(tiny_model):
    """fp32 gets no hook: its ``bmm`` reads the expanded weight without a copy, and fp32 runs keep their exact logits."""
    from transformers import AutoModelForCausalLM

    from gluerl.models import contiguous_output_layer
    from gluerl.training import load_base_model

    plain = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert not contiguous_output_layer(plain).get_output_embeddings()._forward_pre_hooks
    assert not load_base_model(tiny_model, torch.float32).get_output_embeddings()._forward_pre_hooks
