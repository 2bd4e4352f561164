"""PPO's math against small cases worked out by hand (the numbers are written out below),
including padded tokens and a truncated completion, and the rule that lets a reward model
break the verifier's ties without ever lifting a failing completion over a passing one."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rlvf.errors import UserError
from rlvf.rewards.combine import RewardSpec, combine, parse_reward, rewards_for
from rlvf.rl.gae import gae, last_index, token_rewards, whiten
from rlvf.rl.kl import KLController, kl_estimate
from rlvf.rl.ppo_loss import entropy_from_logits, explained_variance, policy_loss, value_loss

# Row 0 is a truncated completion (it used every position: no padding); row 1 ended after 2
# tokens and its third position is padding (garbage values there must not leak).
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def near(t: torch.Tensor, want: list, atol: float = 1e-6) -> None:
    torch.testing.assert_close(t, torch.tensor(want, dtype=t.dtype), atol=atol, rtol=0)


def test_terminal_score_on_the_last_real_token_and_kl_on_every_real_token():
    kl = torch.tensor([[0.1, 0.2, -0.1], [0.05, 0.0, 7.0]])
    r = token_rewards(torch.tensor([1.0, 1.0]), kl, MASK, kl_coef=0.5)
    # row 0: -0.5*[0.1, 0.2, -0.1] + [0, 0, 1]; row 1: -0.5*[0.05, 0] + [0, 1], padding 0
    near(r, [[-0.05, -0.1, 1.05], [-0.025, 1.0, 0.0]])
    assert last_index(MASK).tolist() == [2, 1]


def test_gae_by_hand_with_padding_and_truncation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [0.3, 0.6, 9.0]])
    adv, ret = gae(rewards, values, MASK, gamma=1.0, lam=0.5)
    # row 0: d2 = 1 - 0.4 = 0.6; d1 = 0.4 - 0.2 = 0.2, A1 = 0.2 + 0.5*0.6 = 0.5;
    #        d0 = 0.2 - 0.5 = -0.3, A0 = -0.3 + 0.5*0.5 = -0.05
    # row 1: the episode ends at t=1 (V=9 at the padding is never bootstrapped):
    #        d1 = 1 - 0.6 = 0.4; d0 = 0.6 - 0.3 = 0.3, A0 = 0.3 + 0.5*0.4 = 0.5
    near(adv, [[-0.05, 0.5, 0.6], [0.5, 0.4, 0.0]])
    near(ret, [[0.45, 0.7, 1.0], [0.8, 1.0, 0.0]])
    # gamma 0.9, lam 1 (Monte-Carlo returns): row 1 returns = [0.9*1, 1]
    _, ret = gae(rewards, values, MASK, gamma=0.9, lam=1.0)
    assert ret[1].tolist() == pytest.approx([0.9, 1.0, 0.0])


def test_whiten_over_real_tokens_only():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 999.0]])
    # real values 1..5: mean 3, population variance 2
    s = 1 / math.sqrt(2)
    near(whiten(x, MASK), [[-2 * s, -s, 0.0], [s, 2 * s, 0.0]])
    near(whiten(x, MASK, shift_mean=False), [[1 * s, 2 * s, 3 * s], [4 * s, 5 * s, 0.0]])


def test_clipped_policy_loss_by_hand():
    ratio = torch.tensor([[1.5, 0.5, 1.0, 5.0]])
    logp = torch.log(ratio)
    adv = torch.tensor([[1.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])  # the padded token (ratio 5, A 100) counts for nothing
    out = policy_loss(logp, torch.zeros_like(logp), adv, mask, cliprange=0.2)
    # max(-A r, -A clip(r)): -1.2 (clipped), -0.5, 1.0 -> mean -0.7/3
    assert float(out.loss) == pytest.approx(-0.7 / 3)
    assert float(out.clip_frac) == pytest.approx(1 / 3)
    # k3(old||new): 1/1.5 - 1 + ln 1.5 = 0.072132, 2 - 1 - ln 2 = 0.306853, 0
    assert float(out.approx_kl) == pytest.approx((0.0721318 + 0.3068528) / 3, abs=1e-6)


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0, 0.6, 50.0]])
    old = torch.tensor([[0.5, 0.5, 0.5, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 0.6, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, frac = value_loss(values, old, returns, mask, cliprange_value=0.2)
    # clipped V: 0.7, 0.3, 0.6 -> max((V-R)^2, (Vc-R)^2) = 1.69, 0.09, 0 -> 0.5 * 1.78 / 3
    assert float(loss) == pytest.approx(0.5 * 1.78 / 3)
    assert float(frac) == pytest.approx(2 / 3)


def test_explained_variance_and_entropy():
    mask = torch.tensor([[1, 1, 1, 0]])
    returns = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    values = torch.tensor([[1.0, 2.0, 2.0, -100.0]])
    # Var(R) = 2/3, Var(R - V) = Var([0, 0, 1]) = 2/9 -> 1 - (2/9)/(2/3) = 2/3
    assert explained_variance(values, returns, mask) == pytest.approx(2 / 3)
    assert math.isnan(explained_variance(values, torch.ones_like(returns), mask))
    assert float(entropy_from_logits(torch.zeros(1, 4))[0]) == pytest.approx(math.log(4))


def test_kl_estimators_and_controller():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert float(kl_estimate(logp, ref, "k1")) == pytest.approx(math.log(2))
    assert float(kl_estimate(logp, ref, "k3")) == pytest.approx(0.5 + math.log(2) - 1)
    with pytest.raises(ValueError, match="k2"):
        kl_estimate(logp, ref, "k2")
    fixed = KLController(0.1)
    assert fixed.update(5.0, 10) == 0.1 and not fixed.adaptive
    ada = KLController(0.1, target=0.05, horizon=100)
    # KL twice the target: error clipped to +0.2 -> 0.1 * (1 + 0.2 * 10/100) = 0.102
    assert ada.update(0.1, 10) == pytest.approx(0.102)
    # KL 0.8 x target: error -0.2 -> 0.102 * (1 - 0.02) = 0.09996
    assert ada.update(0.04, 10) == pytest.approx(0.09996)


def test_reward_model_only_breaks_the_verifiers_ties():
    verifier = [0.0, 0.0, 1.0, None, 0.5]
    rm = [3.0, 1.0, -2.0, 9.0, 0.0]
    # levels {0, 0.5, 1}: smallest gap 0.5 -> delta 0.25; the two 0s are ordered by the RM
    # (u = 1, 0); single members of a level get u = 0.5; None stays None
    assert combine(verifier, rm) == pytest.approx([0.25, 0.0, 1.125, None, 0.625])
    # binary: the RM loves the failing one and hates the passing one; the order holds
    assert combine([0.0, 1.0], [100.0, -100.0]) == pytest.approx([0.25, 1.25])
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 8)
        v = [rng.choice([None, 0.0, 0.25, 1 / 3, 0.5, 0.9, 1.0]) for _ in range(n)]
        s = [rng.uniform(-5, 5) for _ in range(n)]
        out = combine(v, s)
        for (a, x), (b, y) in ((p, q) for p in zip(v, out, strict=True) for q in zip(v, out, strict=True)):
            if a is not None and b is not None and a < b:
                assert x < y  # the verifier's order is never reversed
        assert all(x < 1.0 for a, x in zip(v, out, strict=True) if a is not None and a < 1.0)
        assert all(x >= 1.0 for a, x in zip(v, out, strict=True) if a == 1.0)


def test_reward_spec_parsing_and_rewards_for_plain_callables():
    assert parse_reward("verifier") == RewardSpec(True)
    assert parse_reward("rm:models:/rlvf-rm/3") == RewardSpec(False, "models:/rlvf-rm/3")
    assert parse_reward("verifier+rm", "abc123") == RewardSpec(True, "abc123")
    with pytest.raises(UserError, match="name the reward model"):
        parse_reward("verifier+rm")
    with pytest.raises(UserError, match="not one of"):
        parse_reward("rm-please")

    def scorer(prompts, completions):
        return [float(len(c)) for c in completions]

    prompts, comps = ["p"] * 3, ["a", "bbb", "cc"]
    assert rewards_for(RewardSpec(True), [0.0, 1.0, None], prompts, comps, None) == [0.0, 1.0, None]
    assert rewards_for(RewardSpec(False, "x"), [0.0, 1.0, None], prompts, comps, scorer) == [1.0, 3.0, None]
    assert rewards_for(RewardSpec(True, "x"), [0.0, 0.0, None], prompts, comps, scorer) == pytest.approx(
        [0.0, 0.5, None]
    )
