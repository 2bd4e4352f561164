"""KL estimators between the policy and a reference, per token (Schulman, "Approximating KL").

With r = p_ref / p_policy at tokens sampled from the policy: k1 = -log r is unbiased but
noisy and can go negative; k3 = (r - 1) - log r is unbiased, always >= 0 and lower-variance
(GRPO's choice). PPO reuses both.
"""

from __future__ import annotations

import torch


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log p - log p_ref, per token."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """exp(log p_ref - log p) - (log p_ref - log p) - 1, per token."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the positions where `mask` is 1 (padding and cut tokens count for nothing)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)
