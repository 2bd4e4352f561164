"""Summaries over many outcomes: pass@k, partial credit, counts per category and flag."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from rlvf.records import Outcome
from rlvf.verify.categories import CATEGORIES
from rlvf.verify.passk import mean_pass_at_k


def summarize(outcomes: Sequence[Outcome], ks: Iterable[int] = (1, 10, 100)) -> dict[str, Any]:
    """pass@k for every k that every task has enough samples for, plus category and flag counts."""
    per_task: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        per_task[o.task_id].append(o)
    counts = [(len(v), sum(o.passed for o in v)) for v in per_task.values()]
    min_n = min((n for n, _ in counts), default=0)
    categories = Counter(o.category for o in outcomes)
    flags = Counter(f for o in outcomes for f in o.flags)
    return {
        "n_tasks": len(per_task),
        "n_samples": len(outcomes),
        "pass_at_k": {f"pass@{k}": round(mean_pass_at_k(counts, k), 6) for k in ks if 1 <= k <= min_n},
        "partial_credit": round(sum(o.partial_credit for o in outcomes) / len(outcomes), 6)
        if outcomes
        else 0.0,
        "categories": {c: categories[c] for c in CATEGORIES if categories[c]},
        "flags": dict(sorted(flags.items())),
    }
