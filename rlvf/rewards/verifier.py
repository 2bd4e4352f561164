"""The verifier reward every RL method shares: clean like eval, judge in the sandbox, score.

What is judged in training must be what is judged in evaluation, so each completion goes
through `rlvf.generate.cleanup.clean_completion` (the clean-up `rlvf.generate.generate`
applies before `rlvf.evaluate` verifies) and then through `rlvf.verify.verify_samples`,
whose judges drive sandboxed children: model code never runs in the training process.

Each completion gets exactly one of three outcomes, never confused:

- a score: the fraction of tests passed (``mode="fraction"``) or 1/0 for all-pass
  (``mode="binary"``);
- the lowest reward, for a wrong answer and for every way of cheating or failing to
  answer: tampering, forbidden side effects, timeouts, resource abuse, format failures;
- ``None`` when the sandbox itself failed (``infra_error``): no verdict is not a wrong
  answer (verl and open-r1 score it 0, which teaches the policy that correct code is
  wrong whenever a worker crashes). TRL's GRPOTrainer excludes a ``None`` completion.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from rlvf.generate.cleanup import Cleaned, clean_completion
from rlvf.records import Outcome, Sample, Task
from rlvf.verify.categories import INFRA_ERROR, PASS

REWARD_MODES = ("fraction", "binary")

# Categories that earn the lowest reward whatever the tests said before the sample failed:
# partial credit for a program that cheated, hung or abused resources would pay for it.
LOWEST_CATEGORIES = frozenset(
    {
        "tampering",
        "forbidden_side_effect",
        "timeout",
        "memory_error",
        "output_limit",
        "format_error",
        "no_code",
        "invalid_input",
    }
)
FORMAT_CATEGORIES = frozenset({"format_error", "no_code"})
# Per-batch rates logged as metrics: the visible side of reward hacking.
RATE_NAMES = ("tampering", "forbidden_side_effect", "timeout", "format_failure", "infra_failure")


class InfraFailureError(RuntimeError):
    """Too many completions could not be judged: the sandbox, not the policy, is failing."""


@dataclass(frozen=True)
class Scored:
    """One completion's reward and everything that decided it (for metrics and rollouts)."""

    task_id: str
    completion: str  # after clean-up: the text the verifier ran
    reward: float | None
    outcome: Outcome
    cleaned: Cleaned

    @property
    def format_failure(self) -> bool:
        return self.outcome.category in FORMAT_CATEGORIES or bool(self.cleaned.format_error)


def reward_of(outcome: Outcome, mode: str = "fraction", lowest: float = 0.0) -> float | None:
    """The reward for one verdict: a score, `lowest`, or None when there is no verdict."""
    if mode not in REWARD_MODES:
        raise ValueError(f"reward mode '{mode}' is not one of {', '.join(REWARD_MODES)}")
    if outcome.category == INFRA_ERROR:
        return None
    if outcome.category == PASS:
        return 1.0
    if outcome.category in LOWEST_CATEGORIES or mode == "binary" or outcome.tests_passed <= 0:
        return lowest
    return outcome.partial_credit  # a wrong answer that got some tests right


def score_completions(
    tasks: Mapping[str, Task],
    task_ids: Sequence[str],
    completions: Sequence[str],
    *,
    mode: str = "fraction",
    lowest: float = 0.0,
    timeout: float = 3.0,
    workers: int | None = None,
    stop: Sequence[str] = (),
    server: Any | None = None,
    prefetched: Callable[[str, str], tuple[Cleaned, Future[Outcome]] | None] | None = None,
) -> list[Scored]:
    """Clean, verify (concurrently, in the sandbox) and score raw completions, in order.

    `prefetched(task_id, completion)` may hand over a completion's clean-up and its verdict
    already on its way (`VerifierReward.prefetch`: the same clean-up and the same judge,
    started earlier); the others are judged here as one batch.
    """
    from rlvf.verify import verify_samples

    if len(task_ids) != len(completions):
        raise ValueError(f"{len(task_ids)} task ids for {len(completions)} completions")
    unknown = sorted({t for t in task_ids if t not in tasks})
    if unknown:
        raise ValueError(f"reward: unknown task id '{unknown[0]}' ({len(unknown)} unknown)")
    early = [
        prefetched(tid, raw) if prefetched else None for tid, raw in zip(task_ids, completions, strict=True)
    ]
    cleaned = []
    for tid, raw, got in zip(task_ids, completions, early, strict=True):
        task = tasks[tid]
        cleaned.append(got[0] if got else clean_completion(task.prompt, raw, task.entry_point or None, stop))
    samples = [
        Sample(task_id=tid, index=i, completion=c.completion)
        for i, (tid, c) in enumerate(zip(task_ids, cleaned, strict=True))
    ]
    rest = [i for i, got in enumerate(early) if got is None]
    outcomes: list[Outcome] = [None] * len(samples)  # type: ignore[list-item]
    if rest:
        judged = verify_samples(
            tasks, [samples[i] for i in rest], timeout=timeout, workers=workers, progress=False, server=server
        )
        for i, o in zip(rest, judged, strict=True):
            outcomes[i] = o
    for i, got in enumerate(early):
        if got is not None:
            outcomes[i] = dataclasses.replace(got[1].result(), index=i)
    return [
        Scored(s.task_id, s.completion, reward_of(o, mode, lowest), o, c)
        for s, o, c in zip(samples, outcomes, cleaned, strict=True)
    ]


def batch_rates(scored: Sequence[Scored]) -> dict[str, float]:
    """Fractions of the batch that tampered, hit a forbidden side effect, timed out, failed
    the format, or could not be judged (the denominators are the whole batch)."""
    n = len(scored) or 1
    cat = [s.outcome.category for s in scored]
    return {
        "tampering": cat.count("tampering") / n,
        "forbidden_side_effect": cat.count("forbidden_side_effect") / n,
        "timeout": cat.count("timeout") / n,
        "format_failure": sum(s.format_failure for s in scored) / n,
        "infra_failure": cat.count(INFRA_ERROR) / n,
    }


def check_infra_rate(n_infra: int, n_total: int, threshold: float) -> None:
    """Raise InfraFailureError when more than `threshold` of the completions had no verdict."""
    if n_total and n_infra / n_total > threshold:
        raise InfraFailureError(
            f"reward: the sandbox could not judge {n_infra} of {n_total} completions "
            f"({n_infra / n_total:.0%} > the {threshold:.0%} limit); stopping rather than training on gaps"
        )


def _text(completion: Any) -> str:
    """A TRL completion: a string, or a conversation whose last message holds the answer."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


@dataclass
class VerifierReward:
    """The shared reward as a TRL reward function (``reward_funcs=[VerifierReward(tasks)]``).

    TRL calls it with ``prompts, completions, completion_ids, trainer_state, log_extra,
    log_metric`` and every dataset column; the dataset must carry a ``task_id`` column.
    The infra guard counts over the whole run (`min_checked` completions first, so one
    unlucky batch at the start does not stop it). `last` keeps the latest batch's details
    and `listeners` are called with each batch (the rollout recorder).

    `prefetch` starts judging one completion as soon as its row stops sampling (rlvf's
    rollouts do this), so most of a batch is judged by the time TRL asks for its rewards;
    a call then takes those verdicts (`prefetch_hits`) and judges only the rest.
    """

    tasks: Mapping[str, Task] | Iterable[Task]
    mode: str = "fraction"
    lowest: float = 0.0
    timeout: float = 3.0
    workers: int | None = None
    max_infra_rate: float = 0.1
    min_checked: int = 1
    stop: tuple[str, ...] = ()
    server: Any | None = None
    last: list[Scored] = field(default_factory=list)
    listeners: list[Callable[[list[Scored], dict[str, Any]], None]] = field(default_factory=list)
    n_scored: int = 0
    n_infra: int = 0
    prefetch_hits: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, Mapping):
            self.tasks = {t.task_id: t for t in self.tasks}
        if self.mode not in REWARD_MODES:
            raise ValueError(f"reward mode '{self.mode}' is not one of {', '.join(REWARD_MODES)}")
        self._lock = threading.Lock()
        self.__name__ = "verifier"  # TRL names reward metrics after it (rewards/verifier/mean)
        self._early: dict[tuple[str, str], list[tuple[Cleaned, Future[Outcome]]]] = {}
        self._judges: Any = None
        self._problems: dict[str, Any] | None = None

    @property
    def can_prefetch(self) -> bool:
        """Only this machine's sandboxes take single completions (Ray judges whole batches)."""
        from rlvf.verify.backend import current

        return self.server is not None or current().name != "ray"

    def prefetch(self, task_id: str, completion: str) -> None:
        """Clean and start judging one raw completion now; the next call that scores the same
        (task, completion) takes its verdict instead of judging it again."""
        from rlvf.verify.batch import JudgePool, problems_of
        from rlvf.verify.sandbox import Limits

        task = self.tasks.get(task_id)  # type: ignore[union-attr]
        if task is None:
            return
        if self._judges is None:
            self._judges = JudgePool(self.workers, self.server)
            self._problems = problems_of(self.tasks)  # type: ignore[arg-type]
        cleaned = clean_completion(task.prompt, completion, task.entry_point or None, self.stop)
        sample = Sample(task_id=task_id, index=0, completion=cleaned.completion)
        future = self._judges.submit(self._problems, sample, Limits(timeout=self.timeout))
        with self._lock:
            self._early.setdefault((task_id, completion), []).append((cleaned, future))

    def forget_prefetched(self) -> None:
        """Drop verdicts no call asked for (a new batch is about to be sampled)."""
        with self._lock:
            stale, self._early = self._early, {}
        for entries in stale.values():
            for _, future in entries:
                future.cancel()

    def _take(self, task_id: str, completion: str) -> tuple[Cleaned, Future[Outcome]] | None:
        with self._lock:
            entries = self._early.get((task_id, completion))
            if not entries:
                return None
            self.prefetch_hits += 1
            return entries.pop(0)

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] = (),
        task_id: Sequence[str] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if task_id is None:
            raise ValueError("reward: the dataset has no 'task_id' column to verify completions against")
        scored = score_completions(
            self.tasks,  # type: ignore[arg-type]
            list(task_id),
            [_text(c) for c in completions],
            mode=self.mode,
            lowest=self.lowest,
            timeout=self.timeout,
            workers=self.workers,
            stop=self.stop,
            server=self.server,
            prefetched=self._take if self._early else None,
        )
        rates = batch_rates(scored)
        with self._lock:
            self.last = scored
            self.n_scored += len(scored)
            self.n_infra += sum(s.outcome.category == INFRA_ERROR for s in scored)
            n_infra, n_total = self.n_infra, self.n_scored
        if log_metric is not None:
            for name, value in rates.items():
                log_metric(f"verifier/{name}_rate", value)
        for listener in self.listeners:
            listener(scored, {"prompts": prompts, **kwargs})
        if n_total >= self.min_checked:
            check_infra_rate(n_infra, n_total, self.max_infra_rate)
        return [s.reward for s in scored]


def prefetcher(reward: Any, task_ids: Sequence[str | None]) -> Callable[[int, Any], None] | None:
    """An `on_row` for `HFBackend.run` that hands row i's completion (for task `task_ids[i]`;
    None: not prefetched) to `reward` as soon as it stops sampling; None when `reward` cannot
    take single completions (not a `VerifierReward`, or judged by Ray)."""
    if not getattr(reward, "can_prefetch", False):
        return None
    reward.forget_prefetched()

    def on_row(i: int, raw: Any) -> None:
        if task_ids[i] is not None:
            reward.prefetch(task_ids[i], raw.text)

    return on_row
