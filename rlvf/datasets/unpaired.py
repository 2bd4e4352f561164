"""Unpaired rows for KTO from a policy's own verified samples: (prompt, completion, label),
label True exactly when the sandboxed verifier passed the sample.

The rows are cut from the same per-prompt split as the preference pairs
(`rlvf.datasets.pairs.split_verified`: length filter, dedupe, flaky texts out), so KTO and
DPO agree on what counts as verified. Unlike pairs, a prompt whose samples all passed or all
failed still contributes rows. KTO's desirable/undesirable weights follow the class balance
(`kto_weights`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rlvf.datasets.pairs import _task_map, group_verified, split_verified
from rlvf.errors import UserError
from rlvf.records import Outcome, RecordError, Sample, Task

# KTO paper, Eq. (8): the weighted class ratio lambda_D n_D / (lambda_U n_U) belongs in [1, 4/3].
# TRL checks [1, 1.33] on weights rounded to 2 decimals, so the ratio is kept clear of both ends.
RATIO_BOUNDS = (1.0, 1.33)


def unpaired_from_samples(
    tasks: Mapping[str, Task] | Iterable[Task],
    samples: Sequence[Sample],
    outcomes: Sequence[Outcome],
    *,
    dedupe: bool = True,
    min_chars: int = 1,
    max_chars: int = 4000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows {prompt, completion, label, task_id, index, category, policy}, one per kept sample.

    The rows come in one seeded shuffle: TRL's KTO estimates its KL term by pairing each
    completion with its neighbour's prompt inside a sequentially sampled batch, so a batch
    must mix prompts (in sample order it would hold one prompt's samples only).
    """
    by_id = _task_map(tasks)
    rows: list[dict[str, Any]] = []
    stats = {
        "prompts": 0,
        "samples": 0,
        "dropped_length": 0,
        "dropped_duplicate": 0,
        "dropped_conflict": 0,
        "desirable": 0,
        "undesirable": 0,
    }
    for task_id, items in group_verified(samples, outcomes).items():
        task = by_id.get(task_id)
        if task is None:
            raise RecordError(f"kto: sample for unknown task '{task_id}'")
        stats["prompts"] += 1
        stats["samples"] += len(items)
        passed, failed, dropped = split_verified(
            items, dedupe=dedupe, min_chars=min_chars, max_chars=max_chars
        )
        for k, v in dropped.items():
            stats[f"dropped_{k}"] += v
        for s, o in sorted(passed + failed, key=lambda so: so[0].index):
            rows.append(
                {
                    "prompt": task.prompt,
                    "completion": s.completion,
                    "label": bool(o.passed),
                    "task_id": task_id,
                    "index": s.index,
                    "category": o.category,
                    "policy": s.policy,
                }
            )
        stats["desirable"] += len(passed)
        stats["undesirable"] += len(failed)
    digest = hashlib.sha256(f"kto:{seed}".encode()).digest()
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(rows)
    return rows, stats


def kto_weights(n_desirable: int, n_undesirable: int, ratio: float = 1.15) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) such that the weighted class ratio
    lambda_D n_D / (lambda_U n_U) equals `ratio`, with the majority class at weight 1 and the
    minority one weighted up (KTO paper, Eq. 8; TRL warns outside it)."""
    lo, hi = RATIO_BOUNDS
    if not lo <= ratio <= hi:
        raise UserError(f"kto: weight_ratio {ratio} is outside the KTO paper's range [{lo}, {hi}]")
    if n_desirable < 1 or n_undesirable < 1:
        raise UserError(
            f"kto: {n_desirable} desirable (passed) and {n_undesirable} undesirable (failed) rows; "
            "KTO needs both: sample more (generate.n_samples) or use other prompts"
        )
    if n_desirable >= ratio * n_undesirable:
        return 1.0, n_desirable / (ratio * n_undesirable)
    return ratio * n_undesirable / n_desirable, 1.0
