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


KL_ESTIMATORS = ("k1", "k3")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(policy || reference) by `estimator` (k1 or k3)."""
    if estimator == "k1":
        return kl_k1(logp, ref_logp)
    if estimator == "k3":
        return kl_k3(logp, ref_logp)
    raise ValueError(f"kl estimator '{estimator}' is not one of {', '.join(KL_ESTIMATORS)}")


class KLController:
    """The KL penalty coefficient: fixed, or adaptive towards a target KL (Ziegler et al. 2019).

    Adaptive: after each rollout batch with measured KL `kl` over `n` samples,
    coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon, so the coefficient grows
    while the policy drifts past the target and shrinks while it stays closer, by at most
    20% of n / horizon per update. `target=None`: fixed.
    """

    def __init__(self, coef: float, target: float | None = None, horizon: int = 10000) -> None:
        if coef < 0:
            raise ValueError(f"kl coefficient must be >= 0 (got {coef})")
        if target is not None and target <= 0:
            raise ValueError(f"target KL must be > 0 (got {target})")
        if horizon < 1:
            raise ValueError(f"KL horizon must be at least 1 (got {horizon})")
        self.coef = coef
        self.target = target
        self.horizon = horizon

    @property
    def adaptive(self) -> bool:
        return self.target is not None

    def update(self, kl: float, n: int) -> float:
        """Move the coefficient after a batch of `n` samples whose mean KL was `kl`; returns it."""
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.coef *= 1.0 + error * n / self.horizon
        return self.coef
