"""Preference pairs from a policy's own verified samples (seed 002's pipeline parity).

Chosen and rejected are the *same* policy's samples for the *same* prompt, judged by the
same verifier: chosen passed, rejected failed. Nothing external is paired in, so the
contrastive signal targets the policy's own failures.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvf.errors import UserError
from rlvf.records import Outcome, Pair, RecordError, Sample, Task, read_jsonl, require_fields


@dataclass
class PairStats:
    """What happened on the way from samples to pairs (logged next to the dataset)."""

    prompts: int = 0
    samples: int = 0
    passed: int = 0
    failed: int = 0
    dropped_length: int = 0
    dropped_duplicate: int = 0
    dropped_conflict: int = 0  # the same text both passed and failed (flaky): kept out of both sides
    prompts_all_pass: int = 0
    prompts_all_fail: int = 0
    prompts_paired: int = 0
    pairs: int = 0
    rejected_categories: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rejected_categories"] = dict(sorted(self.rejected_categories.items()))
        return d


def normalise(text: str) -> str:
    """Completion text as compared for duplicates: trailing spaces and blank edges ignored."""
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip()


def _task_map(tasks: Mapping[str, Task] | Iterable[Task]) -> dict[str, Task]:
    return dict(tasks) if isinstance(tasks, Mapping) else {t.task_id: t for t in tasks}


def join_outcomes(samples: Sequence[Sample], outcomes: Sequence[Outcome]) -> list[tuple[Sample, Outcome]]:
    """Pair each sample with its outcome by (task_id, index); a missing outcome is an error."""
    by_key = {(o.task_id, o.index): o for o in outcomes}
    out = []
    for s in samples:
        o = by_key.get((s.task_id, s.index))
        if o is None:
            raise RecordError(f"sample {s.task_id}#{s.index} has no outcome (was it verified?)")
        out.append((s, o))
    return out


def split_verified(
    items: Sequence[tuple[Sample, Outcome]], *, dedupe: bool = True, min_chars: int = 1, max_chars: int = 4000
) -> tuple[list[tuple[Sample, Outcome]], list[tuple[Sample, Outcome]], dict[str, int]]:
    """One prompt's verified samples as (passed, failed, dropped counts), in the given order.

    Completions outside [min_chars, max_chars] (after stripping) are dropped, and with
    `dedupe` so are repeats of a text already seen on the same side; a text that both passed
    and failed (a flaky test) is kept out of both sides. Pairs and KTO's unpaired rows are
    both cut from this split, so the two datasets agree on what counts as verified.
    """
    dropped = {"length": 0, "duplicate": 0, "conflict": 0}
    passed: list[tuple[Sample, Outcome]] = []
    failed: list[tuple[Sample, Outcome]] = []
    seen: dict[bool, set[str]] = {True: set(), False: set()}
    for s, o in items:
        n = len(s.completion.strip())
        if n < min_chars or n > max_chars:
            dropped["length"] += 1
            continue
        key = normalise(s.completion)
        if dedupe and key in seen[o.passed]:
            dropped["duplicate"] += 1
            continue
        seen[o.passed].add(key)
        (passed if o.passed else failed).append((s, o))
    conflicts = seen[True] & seen[False]
    if conflicts:
        before = len(passed) + len(failed)
        passed = [(s, o) for s, o in passed if normalise(s.completion) not in conflicts]
        failed = [(s, o) for s, o in failed if normalise(s.completion) not in conflicts]
        dropped["conflict"] = before - len(passed) - len(failed)
    return passed, failed, dropped


def group_verified(
    samples: Sequence[Sample], outcomes: Sequence[Outcome]
) -> dict[str, list[tuple[Sample, Outcome]]]:
    """Samples joined with their outcomes, grouped by task id, each group in sample order."""
    grouped: dict[str, list[tuple[Sample, Outcome]]] = defaultdict(list)
    for s, o in join_outcomes(samples, outcomes):
        grouped[s.task_id].append((s, o))
    return {t: sorted(grouped[t], key=lambda so: so[0].index) for t in sorted(grouped)}


def _check_parity(task_id: str, items: Sequence[tuple[Sample, Outcome]]) -> str:
    policies = {s.policy for s, _ in items}
    if len(policies) > 1:
        raise UserError(
            f"pairs: task {task_id} has samples from several policies ({', '.join(sorted(policies))}); "
            "chosen and rejected must come from the same policy"
        )
    return policies.pop() if policies else ""


def _rng(seed: int, key: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _choose(n_pass: int, n_fail: int, k: int, rng: random.Random) -> list[tuple[int, int]]:
    """k distinct (pass, fail) index pairs spreading use over both sides as evenly as possible."""
    combos = [(p, f) for p in range(n_pass) for f in range(n_fail)]
    rng.shuffle(combos)
    used_p = [0] * n_pass
    used_f = [0] * n_fail
    out: list[tuple[int, int]] = []
    for _ in range(min(k, len(combos))):
        best = min(
            range(len(combos)),
            key=lambda i: (
                max(used_p[combos[i][0]], used_f[combos[i][1]]),
                used_p[combos[i][0]] + used_f[combos[i][1]],
                i,
            ),
        )
        p, f = combos.pop(best)
        used_p[p] += 1
        used_f[f] += 1
        out.append((p, f))
    return out


def build_pairs(
    tasks: Mapping[str, Task] | Iterable[Task],
    samples: Sequence[Sample],
    outcomes: Sequence[Outcome],
    *,
    pairs_per_prompt: int = 4,
    dedupe: bool = True,
    min_chars: int = 1,
    max_chars: int = 4000,
    seed: int = 0,
) -> tuple[list[Pair], PairStats]:
    """Pairs (chosen passed, rejected failed) per prompt, same policy, same prompt.

    Per prompt at most `pairs_per_prompt` distinct pairs, each sample used as evenly as
    possible; completions outside [min_chars, max_chars] (after stripping) are dropped,
    and with `dedupe` so are repeats of a text already seen on the same side. Which pairs
    are kept is seeded by (`seed`, task id): the same inputs give the same pairs.
    """
    by_id = _task_map(tasks)
    stats = PairStats()
    pairs: list[Pair] = []
    for task_id, items in group_verified(samples, outcomes).items():
        task = by_id.get(task_id)
        if task is None:
            raise RecordError(f"pairs: sample for unknown task '{task_id}'")
        policy = _check_parity(task_id, items)
        stats.prompts += 1
        stats.samples += len(items)
        passed, failed, dropped = split_verified(
            items, dedupe=dedupe, min_chars=min_chars, max_chars=max_chars
        )
        stats.dropped_length += dropped["length"]
        stats.dropped_duplicate += dropped["duplicate"]
        stats.dropped_conflict += dropped["conflict"]
        stats.passed += len(passed)
        stats.failed += len(failed)
        if not failed:
            stats.prompts_all_pass += bool(passed)
            continue
        if not passed:
            stats.prompts_all_fail += 1
            continue
        stats.prompts_paired += 1
        for p, f in _choose(len(passed), len(failed), pairs_per_prompt, _rng(seed, task_id)):
            (cs, _), (rs, ro) = passed[p], failed[f]
            pairs.append(
                Pair(
                    prompt=task.prompt,
                    chosen=cs.completion,
                    rejected=rs.completion,
                    task_id=task_id,
                    chosen_index=cs.index,
                    rejected_index=rs.index,
                    rejected_category=ro.category,
                    policy=policy,
                )
            )
            stats.rejected_categories[ro.category] = stats.rejected_categories.get(ro.category, 0) + 1
    stats.pairs = len(pairs)
    return pairs, stats


def _pair_key(seed: int, p: Pair) -> bytes:
    return hashlib.sha256(f"{seed}:{p.task_id}:{p.chosen_index}:{p.rejected_index}".encode()).digest()


def nested_subset(pairs: Sequence[Pair], n: int | None, seed: int = 0) -> list[Pair]:
    """A fixed-size subset: the first `n` pairs of one seeded order of the whole pool.

    Subsets of one pool are nested (the 120-pair set is inside the 500-pair set, seed 001's
    scaling runs), and a pair's place in the order depends only on its identity and `seed`,
    not on the rest of the pool. The subset keeps the pool's order.
    """
    if n is None:
        return list(pairs)
    if n > len(pairs):
        raise UserError(f"pairs: asked for a subset of {n} pairs but only {len(pairs)} are available")
    ranked = sorted(range(len(pairs)), key=lambda i: (_pair_key(seed, pairs[i]), i))
    keep = set(ranked[:n])
    return [p for i, p in enumerate(pairs) if i in keep]


def load_pairs(path: str | Path) -> list[Pair]:
    """Pairs from a JSONL file (rlvf's own or a user's: prompt, chosen, rejected strings per line)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"pairs file {path} does not exist")
    out = []
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        require_fields(obj, ("prompt", "chosen", "rejected"), where)
        obj.setdefault("task_id", f"line-{lineno}")
        obj.setdefault("chosen_index", 0)
        obj.setdefault("rejected_index", 0)
        out.append(Pair.from_dict(obj))
    return out
