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


def _reference_attention(q, k, v, mask):
    """Plain SDPA with the grouped key/value heads repeated: (B, L, Hq, D)."""
    import torch

    g = q.shape[1] // k.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), attn_mask=mask)
    return out.transpose(1, 2)


@pytest.mark.parametrize("q_len", [5, 1])  # a batch's prefill, and a decoding step
@pytest.mark.parametrize("kv_heads", [3, 1, 9])
def test_cascade_attention_equals_attention_over_the_whole_cache(q_len, kv_heads):
    """Prefix part (shared by every row) + own part, merged by log-sum-exp, equals attention over
    [prefix][own positions] with left padding, grouped heads and a causal mask."""
    import torch

    from gluerl.generation import cascade_attention

    torch.manual_seed(0)
    b, hq, prefix, n_own, d = 4, 9, 20, 8, 16
    q = torch.randn(b, hq, q_len, d)
    shared_k, shared_v = torch.randn(1, kv_heads, prefix, d), torch.randn(1, kv_heads, prefix, d)
    k = torch.cat([shared_k.expand(b, -1, -1, -1), torch.randn(b, kv_heads, n_own, d)], 2)
    v = torch.cat([shared_v.expand(b, -1, -1, -1), torch.randn(b, kv_heads, n_own, d)], 2)
    causal = torch.ones(q_len, n_own, dtype=torch.bool).tril(n_own - q_len)
    mask = torch.ones(b, 1, q_len, prefix + n_own, dtype=torch.bool)
    mask[..., prefix:] &= causal
    for r in range(b):  # row r has r padding positions right after the prefix
        mask[r, ..., prefix : prefix + r] = False
    if q_len > 1:  # a padding query that sees no own position: only the prefix
        mask[3, 0, 0, prefix:] = False
    got = cascade_attention(q, k, v, mask, prefix)
    assert got.shape == (b, q_len, hq, d) and not got.isnan().any()
    torch.testing.assert_close(got, _reference_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)
    # no mask: plain causal attention, the queries being the last positions
    whole = torch.cat([torch.ones(q_len, prefix, dtype=torch.bool), causal], 1)
    torch.testing.assert_close(cascade_attention(q, k, v, None, prefix), _reference_attention(q, k, v, whole),
                               atol=1e-5, rtol=1e-5)
    # the prefix really is read from one row: rows that differ there give a different answer
    k_bad = k.clone()
    k_bad[1:, :, :prefix] += 1.0
    assert not torch.allclose(_reference_attention(q, k_bad, v, mask), cascade_attention(q, k_bad, v, mask, prefix))


@pytest.fixture(scope="module")
def tiny_gqa_model(tmp_path_factory):
    from gluerl.testing import fixture_texts, make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("gqa") / "model", fixture_texts(), heads=4, kv_heads=2)


@pytest.fixture
def cascade_calls(monkeypatch):
    """The query shape of every call of ``generation.cascade_attention`` (which still runs)."""
    from gluerl import generation

    calls = []
    real = generation.cascade_attention
    monkeypatch.setattr(generation, "cascade_attention", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    return calls


@pytest.mark.parametrize("shots", [0, 3])
def test_cascade_attention_gives_the_same_completions(tiny_gqa_model, cascade_calls, shots):
    """generate with cascade attention (the default) writes what it writes without it, and did use it;
    the model is back on sdpa afterwards."""
    task = get_task("rte")
    tok, model = load_tokenizer(tiny_gqa_model), load_model(tiny_gqa_model)
    assert model.config._attn_implementation == "sdpa" and model.config.num_key_value_heads == 2
    demos = draw_demonstrations(generate_rows("rte", 20), task, shots, seed=1) if shots else []
    prompts = [render_prompt(build_messages(r, task, demos), tok) for r in generate_rows("rte", 9)]
    calls = cascade_calls
    kw = dict(max_new_tokens=6, batch_size=4, progress=False, min_prefix=4)
    plain = generate(model, tok, prompts, cascade_prefix=False, **kw)
    assert calls == []
    cascaded = generate(model, tok, prompts, **kw)
    assert cascaded == plain
    layers = model.config.num_hidden_layers
    assert len(calls) >= layers * 2 and any(s[2] == 1 for s in calls)  # prefill and decoding steps
    assert model.config._attn_implementation == "sdpa"


def test_cascade_context_restores_sdpa_after_an_error(tiny_gqa_model):
    from gluerl.generation import cascade

    model = load_model(tiny_gqa_model)
    with pytest.raises(RuntimeError, match="boom"):
        with cascade(model, 8) as on:
            assert on and model.config._attn_implementation != "sdpa"
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    with cascade(model, 0) as on:  # no prefix: nothing changes
        assert not on and model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")  # another attention implementation is left as it is
    with cascade(model, 8) as on:
        assert not on and model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "eager"


def test_evaluation_config_switches_cascade_attention(tiny_gqa_model, cascade_calls):
    """evaluation.cascade_attention reaches generate: false keeps transformers' sdpa, and both give the
    same predictions."""
    from gluerl.evaluation import evaluate_split
    from gluerl.prompts import format_split

    task = get_task("rte")
    tok, model = load_tokenizer(tiny_gqa_model), load_model(tiny_gqa_model)
    records = format_split(generate_rows("rte", 6), task, draw_demonstrations(generate_rows("rte", 10), task, 2, 1))
    calls = cascade_calls
    cfg = {"batch_size": 3, "max_new_tokens": 4, "bootstrap_resamples": 0}
    _, off = evaluate_split(model, tok, task, "validation", records, {**cfg, "cascade_attention": False},
                            progress=False)
    assert calls == []
    _, on = evaluate_split(model, tok, task, "validation", records, cfg, progress=False)
    assert calls and [r["completion"] for r in on] == [r["completion"] for r in off]


# -- answer drafts (issue 16) -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def answering_model(tiny_model, tmp_path_factory):
    """The tiny model trained (80 Adam steps on 16 SST-2 prompts, a few seconds) to answer with
    ``label</Judgement>``: it writes the answers for most prompts, so drafts are really kept; a few
    of its answers are other text (kept partly or not at all)."""
    import torch

    from gluerl.prompts import answer_text

    tok, model = load_tokenizer(tiny_model), load_model(tiny_model)
    task = get_task("sst2")
    rows = generate_rows("sst2", 16)
    prompts = [render_prompt(build_messages(r, task), tok) for r in rows]
    enc = [tok(p + answer_text(r["label"], task), add_special_tokens=False)["input_ids"] for p, r in zip(prompts, rows)]
    starts = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), tok.pad_token_id)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, (e, s) in enumerate(zip(enc, starts)):
        ids[i, : len(e)], mask[i, : len(e)] = torch.tensor(e), 1
        labels[i, s : len(e)] = torch.tensor(e[s:])
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(80):
        opt.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("answering") / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def forward_calls():
    """count(model): a list that grows by one per forward pass of ``model`` (the wrapper keeps the
    signature: generate reads it to pass position_ids)."""
    import functools

    def count(model):
        calls, real = [], model.forward

        @functools.wraps(real)
        def counted(*a, **k):
            calls.append(k["input_ids"].shape if "input_ids" in k else None)
            return real(*a, **k)

        model.forward = counted
        return calls

    return count


def _sst2_prompts(tok, n, shots=0, seed=3):
    task = get_task("sst2")
    demos = draw_demonstrations(generate_rows("sst2", 20), task, shots, seed=1) if shots else []
    return [render_prompt(build_messages(r, task, demos), tok) for r in generate_rows("sst2", n, seed=seed)]


def test_draft_sequences_and_proposals(tiny_model):
    from gluerl.drafts import draft_sequences, proposal

    tok = load_tokenizer(tiny_model)
    texts = ["negative</Judgement>", "positive</Judgement>"]
    seqs = draft_sequences(tok, texts + texts, tail="<Judgement>")
    enc = [tuple(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert enc[0] in seqs and enc[1] in seqs and len(seqs) == len(set(seqs)) <= 4
    neg = list(enc[0])
    assert proposal(seqs, neg[:1], 20) == neg[1:]  # the rest of the answer that starts so
    assert proposal(seqs, neg[:2], 2) == neg[2:4]  # at most the room left
    assert proposal(seqs, neg, 20) == [] and proposal(seqs, [tok.pad_token_id], 20) == []


@pytest.mark.parametrize("cascade_prefix", [True, False])
@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("shots", [0, 3])
def test_answer_drafts_give_the_same_completions(answering_model, shots, share_prefix, cascade_prefix):
    """generate with drafts writes what it writes without, in batches where rows keep the whole
    draft, rows keep part of it and go on (a wrong draft listed first: ``negative!``), and rows with
    no draft (RTE prompts, other first tokens); with and without the shared prefix, cascade on/off."""
    from gluerl.budgets import answer_texts

    task = get_task("sst2")
    tok, model = load_tokenizer(answering_model), load_model(answering_model)
    rte = get_task("rte")
    prompts = _sst2_prompts(tok, 13, shots) + [render_prompt(build_messages(r, rte), tok)
                                               for r in generate_rows("rte", 3)]
    drafts = ["negative!</Judgement>", "positive</Judgement> and more", *answer_texts(task)]
    kw = dict(max_new_tokens=10, batch_size=5, progress=False, min_prefix=4, share_prefix=share_prefix,
              cascade_prefix=cascade_prefix)
    plain = generate(model, tok, prompts, **kw)
    stats = {}
    assert generate(model, tok, prompts, drafts=drafts, stats=stats, **kw) == plain
    assert stats["accepted"] > 0 and stats["rejected"] > 0, stats  # drafts kept whole, and cut short
    assert sum(c in answer_texts(task) for c in plain) >= 4 and any(c not in answer_texts(task) for c in plain)


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3, 12])
def test_answer_drafts_stop_where_generate_stops(answering_model, max_new_tokens):
    """A budget shorter than the answer cuts the draft where generate cuts the answer; a longer one
    ends at the stop string."""
    from gluerl.budgets import answer_texts

    tok, model = load_tokenizer(answering_model), load_model(answering_model)
    prompts = _sst2_prompts(tok, 9)
    kw = dict(max_new_tokens=max_new_tokens, batch_size=4, progress=False, min_prefix=4)
    assert generate(model, tok, prompts, drafts=answer_texts(get_task("sst2")), **kw) == generate(model, tok, prompts, **kw)


def test_answer_drafts_take_one_forward_pass_for_the_answer(answering_model, forward_calls):
    """Prompts the model answers with one of the drafts: each batch is its prefill plus one forward
    pass (not one per answer token), and the completions are the same. Fails if drafts are ignored."""
    from gluerl.budgets import answer_texts

    answers = answer_texts(get_task("sst2"))
    tok, model = load_tokenizer(answering_model), load_model(answering_model)
    kw = dict(max_new_tokens=10, batch_size=4, progress=False, min_prefix=4)
    prompts = [p for p, c in zip(_sst2_prompts(tok, 16), generate(model, tok, _sst2_prompts(tok, 16), **kw))
               if c in answers][:8]
    assert len(prompts) == 8
    calls = forward_calls(model)
    plain = generate(model, tok, prompts, **kw)
    n_plain = len(calls)
    assert n_plain >= 2 * min(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers)
    calls.clear()
    stats = {}
    assert generate(model, tok, prompts, drafts=answers, stats=stats, **kw) == plain
    assert len(calls) == 4 and stats == {"forwards": 4, "accepted": stats["accepted"], "rejected": 0}
    assert [shape[1] > 1 for shape in calls[1::2]] == [True, True]  # the draft passes: several tokens a row


def test_sampling_ignores_answer_drafts(answering_model, forward_calls):
    tok, model = load_tokenizer(answering_model), load_model(answering_model)
    prompts = _sst2_prompts(tok, 6)
    calls = forward_calls(model)
    kw = dict(max_new_tokens=6, batch_size=3, progress=False, do_sample=True, seed=5)
    a = generate(model, tok, prompts, **kw)
    calls.clear()  # the shared prefix was computed once, above
    assert generate(model, tok, prompts, **kw) == a
    n = len(calls)
    assert generate(model, tok, prompts, drafts=["negative</Judgement>"], **kw) == a and len(calls) == 2 * n


def test_evaluation_config_switches_answer_drafts(answering_model, forward_calls):
    """evaluation.answer_drafts reaches generate: true (the default) takes fewer forward passes, and
    both give the same predictions."""
    from gluerl.evaluation import evaluate_split
    from gluerl.prompts import format_split

    task = get_task("sst2")
    tok, model = load_tokenizer(answering_model), load_model(answering_model)
    records = format_split(generate_rows("sst2", 8, seed=3), task, [])
    calls = forward_calls(model)
    cfg = {"batch_size": 4, "max_new_tokens": 8, "bootstrap_resamples": 0}
    evaluate_split(model, tok, task, "validation", records, cfg, progress=False)  # the shared prefix, once
    calls.clear()
    _, off = evaluate_split(model, tok, task, "validation", records, {**cfg, "answer_drafts": False}, progress=False)
    n_off = len(calls)
    calls.clear()
    _, on = evaluate_split(model, tok, task, "validation", records, cfg, progress=False)
    assert [r["completion"] for r in on] == [r["completion"] for r in off]
    assert len(calls) < n_off
