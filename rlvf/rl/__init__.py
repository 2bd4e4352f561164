"""The math RL methods share, as small pure functions: advantages, dynamic sampling, KL."""

from rlvf.rl.advantages import SCALE_MODES, group_advantages, scale_for_loss
from rlvf.rl.dynamic import DynamicStats, dynamic_sample, is_zero_variance, zero_variance_fraction
from rlvf.rl.kl import kl_k1, kl_k3, masked_mean

__all__ = [
    "SCALE_MODES",
    "DynamicStats",
    "dynamic_sample",
    "group_advantages",
    "is_zero_variance",
    "kl_k1",
    "kl_k3",
    "masked_mean",
    "scale_for_loss",
    "zero_variance_fraction",
]
