"""PPO math against numbers worked out by hand (the arithmetic is in the comments)."""

import math

import pytest
import torch

from gluerl import testing
from gluerl.ppo import (AdaptiveKLController, FixedKLController, compute_rewards, explained_variance, gae,
                        group_advantages, masked_mean, masked_var, policy_loss, response_mask, value_loss, whiten)

t = lambda *rows: torch.tensor(rows, dtype=torch.float32)  # noqa: E731


def close(a, b, tol=1e-5):
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    assert torch.allclose(a, b, atol=tol), (a, b)


# --- GAE ------------------------------------------------------------------------------------

def test_gae_gamma1_lam095():
    # r = [0, 0, 1], V = [0.5, 0.2, 0.4], gamma = 1, lam = 0.95
    # t=2: delta = 1 - 0.4 = 0.6                 A2 = 0.6
    # t=1: delta = 0 + 0.4 - 0.2 = 0.2           A1 = 0.2 + 0.95 * 0.6 = 0.77
    # t=0: delta = 0 + 0.2 - 0.5 = -0.3          A0 = -0.3 + 0.95 * 0.77 = 0.4315
    # returns = A + V = [0.9315, 0.97, 1.0]
    adv, ret = gae(t([0, 0, 1]), t([0.5, 0.2, 0.4]), t([1, 1, 1]), gamma=1.0, lam=0.95)
    close(adv, t([0.4315, 0.77, 0.6]))
    close(ret, t([0.9315, 0.97, 1.0]))


def test_gae_with_mask_stops_at_last_token():
    # row 0: same as above plus a masked 4th token whose reward 5 and value 9 must be ignored
    # row 1: r = [0, 2], V = [1, 1], two masked tokens
    #   t=1: delta = 2 + 0 - 1 = 1     A1 = 1
    #   t=0: delta = 0 + 1 - 1 = 0     A0 = 0 + 0.95 * 1 = 0.95;   returns = [1.95, 2.0]
    rewards = t([0, 0, 1, 5], [0, 2, 7, 7])
    values = t([0.5, 0.2, 0.4, 9], [1, 1, 3, 3])
    mask = t([1, 1, 1, 0], [1, 1, 0, 0])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    close(adv, t([0.4315, 0.77, 0.6, 0], [0.95, 1.0, 0, 0]))
    close(ret, t([0.9315, 0.97, 1.0, 0], [1.95, 2.0, 0, 0]))


def test_gae_lam1_is_discounted_return():
    # gamma = 0.5, lam = 1: returns are the discounted sums of rewards: [0.25, 0.5, 1.0]
    # t=2: A = 1 - 0.4 = 0.6; t=1: delta = 0.5*0.4 - 0.2 = 0, A = 0.5*0.6 = 0.3
    # t=0: delta = 0.5*0.2 - 0.5 = -0.4, A = -0.4 + 0.5*0.3 = -0.25
    adv, ret = gae(t([0, 0, 1]), t([0.5, 0.2, 0.4]), t([1, 1, 1]), gamma=0.5, lam=1.0)
    close(adv, t([-0.25, 0.3, 0.6]))
    close(ret, t([0.25, 0.5, 1.0]))


# --- policy and value losses ----------------------------------------------------------------

def test_policy_loss_clipping_inactive():
    # ratio 1.1 inside [0.8, 1.2], A = 1 on both tokens: loss = -1.1, nothing clipped
    # approx_kl = 0.5 * log(1.1)^2 = 0.5 * 0.0953102^2 = 0.0045420
    old = t([-1.0, -2.0])
    new = old + math.log(1.1)
    loss, clipfrac, approx_kl = policy_loss(new, old, t([1.0, 1.0]), t([1, 1]), cliprange=0.2)
    close(loss, -1.1)
    close(clipfrac, 0.0)
    close(approx_kl, 0.0045420)


def test_policy_loss_clipping_active():
    # token 1: ratio 1.5, A = +2:  -A r = -3.0, -A clip(r) = -2 * 1.2 = -2.4  -> max -2.4 (clipped)
    # token 2: ratio 0.5, A = -1:  -A r = 0.5,  -A clip(r) = 1 * 0.8 = 0.8    -> max 0.8  (clipped)
    # token 3: ratio 0.5, A = +1:  -A r = -0.5, -A clip(r) = -0.8             -> max -0.5 (not clipped)
    # token 4: masked (ratio 3, A = 100) must not count
    # loss = (-2.4 + 0.8 - 0.5) / 3 = -0.7, clipfrac = 2/3
    old = t([-1.0, -1.0, -1.0, -1.0])
    new = old + torch.log(t([1.5, 0.5, 0.5, 3.0]))
    loss, clipfrac, _ = policy_loss(new, old, t([2.0, -1.0, 1.0, 100.0]), t([1, 1, 1, 0]), cliprange=0.2)
    close(loss, -0.7)
    close(clipfrac, 2 / 3)


def test_policy_loss_gradient_is_zero_when_clipped():
    old = t([-1.0])
    new = (old + math.log(1.5)).requires_grad_()
    loss, _, _ = policy_loss(new, old, t([2.0]), t([1]), cliprange=0.2)
    loss.backward()
    close(new.grad, t([0.0]))


def test_value_loss_clipped():
    # old V = 0, cliprange 0.2
    # token 1: V = 0.5 -> clip 0.2; (0.5-1)^2 = 0.25, (0.2-1)^2 = 0.64 -> 0.64 (clipped term larger)
    # token 2: V = 0.1 -> clip 0.1; (0.1-0.5)^2 = 0.16 both                -> 0.16
    # token 3: V = -0.3 -> clip -0.2; (-0.3)^2 = 0.09, (-0.2)^2 = 0.04     -> 0.09
    # loss = 0.5 * (0.64 + 0.16 + 0.09) / 3 = 0.1483333, clipfrac = 1/3
    loss, clipfrac = value_loss(t([0.5, 0.1, -0.3, 7.0]), t([0.0, 0.0, 0.0, 0.0]), t([1.0, 0.5, 0.0, -7.0]),
                                t([1, 1, 1, 0]), cliprange_value=0.2)
    close(loss, 0.1483333)
    close(clipfrac, 1 / 3)


# --- KL controllers -------------------------------------------------------------------------

def test_adaptive_kl_increases_when_kl_above_target():
    # err = 6.6/6 - 1 = 0.1 (inside the clip): coef = 0.2 * (1 + 0.1 * 1000/10000) = 0.2 * 1.01 = 0.202
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    c.update(6.6, n_steps=1000)
    assert c.value == pytest.approx(0.202)


def test_adaptive_kl_clips_error_at_plus_02():
    # err = 9/6 - 1 = 0.5 -> clipped to 0.2: coef = 0.2 * (1 + 0.2 * 100/10000) = 0.2 * 1.002 = 0.2004
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    c.update(9.0, n_steps=100)
    assert c.value == pytest.approx(0.2004)


def test_adaptive_kl_decreases_and_clips_at_minus_02():
    # err = 5.4/6 - 1 = -0.1: coef = 0.2 * (1 - 0.1 * 500/10000) = 0.2 * 0.995 = 0.199
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    c.update(5.4, n_steps=500)
    assert c.value == pytest.approx(0.199)
    # err = 0/6 - 1 = -1 -> clipped to -0.2: coef = 0.199 * (1 - 0.2 * 1000/10000) = 0.199 * 0.98 = 0.19502
    c.update(0.0, n_steps=1000)
    assert c.value == pytest.approx(0.19502)


def test_kl_controller_state_roundtrip():
    a = AdaptiveKLController(0.2, 6.0, 10000)
    a.update(9.0, 100)
    b = AdaptiveKLController(0.2, 6.0, 10000)
    b.load_state_dict(a.state_dict())
    assert b.value == a.value == pytest.approx(0.2004)
    f = FixedKLController(0.05)
    f.update(100.0, 1000)
    assert f.value == 0.05
    g = FixedKLController(1.0)
    g.load_state_dict(f.state_dict())
    assert g.value == 0.05


# --- rewards --------------------------------------------------------------------------------

def test_compute_rewards_score_on_last_unmasked_token():
    # kl_coef 0.1
    # row 0: kl = logp - ref = [0.5, 0, 1.0] -> -0.1*kl = [-0.05, 0, -0.1]; score 1 on token 2 -> [-0.05, 0, 0.9]
    # row 1: kl = [-0.5, 0, (masked)] -> [0.05, 0, 0]; score -3 on token 1 (its last) -> [0.05, -3, 0]
    logp = t([-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0])
    ref = t([-1.5, -2.0, -1.5], [-0.5, -1.0, -4.0])
    r = compute_rewards(t(1.0, -3.0), logp, ref, t([1, 1, 1], [1, 1, 0]), kl_coef=0.1)
    close(r, t([-0.05, 0.0, 0.9], [0.05, -3.0, 0.0]))


# --- group (leave-one-out) advantages ---------------------------------------------------------

def test_group_advantages_leave_one_out_on_every_token():
    # groups of 3 rows (one prompt each); a row's return is its summed reward
    # group 0: returns 1, -1, -1 -> baselines (-1-1)/2 = -1, (1-1)/2 = 0, 0 -> advantages 2, -1, -1
    # group 1: returns 1, 1, 1 (the rollouts agree) -> advantages 0, 0, 0: nothing to learn from it
    # row 1's KL terms count: -0.5 + -0.5 = -1; row 2's masked token (5.0) does not
    rewards = t([0.0, 1.0], [-0.5, -0.5], [-1.0, 5.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5])
    mask = t([1, 1], [1, 1], [1, 0], [1, 1], [1, 1], [1, 1])
    adv, ret = group_advantages(rewards, mask, 3)
    close(adv, t([2.0, 2.0], [-1.0, -1.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]))
    close(ret, t([1.0, 1.0], [-1.0, -1.0], [-1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]))


@pytest.mark.parametrize("rows, size", [(4, 1), (6, 4)])
def test_group_advantages_need_groups_that_divide_the_batch(rows, size):
    with pytest.raises(ValueError, match="groups of at least 2"):
        group_advantages(torch.zeros(rows, 2), torch.ones(rows, 2), size)


# --- helpers --------------------------------------------------------------------------------

def test_masked_statistics():
    x, m = t([1.0, 2.0, 3.0, 100.0]), t([1, 1, 1, 0])
    close(masked_mean(x, m), 2.0)
    close(masked_var(x, m), 1.0)  # ((1-2)^2 + 0 + (3-2)^2) / (3 - 1)
    close(masked_var(x, m, unbiased=False), 2 / 3)
    close(whiten(x, m), t([-1.0, 0.0, 1.0, 0.0]), tol=1e-4)  # (x - 2) / 1, masked -> 0
    assert explained_variance(x, x, m) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(4), x, m) == pytest.approx(0.0)  # Var(R - 0) / Var(R) = 1


# --- response masking with a real tokenizer ---------------------------------------------------

@pytest.fixture(scope="module")
def tok():
    return testing.make_tokenizer(testing.fixture_texts())


def _pad_rows(rows, pad):
    width = max(map(len, rows))
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


def test_response_mask_after_stop_string(tok):
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    pad, eos = tok.pad_token_id, tok.eos_token_id
    # the tag is several tokens ("positive", "</", "Judgement", ">"); all four are kept
    assert tok.convert_ids_to_tokens(enc("positive</Judgement>")) == ["positive", "</", "Judgement", ">"]
    stop_then_more = enc("positive</Judgement>") + enc(" the film")  # 4 kept, the rest masked
    # the stop string built from odd pieces: "</Ju" + "dgement" + ">" + "x": it completes on ">"
    pieces = enc("negative") + enc("</Ju") + enc("dgement") + enc(">") + enc("x")
    n_pieces = len(enc("negative") + enc("</Ju") + enc("dgement") + enc(">"))
    no_stop = enc("positive and more")  # neither stop nor EOS: every token up to the padding counts
    eos_first = enc("neg") + [eos] + enc("</Judgement>")  # EOS ends it (EOS kept)
    rows = [stop_then_more, pieces, no_stop, eos_first]
    mask = response_mask(_pad_rows(rows, pad), tok)
    width = mask.shape[1]
    expected = [4, n_pieces, len(no_stop), len(enc("neg")) + 1]
    for row, n in zip(mask.tolist(), expected):
        assert row == [1.0] * n + [0.0] * (width - n)


def test_response_mask_pad_equal_to_eos(tok):
    # tokenizers without a pad token pad with EOS: the first EOS is the end and is kept
    enc = tok.encode("positive", add_special_tokens=False)
    eos = tok.eos_token_id
    ids = torch.tensor([enc + [eos, eos, eos]])
    assert response_mask(ids, tok, pad_token_id=eos).tolist() == [[1.0] * (len(enc) + 1) + [0.0, 0.0]]
