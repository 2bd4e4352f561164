"""Uncertainty for comparisons: the 2x stderr rule, exact McNemar, paired bootstrap.

A delta's verdict is "significant" only when the 2x stderr rule (seed 004: a difference
smaller than twice the combined stderr is not meaningful) and the paired test (exact
McNemar over per-task outcomes) agree; anything else is reported as not significant,
naming the one test that fired, if any.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240611


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (binomial, p=1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = math.fsum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def two_stderr(delta: float, se_a: float, se_b: float) -> tuple[float, bool]:
    """(combined stderr, whether |delta| exceeds twice it)."""
    se = math.sqrt(se_a**2 + se_b**2)
    return se, abs(delta) > 2.0 * se


@lru_cache(maxsize=32)
def _weights(n_tasks: int, n_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(BOOTSTRAP_SEED + 7919 * n_tasks + n_seeds)
    w = rng.multinomial(n_tasks, np.full(n_tasks, 1.0 / n_tasks), size=BOOTSTRAP_RESAMPLES)
    v = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=BOOTSTRAP_RESAMPLES)
    return w.astype(np.int64), v.astype(np.int64)


def paired_bootstrap(diff: np.ndarray, scale: float = 1.0) -> tuple[float, float, float]:
    """Paired bootstrap over tasks x seeds of the mean of `diff * scale`, where `diff` is a
    tasks x seeds matrix of per-task, per-seed differences (integer counts of passing
    samples, with `scale` = 1/n_samples, or plain rates). Returns (ci_low, ci_high,
    p_two_sided) for a 95% percentile interval; deterministic (fixed resampling weights).
    Integer input is summed exactly, without BLAS threads."""
    diff = np.asarray(diff)
    if diff.ndim == 1:
        diff = diff[:, None]
    t, s = diff.shape
    if t == 0 or not np.any(diff):
        return 0.0, 0.0, 1.0
    w, v = _weights(t, s)
    if not np.issubdtype(diff.dtype, np.integer):
        w, v = w.astype(float), v.astype(float)
    sums = ((w @ diff) * v).sum(axis=1)
    means = sums * (scale / (t * s))
    lo, hi = np.quantile(means, [0.025, 0.975])
    p = 2.0 * min(float(np.mean(means <= 0.0)), float(np.mean(means >= 0.0)))
    return float(lo), float(hi), min(1.0, p)


def verdict(delta: float, beyond_2se: bool, p_paired: float | None) -> str:
    """One word-group verdict for a delta; non-significant ones say so."""
    paired = p_paired is not None and p_paired < ALPHA
    if beyond_2se and paired:
        return "significant improvement" if delta > 0 else "significant regression"
    if beyond_2se:
        return "not significant (2×SE rule only)"
    if paired:
        return "not significant (paired test only)"
    return "not significant"


def is_significant(v: str) -> bool:
    return v.startswith("significant")
