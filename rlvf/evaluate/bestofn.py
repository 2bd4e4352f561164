"""Best-of-N selection by a reward model: N verified samples per task and seed, one picked by
the RM's score, judged by whether the pick passed.

Three numbers per suite, each a pass@1 averaged over tasks, then over the eval seeds:

- rm: the sample the RM scores highest passed (ties: the lowest sample index);
- random: the expected pass@1 of a uniformly random pick, i.e. the share of the N samples
  that passed (exact, not one noisy draw); the policy's own pass@1 at N samples;
- oracle: any of the N passed (pass@N; what a perfect selector would reach).

So random <= oracle and rm <= oracle always; rm - random is what the RM's ranking is worth.
The samples and their verdicts come from `rlvf.evaluate.evaluate` (the same sampler,
clean-up and sandbox as every eval); the RM scores the cleaned completions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvf.metrics import mean_std

KINDS = ("rm", "random", "oracle")


@dataclass(frozen=True)
class Candidate:
    """One of a task's N samples under one seed: its index, verdict and RM score."""

    index: int
    passed: bool
    score: float


def pick(cands: Sequence[Candidate]) -> Candidate:
    """The RM's choice: the highest score, the lowest index among equal scores."""
    return max(cands, key=lambda c: (c.score, -c.index))


def group_values(cands: Sequence[Candidate]) -> dict[str, float]:
    """rm / random / oracle pass (0..1) for one task under one seed."""
    passed = [c.passed for c in cands]
    return {
        "rm": float(pick(cands).passed),
        "random": sum(passed) / len(passed),
        "oracle": float(any(passed)),
    }


@dataclass
class BonResult:
    """One suite's best-of-N numbers: per seed (mean over tasks) and over seeds."""

    suite: str
    n: int
    per_seed: dict[int, dict[str, float]]
    n_tasks: int
    selections: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, tuple[float, float]]:
        """kind -> (mean over seeds, std over seeds)."""
        return {k: mean_std([v[k] for v in self.per_seed.values()]) for k in KINDS}

    def metrics(self, prefix: str) -> dict[str, float]:
        out: dict[str, float] = {f"{prefix}/n": float(self.n), f"{prefix}/n_tasks": float(self.n_tasks)}
        for k, (m, sd) in self.summary().items():
            out[f"{prefix}/{k}_pass1"] = m
            out[f"{prefix}/{k}_pass1_std"] = sd
        for seed, vals in self.per_seed.items():
            for k in KINDS:
                out[f"{prefix}/seed_{seed}/{k}_pass1"] = vals[k]
        rm, rnd = self.summary()["rm"][0], self.summary()["random"][0]
        out[f"{prefix}/rm_gain"] = rm - rnd
        return out


def select(
    suite: str, n: int, groups: Mapping[tuple[int, str], Sequence[Candidate]], task_ids: Sequence[str]
) -> BonResult:
    """Best-of-N over `groups` ((seed, task id) -> its N candidates): every task of
    `task_ids` must have candidates under every seed present."""
    seeds = sorted({s for s, _ in groups})
    per_seed: dict[int, dict[str, float]] = {}
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        sums: dict[str, float] = defaultdict(float)
        for tid in task_ids:
            cands = groups.get((seed, tid))
            if not cands:
                raise ValueError(f"best-of-n: task {tid} has no samples under seed {seed}")
            vals = group_values(cands)
            for k, v in vals.items():
                sums[k] += v
            rows.append(
                {
                    "seed": seed,
                    "task_id": tid,
                    "picked": pick(cands).index,
                    "scores": [c.score for c in cands],
                    "passed": [c.passed for c in cands],
                    **vals,
                }
            )
        per_seed[seed] = {k: sums[k] / len(task_ids) for k in KINDS}
    return BonResult(suite, n, per_seed, len(task_ids), rows)


def best_of_n(
    suite_eval: Any, tasks: Sequence[Any], rm: Any, n: int, batch_size: int | None = None
) -> BonResult:
    """Score the first `n` samples of each (seed, task) of `suite_eval` (a SuiteEval with
    samples and outcomes) with `rm` (a `RewardModel`) and select."""
    by_id = {t.task_id: t for t in tasks}
    verdict = {
        (int(o["seed"]), o["task_id"], int(o["index"])): bool(o["passed"]) for o in suite_eval.outcomes
    }
    chosen = [s for s in suite_eval.samples if s.index < n and s.task_id in by_id]
    missing = [s for s in chosen if (s.seed, s.task_id, s.index) not in verdict]
    if missing:
        s = missing[0]
        raise ValueError(f"best-of-n: sample {s.task_id}#{s.index} (seed {s.seed}) has no verdict")
    scores = rm.score(
        [by_id[s.task_id].prompt for s in chosen],
        [s.completion for s in chosen],
        entry_points=[by_id[s.task_id].entry_point or None for s in chosen],
        batch_size=batch_size,
    )
    groups: dict[tuple[int, str], list[Candidate]] = defaultdict(list)
    for s, score in zip(chosen, scores, strict=True):
        groups[(s.seed, s.task_id)].append(Candidate(s.index, verdict[(s.seed, s.task_id, s.index)], score))
    for g in groups.values():
        g.sort(key=lambda c: c.index)
    return select(suite_eval.result.suite, n, groups, [t.task_id for t in tasks])
