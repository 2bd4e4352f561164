"""Rewards for RL methods: one verifier reward shared by GRPO, PPO and what follows."""

from rlvf.rewards.verifier import (
    LOWEST_CATEGORIES,
    RATE_NAMES,
    REWARD_MODES,
    InfraFailureError,
    Scored,
    VerifierReward,
    batch_rates,
    check_infra_rate,
    reward_of,
    score_completions,
)

__all__ = [
    "LOWEST_CATEGORIES",
    "RATE_NAMES",
    "REWARD_MODES",
    "InfraFailureError",
    "Scored",
    "VerifierReward",
    "batch_rates",
    "check_infra_rate",
    "reward_of",
    "score_completions",
]
