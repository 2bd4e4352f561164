"""Group-relative advantages (GRPO and its variants).

Each prompt's `group_size` completions are compared with each other: the advantage is the
reward minus the group's mean, divided by a standard deviation unless scaling is off.
Dr. GRPO (Liu et al. 2025) drops the division: dividing by a small group std inflates the
weight of nearly-solved or nearly-failed prompts. Rewards of NaN (a completion the
verifier could not judge) take no part in the mean or std and get advantage 0.
"""

from __future__ import annotations

import torch

SCALE_MODES = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")


def scale_for_loss(loss_type: str, scale_rewards: str | None = None) -> str:
    """The std scaling a loss type implies: 'none' for dr_grpo, else `scale_rewards` or 'group'."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type '{loss_type}' is not one of {', '.join(LOSS_TYPES)}")
    if scale_rewards is not None and scale_rewards not in SCALE_MODES:
        raise ValueError(f"scale_rewards '{scale_rewards}' is not one of {', '.join(SCALE_MODES)}")
    if loss_type == "dr_grpo":
        return "none"
    return scale_rewards or "group"


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Unbiased (Bessel) std ignoring NaN, as TRL computes it; 0 where fewer than 2 values."""
    ok = ~torch.isnan(x)
    n = ok.sum() if dim is None else ok.sum(dim=dim, keepdim=True)
    mean = torch.nanmean(x) if dim is None else torch.nanmean(x, dim=dim, keepdim=True)
    sq = torch.where(ok, (x - mean) ** 2, torch.zeros_like(x))
    total = sq.sum() if dim is None else sq.sum(dim=dim, keepdim=True)
    return torch.where(n > 1, total / (n - 1).clamp(min=1), torch.zeros_like(total)).sqrt()


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Advantages for rewards laid out group by group (shape (n_groups * group_size,))."""
    if scale not in SCALE_MODES:
        raise ValueError(f"scale '{scale}' is not one of {', '.join(SCALE_MODES)}")
    rewards = rewards.float()
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    centred = grouped - mean
    if scale == "group":
        centred = centred / (_nanstd(grouped, dim=1) + eps)
    elif scale == "batch":
        centred = centred / (_nanstd(rewards) + eps)
    return torch.nan_to_num(centred.reshape(-1), nan=0.0)
