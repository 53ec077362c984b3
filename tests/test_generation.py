import pytest

from gluerl.generation import common_prefix_length, cut_at_stop, generate
from gluerl.models import load_model, load_tokenizer
from gluerl.prompts import build_messages, draw_demonstrations, render_prompt
from gluerl.tasks import get_task
from gluerl.testing import generate_rows


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each keeps one token of its own
    assert common_prefix_length([[7]]) == 0
    assert common_prefix_length([]) == 0


def test_cut_at_stop():
    assert cut_at_stop("yes</Judgement> more") == "yes</Judgement>"
    assert cut_at_stop("no tag") == "no tag"


@pytest.mark.parametrize("shots", [0, 3])
def test_shared_prefix_gives_the_same_completions(tiny_model, shots):
    """Greedy completions with the prefix cache equal those without it, for ragged prompt lengths."""
    task = get_task("sst2")
    tok, model = load_tokenizer(tiny_model), load_model(tiny_model)
    rows = generate_rows("sst2", 11)
    demos = draw_demonstrations(generate_rows("sst2", 20), task, shots, seed=1) if shots else []
    prompts = [render_prompt(build_messages(r, task, demos), tok) for r in rows]
    prompts[3] = prompts[3].replace("The ", "The very very long and winding ", 1) if shots else prompts[3]
    kw = dict(max_new_tokens=6, batch_size=4, progress=False, min_prefix=4)
    plain = generate(model, tok, prompts, share_prefix=False, **kw)
    shared = generate(model, tok, prompts, share_prefix=True, **kw)
    assert plain == shared
    assert len(set(plain)) >= 1 and all(isinstance(c, str) for c in plain)


def test_batch_size_does_not_change_greedy_output(tiny_model):
    task = get_task("rte")
    tok, model = load_tokenizer(tiny_model), load_model(tiny_model)
    prompts = [render_prompt(build_messages(r, task), tok) for r in generate_rows("rte", 7)]
    a = generate(model, tok, prompts, max_new_tokens=5, batch_size=1, progress=False)
    b = generate(model, tok, prompts, max_new_tokens=5, batch_size=7, progress=False)
    assert a == b


def test_batch_cache_writes_in_place_and_matches_concatenation(tiny_model):
    """The batch cache holds the prefix in every row and appends in place (no copy of the cache per
    step); past its capacity it still appends correctly (by concatenation)."""
    import torch

    from gluerl.generation import batch_cache, prefix_cache

    tok, model = load_tokenizer(tiny_model), load_model(tiny_model)
    ids = tok("The quick brown fox jumps over the lazy dog", add_special_tokens=False)["input_ids"]
    prefix = prefix_cache(model, ids)
    past = batch_cache(prefix, 3, len(ids) + 3)
    assert past is not None and len(past.layers) == len(prefix.layers)
    layer, src = past.layers[0], prefix.layers[0]
    b, h, n, d = layer.keys.shape
    assert (b, n) == (3, len(ids)) and torch.equal(layer.keys, src.keys.expand(3, -1, -1, -1))
    assert past.get_seq_length() == len(ids)
    ptr = layer.keys.data_ptr()
    k, v = torch.randn(3, h, 2, d), torch.randn(3, h, 2, d)
    keys, values = layer.update(k, v)
    assert keys.data_ptr() == ptr  # written into the preallocated buffer
    assert torch.equal(keys, torch.cat([src.keys.expand(3, -1, -1, -1), k], dim=-2))
    assert torch.equal(values, torch.cat([src.values.expand(3, -1, -1, -1), v], dim=-2))
    k2, v2 = torch.randn(3, h, 2, d), torch.randn(3, h, 2, d)  # 1 slot left: falls back, still right
    keys2, _ = layer.update(k2, v2)
    assert torch.equal(keys2, torch.cat([keys, k2], dim=-2)) and keys2.shape[-2] == len(ids) + 4
    assert prefix.layers[0].keys.shape[0] == 1  # the shared prefix itself is left as it was
    assert batch_cache(None, 3, 10) is None


def test_shared_prefix_is_computed_once_while_the_weights_stay(tiny_model):
    import torch

    from gluerl.generation import shared_prefix_cache

    tok, model = load_tokenizer(tiny_model), load_model(tiny_model)
    ids = tok("The quick brown fox jumps over the lazy dog", add_special_tokens=False)["input_ids"]
    calls = []
    orig = model.forward
    model.forward = lambda *a, **k: calls.append(1) or orig(*a, **k)
    a = shared_prefix_cache(model, ids)
    assert shared_prefix_cache(model, ids) is a and len(calls) == 1
    assert shared_prefix_cache(model, ids[:-1]) is not a and len(calls) == 2  # another prefix
    b = shared_prefix_cache(model, ids)
    assert len(calls) == 3
    with torch.no_grad():
        next(model.parameters()).mul_(1.5)  # weights changed in place: recomputed, and different
    c = shared_prefix_cache(model, ids)
    assert len(calls) == 4 and not torch.equal(c.layers[0].keys, b.layers[0].keys)
    other = load_model(tiny_model)  # another model (same weights as loaded) never gets this one's cache
    assert shared_prefix_cache(other, ids) is not c
