"""The math RL methods share, as small pure functions: group advantages, dynamic sampling, KL
(estimators and PPO's adaptive coefficient), GAE and PPO's losses."""

from rlvf.rl.advantages import SCALE_MODES, group_advantages, scale_for_loss
from rlvf.rl.dynamic import DynamicStats, dynamic_sample, is_zero_variance, zero_variance_fraction
from rlvf.rl.gae import gae, token_rewards, whiten
from rlvf.rl.kl import KL_ESTIMATORS, KLController, kl_estimate, kl_k1, kl_k3, masked_mean
from rlvf.rl.ppo_loss import PolicyLoss, entropy_from_logits, explained_variance, policy_loss, value_loss

__all__ = [
    "KL_ESTIMATORS",
    "SCALE_MODES",
    "DynamicStats",
    "KLController",
    "PolicyLoss",
    "dynamic_sample",
    "entropy_from_logits",
    "explained_variance",
    "gae",
    "group_advantages",
    "is_zero_variance",
    "kl_estimate",
    "kl_k1",
    "kl_k3",
    "masked_mean",
    "policy_loss",
    "scale_for_loss",
    "token_rewards",
    "value_loss",
    "whiten",
    "zero_variance_fraction",
]
