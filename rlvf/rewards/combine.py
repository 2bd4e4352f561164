"""Which reward PPO pays, and the rule that lets a reward model break the verifier's ties.

`ppo.reward` is `verifier`, `rm:<ref>` (a registered reward model alone) or
`verifier+rm:<ref>`. A reward model is a learned guess; the verifier is ground truth. So in
`verifier+rm` the reward model may only *order completions the verifier scores equally*:

    reward = verifier + delta * u

where u in [0, 1] is the completion's reward-model score min-max scaled among the completions
of its batch with the same verifier score (0.5 when there is nothing to order), and delta is
half the smallest gap between distinct verifier levels in the batch, counting the lowest
reward and a pass (1.0) as levels. Consequences (tested):

- inside a batch the verifier's order is kept strictly (a bonus is below half a gap);
- across batches a completion that did not pass stays below 1.0, and every pass is >= 1.0:
  no reward-model score lifts a failing completion over a passing one;
- a completion the verifier could not judge (None) stays None: skipped, never scored.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlvf.errors import UserError

Scorer = Callable[[list[str], list[str]], list[float]]


@dataclass(frozen=True)
class RewardSpec:
    """What `ppo.reward` asks for: the verifier, a reward model reference, or both."""

    verifier: bool
    rm: str | None = None

    @property
    def label(self) -> str:
        if self.rm is None:
            return "verifier"
        return f"verifier+rm:{self.rm}" if self.verifier else f"rm:{self.rm}"


def parse_reward(text: str, reward_model: str | None = None) -> RewardSpec:
    """`verifier` | `rm[:<ref>]` | `verifier+rm[:<ref>]`; a bare `rm` takes `reward_model`
    (`ppo.reward_model`: a run id or a models:/ URI)."""
    t = (text or "").strip()
    if t == "verifier":
        return RewardSpec(verifier=True)
    for prefix, verifier in (("verifier+rm", True), ("rm", False)):
        if t == prefix or t.startswith(prefix + ":"):
            ref = t[len(prefix) + 1 :].strip() or (reward_model or "").strip()
            if not ref:
                raise UserError(
                    f"ppo.reward '{text}': name the reward model ('{prefix}:<run id or models:/ URI>' "
                    "or ppo.reward_model)"
                )
            return RewardSpec(verifier=verifier, rm=ref)
    raise UserError(
        f"ppo.reward '{text}' is not one of: verifier, rm:<run id or models:/ URI>, "
        "verifier+rm:<run id or models:/ URI>"
    )


def load_scorer(ref: str) -> Scorer:
    """The registered reward model `ref` as a `(prompts, completions) -> scores` callable.

    Loaded lazily through `rlvf.rewards.reward_model.load_reward_model(ref)` (the reward-model
    method's module), whose object has `.score(prompts, completions) -> list[float]`."""
    try:
        from rlvf.rewards.reward_model import load_reward_model
    except ImportError:
        raise UserError(
            f"ppo.reward: a reward model ('{ref}') needs rlvf.rewards.reward_model (the `rm` method), "
            "which this installation does not have"
        ) from None
    model = load_reward_model(ref)
    return model.score


def _levels(values: Sequence[float], lowest: float, top: float) -> list[float]:
    return sorted({*values, lowest, top})


def combine(
    verifier: Sequence[float | None],
    rm: Sequence[float],
    *,
    lowest: float = 0.0,
    top: float = 1.0,
) -> list[float | None]:
    """The verifier rewards with ties broken by the reward model (see the module doc)."""
    if len(verifier) != len(rm):
        raise ValueError(f"{len(verifier)} verifier rewards for {len(rm)} reward-model scores")
    judged = [v for v in verifier if v is not None]
    levels = _levels(judged, lowest, top)
    gaps = [b - a for a, b in itertools.pairwise(levels) if b - a > 0]
    delta = 0.5 * min(gaps) if gaps else 0.5
    out: list[float | None] = []
    for v, s in zip(verifier, rm, strict=True):
        if v is None:
            out.append(None)
            continue
        if not math.isfinite(s):
            raise ValueError(f"reward model score {s} is not finite")
        tied = [r for w, r in zip(verifier, rm, strict=True) if w == v]
        lo, hi = min(tied), max(tied)
        u = 0.5 if hi <= lo else (s - lo) / (hi - lo)
        out.append(v + delta * u)
    return out


def rewards_for(
    spec: RewardSpec,
    verifier: Sequence[float | None] | None,
    prompts: list[str],
    completions: list[str],
    scorer: Scorer | None,
    lowest: float = 0.0,
) -> list[float | None]:
    """The rewards `spec` pays for a batch: verifier scores, RM scores, or the combination.

    Under `rm` alone a completion the verifier could not judge is still None (skipped): the
    verifier runs for the hacking rates and the rollouts either way."""
    if spec.rm is None:
        assert verifier is not None
        return list(verifier)
    if scorer is None:
        raise ValueError("reward: a reward model was asked for but none is loaded")
    scores = [float(x) for x in scorer(prompts, completions)]
    if len(scores) != len(completions):
        raise ValueError(f"reward model gave {len(scores)} scores for {len(completions)} completions")
    if not spec.verifier:
        if verifier is None:
            return list(scores)
        return [None if v is None else s for v, s in zip(verifier, scores, strict=True)]
    assert verifier is not None
    return combine(verifier, scores, lowest=lowest)


__all__ = ["RewardSpec", "Scorer", "combine", "load_scorer", "parse_reward", "rewards_for"]
