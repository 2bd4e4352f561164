"""Dynamic sampling (DAPO): groups whose rewards are all equal teach nothing; replace them.

With group-relative advantages, a prompt whose completions all passed (or all failed) has
advantage 0 everywhere and only dilutes the step. `dynamic_sample` keeps the informative
groups of a batch, draws groups for further prompts to fill the gaps, at most `max_draws`
times, and pads with the least bad zero-variance groups only when replacements ran out, so
the batch size the trainer expects never changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

G = TypeVar("G")


def is_zero_variance(rewards: Sequence[float | None], tol: float = 1e-9) -> bool:
    """True when the judged rewards (None/NaN left out) cannot tell completions apart."""
    vals = [r for r in rewards if r is not None and not math.isnan(r)]
    return len(vals) < 2 or max(vals) - min(vals) <= tol


def zero_variance_fraction(groups: Sequence[Sequence[float | None]]) -> float:
    return sum(is_zero_variance(g) for g in groups) / len(groups) if groups else 0.0


@dataclass(frozen=True)
class DynamicStats:
    """What filtering did in one step (logged as metrics)."""

    zero_variance_before: float  # share of the first draw's groups with equal rewards
    zero_variance_after: float  # share of the groups that reach the loss
    draws: int  # extra draws made
    groups_drawn: int  # extra groups generated and judged
    groups_dropped: int  # zero-variance groups left out

    def as_metrics(self, prefix: str = "dynamic_sampling/") -> dict[str, float]:
        return {
            f"{prefix}zero_variance_before": self.zero_variance_before,
            f"{prefix}zero_variance_after": self.zero_variance_after,
            f"{prefix}draws": float(self.draws),
            f"{prefix}groups_drawn": float(self.groups_drawn),
            f"{prefix}groups_dropped": float(self.groups_dropped),
        }


def dynamic_sample(
    first: Sequence[G],
    draw: Callable[[int], Sequence[G]],
    rewards_of: Callable[[G], Sequence[float | None]],
    max_draws: int = 2,
) -> tuple[list[G], DynamicStats]:
    """`len(first)` groups, informative ones first; `draw(k)` generates and judges k more groups.

    Order: the informative groups of `first` in their order, then informative drawn ones,
    then (only if still short) zero-variance groups from `first`.
    """
    need = len(first)
    kept = [g for g in first if not is_zero_variance(rewards_of(g))]
    zero = [g for g in first if is_zero_variance(rewards_of(g))]
    before = len(zero) / need if need else 0.0
    draws = drawn = 0
    while len(kept) < need and draws < max_draws:
        more = list(draw(need - len(kept)))
        draws += 1
        drawn += len(more)
        if not more:
            break
        kept.extend(g for g in more if not is_zero_variance(rewards_of(g)))
    kept = kept[:need]
    short = need - len(kept)
    kept.extend(zero[:short])
    n_zero_after = sum(is_zero_variance(rewards_of(g)) for g in kept)
    return kept, DynamicStats(
        zero_variance_before=before,
        zero_variance_after=n_zero_after / need if need else 0.0,
        draws=draws,
        groups_drawn=drawn,
        groups_dropped=len(first) + drawn - need if need else 0,
    )
