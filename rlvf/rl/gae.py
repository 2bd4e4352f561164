"""Per-token rewards, generalized advantage estimation and whitening for PPO on completions.

A completion is one episode whose actions are its tokens. The verifier (or reward model)
gives one score for the whole completion, paid on its last real token; every token also
pays the KL penalty towards the reference. Positions where `mask` is 0 (right padding after
a short completion) are not part of the episode: they earn nothing, their value is never
bootstrapped from, and their advantages and returns are 0. A truncated completion (it hit
the token limit, mask all ones) ends at the limit like any other: its score sits on the
last position, because the verifier judged exactly those tokens.
"""

from __future__ import annotations

import torch

from rlvf.rl.kl import masked_mean


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (0 for an all-padding row)."""
    n = mask.long().sum(dim=1)
    return (n - 1).clamp(min=0)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """-kl_coef * kl on every real token, plus each row's score on its last real token."""
    mask = mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    has = mask.sum(dim=1) > 0
    end = last_index(mask)
    rewards[rows[has], end[has]] += scores.to(rewards.dtype)[has]
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (batch, tokens), zero where `mask` is 0.

    delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t and A_t = delta_t + gamma * lam * m_{t+1} * A_{t+1}:
    the episode ends at the last real token (m_{t+1} = 0 after it), so padding feeds nothing
    back. returns = A + V (the value target).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(values)
    next_adv = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    next_mask = torch.zeros_like(values[:, 0])
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        next_adv = (delta + gamma * lam * next_mask * next_adv) * mask[:, t]
        adv[:, t] = next_adv
        next_value, next_mask = values[:, t], mask[:, t]
    returns = (adv + values) * mask
    return adv, returns


def whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8, mean_of=masked_mean
) -> torch.Tensor:
    """(x - mean) / std over the real tokens (population std); padding stays 0.

    `shift_mean=False` only rescales (keeps the sign of every advantage). `mean_of` takes
    the masked mean (`rlvf.train.dist.Group.masked_mean`: over every rank's rows)."""
    mean = mean_of(x, mask)
    var = mean_of((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean * torch.rsqrt(var + eps)
    return out * mask.to(x.dtype)
