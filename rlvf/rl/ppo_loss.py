"""PPO's losses and diagnostics over padded token batches (Schulman et al. 2017).

Every mean is over real tokens only (`mask` 1), pooled over the minibatch: a long
completion weighs in proportion to its tokens, and padding counts for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvf.rl.kl import masked_mean


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    clip_frac: torch.Tensor  # share of tokens whose ratio the clip cut
    approx_kl: torch.Tensor  # k3 estimate of KL(old || new) over the minibatch
    ratio_mean: torch.Tensor


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> PolicyLoss:
    """Clipped surrogate: mean of max(-A r, -A clip(r, 1-e, 1+e)) with r = exp(logp - old_logp)."""
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped > unclipped).to(logp.dtype), mask)
        approx_kl = masked_mean(torch.exp(-log_ratio) - 1 + log_ratio, mask)
        ratio_mean = masked_mean(ratio, mask)
    return PolicyLoss(loss, clip_frac, approx_kl, ratio_mean)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clip fraction): 0.5 * mean of max((V - R)^2, (clip(V, V_old +- e) - R)^2)."""
    clipped_v = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    err = (values - returns) ** 2
    err_clipped = (clipped_v - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        frac = masked_mean((err_clipped > err).to(values.dtype), mask)
    return loss, frac


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits) (nats)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, mean_of=masked_mean
) -> float:
    """1 - Var(R - V) / Var(R) over real tokens: 1 a perfect critic, 0 no better than a
    constant, negative worse than one. NaN when the returns do not vary. `mean_of` takes the
    masked mean (over every rank's rows with several)."""
    r_mean = mean_of(returns, mask)
    var_r = mean_of((returns - r_mean) ** 2, mask)
    d = returns - values
    d_mean = mean_of(d, mask)
    var_d = mean_of((d - d_mean) ** 2, mask)
    if float(var_r) <= 0:
        return float("nan")
    return float(1 - var_d / var_r)
