"""Loading an adapter for evaluation keeps its change in bf16 (issue 13, defect 5).

``load_model`` merged the LoRA adapter into bf16 weights; a change smaller than half a bf16 step
of the weight it is added to rounds away, so the evaluated model was the base model. The test
builds such an adapter on purpose: one module of a tiny model whose weights are bf16 numbers of
magnitude at least ``M``, and a rank-1 change of ``C < M * 2**-9`` per entry (under half a step
everywhere), pointing along that module's input so that its effect on the output is not small.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

M = 2.0 ** -5          # every weight of the module is at least this large ...
C = 0.9 * M * 2 ** -9  # ... and every entry of the LoRA change below half a bf16 step of it
MODULE = "lm_head"    # untied; the mechanism is the same for every LoRA target
HIDDEN = 128


@pytest.fixture(scope="module")
def small_adapter(tiny_model, tmp_path_factory):
    """(model folder, adapter folder, input ids): an adapter that a bf16 merge loses."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from gluerl.models import load_tokenizer

    root = tmp_path_factory.mktemp("merge")
    tok = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                                        num_hidden_layers=1, num_attention_heads=2, tie_word_embeddings=False,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    layer = base.get_submodule(MODULE)
    with torch.no_grad():
        w = layer.weight
        w.copy_((torch.sign(w) + (w == 0)) * w.abs().clamp(min=M))
        w.copy_(w.to(torch.bfloat16).float())          # bf16 numbers, as most hub checkpoints are
    base.save_pretrained(root / "model", safe_serialization=True)
    tok.save_pretrained(root / "model")
    ids = tok("The film was good. The story was dull.", return_tensors="pt").input_ids

    seen = {}

    def keep_input(module, args, output):
        seen["x"] = args[0][0, -1].detach()

    hook = layer.register_forward_hook(keep_input)
    base(ids)
    hook.remove()
    peft = get_peft_model(base, LoraConfig(r=1, lora_alpha=1, target_modules=[MODULE], lora_dropout=0.0))
    lora = peft.base_model.model.get_submodule(MODULE)
    with torch.no_grad():
        lora.lora_A["default"].weight.copy_(torch.sign(seen["x"])[None, :])
        out_features = lora.lora_B["default"].weight.shape[0]
        lora.lora_B["default"].weight.copy_(C * (-1.0) ** torch.arange(out_features, dtype=torch.float32)[:, None])
    peft.save_pretrained(root / "adapter")
    return root / "model", root / "adapter", ids


def last_logits(model, ids):
    with torch.no_grad():
        return model(ids.to(next(model.parameters()).device)).logits[0, -1].float().cpu()


def test_the_adapter_is_below_half_a_bf16_step(small_adapter):
    """The premise: merging this adapter into bf16 weights gives the bf16 base weights exactly."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_dir, adapter_dir, _ = small_adapter
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    before = base.get_submodule(MODULE).weight.clone()
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    assert torch.equal(merged.get_submodule(MODULE).weight, before)
    # merging in fp32 and casting the merged weights to bf16 loses it just as well
    from gluerl.models import load_model

    cast = load_model(model_dir, adapter_dir, dtype="bfloat16", device="cpu", merge=True)
    assert not isinstance(cast, PeftModel) and torch.equal(cast.get_submodule(MODULE).weight, before)


def test_bf16_evaluation_keeps_a_small_adapter(small_adapter):
    """The adapter's effect on the logits in bf16 is the fp32 effect (not zero, as a bf16 merge gives)."""
    from gluerl.models import load_model

    model_dir, adapter_dir, ids = small_adapter
    ref = last_logits(load_model(model_dir, adapter_dir, dtype="float32", device="cpu"), ids)
    ref_base = last_logits(load_model(model_dir, dtype="float32", device="cpu"), ids)
    got = last_logits(load_model(model_dir, adapter_dir, dtype="bfloat16", device="cpu"), ids)
    got_base = last_logits(load_model(model_dir, dtype="bfloat16", device="cpu"), ids)
    effect, want = got - got_base, ref - ref_base
    assert want.abs().max() > 1e-3
    assert effect.abs().max() > 0, "the adapter was lost: bf16 logits equal the base model's"
    assert torch.linalg.norm(effect - want) < 0.35 * torch.linalg.norm(want)
    assert torch.nn.functional.cosine_similarity(effect, want, dim=0) > 0.9


def test_fp32_evaluation_still_merges(small_adapter):
    """In fp32 the merge is exact and still done: a plain model, logits equal to the unmerged adapter's."""
    from peft import PeftModel

    from gluerl.models import load_model

    model_dir, adapter_dir, ids = small_adapter
    merged = load_model(model_dir, adapter_dir, dtype="float32", device="cpu")
    unmerged = load_model(model_dir, adapter_dir, dtype="float32", device="cpu", merge=False)
    assert not isinstance(merged, PeftModel) and isinstance(unmerged, PeftModel)
    assert torch.allclose(last_logits(merged, ids), last_logits(unmerged, ids), atol=1e-5)


def test_an_unmerged_adapter_generates_through_the_prefix_cache(small_adapter):
    """Evaluation's generate (shared-prefix cache, cascade attention) reads through an unmerged adapter."""
    from gluerl.generation import generate
    from gluerl.models import load_model, load_tokenizer
    from gluerl.prompts import build_messages, render_prompt
    from gluerl.tasks import get_task
    from gluerl.testing import generate_rows

    model_dir, adapter_dir, _ = small_adapter
    tok, task = load_tokenizer(model_dir), get_task("sst2")
    prompts = [render_prompt(build_messages(r, task), tok) for r in generate_rows("sst2", 5)]
    kw = dict(max_new_tokens=4, batch_size=2, progress=False, min_prefix=4)
    unmerged = load_model(model_dir, adapter_dir, dtype="float32", device="cpu", merge=False)
    merged = load_model(model_dir, adapter_dir, dtype="float32", device="cpu")
    assert generate(unmerged, tok, prompts, **kw) == generate(merged, tok, prompts, share_prefix=False, **kw)
    half = generate(load_model(model_dir, adapter_dir, dtype="bfloat16", device="cpu"), tok, prompts, **kw)
    assert len(half) == len(prompts) and all(isinstance(c, str) for c in half)
