"""Advantages, dynamic sampling and KL estimators against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlvf.rl import (
    dynamic_sample,
    group_advantages,
    is_zero_variance,
    kl_k1,
    kl_k3,
    masked_mean,
    scale_for_loss,
    zero_variance_fraction,
)

NAN = float("nan")


def test_grpo_scales_by_the_group_std() -> None:
    # Group 1: [1, 0, 0, 1] mean 0.5, unbiased std sqrt(1/3) = 0.577350 -> +-0.866025.
    # Group 2: [0.5, 0.5, 0.5, 0.5]: zero variance -> all 0.
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(r, 4, "group", eps=0.0)
    a = 0.5 / math.sqrt(1 / 3)
    assert adv.tolist() == pytest.approx([a, -a, -a, a, 0, 0, 0, 0], abs=1e-6)


def test_dr_grpo_only_centres() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.25, 0.75])
    assert scale_for_loss("dr_grpo", "group") == "none"
    adv = group_advantages(r, 3, scale_for_loss("dr_grpo"))
    # means 1/3 and 1/3 (0 + 0.25 + 0.75)
    assert adv.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, -1 / 3, -1 / 12, 5 / 12], abs=1e-6)


def test_batch_scaling_uses_one_std() -> None:
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    # group means 0.5 and 1; batch mean 0.75, unbiased batch std = sqrt(0.75/3) = 0.5
    adv = group_advantages(r, 2, "batch", eps=0.0)
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-6)
    assert scale_for_loss("dapo", None) == "group"
    assert scale_for_loss("bnpo", "batch") == "batch"
    with pytest.raises(ValueError, match="loss_type"):
        scale_for_loss("ppo")


def test_unjudged_completions_take_no_part_and_get_zero() -> None:
    # [1, NaN, 0]: mean 0.5 over the two judged, unbiased std sqrt(0.5) = 0.707107
    adv = group_advantages(torch.tensor([1.0, NAN, 0.0]), 3, "group", eps=0.0)
    assert adv.tolist() == pytest.approx([0.5 / math.sqrt(0.5), 0.0, -0.5 / math.sqrt(0.5)], abs=1e-6)


def test_kl_estimators() -> None:
    logp = torch.log(torch.tensor([0.5, 0.25]))
    ref = torch.log(torch.tensor([0.25, 0.25]))
    # k1 = log(0.5/0.25) = ln 2; k3 = r - 1 - log r with r = 0.25/0.5: 0.5 - 1 + ln 2 = 0.193147
    assert kl_k1(logp, ref).tolist() == pytest.approx([math.log(2), 0.0], abs=1e-6)
    assert kl_k3(logp, ref).tolist() == pytest.approx([0.5 - 1 + math.log(2), 0.0], abs=1e-6)
    # Masked mean: padding does not count.
    x = torch.tensor([[1.0, 3.0, 100.0], [2.0, 100.0, 100.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert masked_mean(x, m, dim=1).tolist() == pytest.approx([2.0, 2.0])


def test_zero_variance() -> None:
    assert is_zero_variance([1.0, 1.0, 1.0])
    assert is_zero_variance([0.0, None, 0.0])
    assert is_zero_variance([1.0, None, None])  # one judged completion cannot be compared
    assert not is_zero_variance([1.0, 0.0, None])
    assert zero_variance_fraction([[1, 1], [0, 1], [0, 0], [0.5, 0.25]]) == 0.5


def test_no_zero_variance_group_reaches_the_loss_when_replacements_exist() -> None:
    first = [("a", [1, 1]), ("b", [0, 1]), ("c", [0, 0]), ("d", [0.5, 0.5])]
    supply = iter([("e", [0, 0]), ("f", [1, 0]), ("g", [0.25, 0.75]), ("h", [1, 0])])
    asked: list[int] = []

    def draw(k: int):
        asked.append(k)
        return [next(supply) for _ in range(k)]

    kept, stats = dynamic_sample(first, draw, lambda g: g[1], max_draws=5)
    assert [g[0] for g in kept] == ["b", "f", "g", "h"]
    assert not any(is_zero_variance(g[1]) for g in kept)
    assert asked == [3, 1]  # e was zero-variance: one more draw for the last slot
    assert stats.zero_variance_before == 0.75
    assert stats.zero_variance_after == 0.0
    assert (stats.draws, stats.groups_drawn, stats.groups_dropped) == (2, 4, 4)


def test_bound_on_draws_pads_with_zero_variance_groups() -> None:
    first = [("a", [1, 1]), ("b", [0, 1]), ("c", [0, 0])]
    kept, stats = dynamic_sample(first, lambda k: [("z", [1, 1])] * k, lambda g: g[1], max_draws=2)
    assert [g[0] for g in kept] == ["b", "a", "c"]  # batch size kept; originals fill the gap
    assert stats.draws == 2 and stats.groups_drawn == 4
    assert stats.zero_variance_before == pytest.approx(2 / 3)
    assert stats.zero_variance_after == pytest.approx(2 / 3)
    kept, stats = dynamic_sample(first, lambda k: [], lambda g: g[1], max_draws=0)
    assert stats.draws == 0 and len(kept) == 3
