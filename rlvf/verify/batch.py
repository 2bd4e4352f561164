"""Verify many samples at once: the one door every caller goes through.

`verify_samples` picks the backend (`rlvf.verify.backend`): here, a pool of judge threads each
driving its own sandboxed child (`verify_local`), or Ray actors that each run `verify_local`
with their own fork server (`rlvf.verify.ray_pool`). Both give the same verdicts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from rlvf.records import Outcome, Sample, Task
from rlvf.verify.backend import Backend, current
from rlvf.verify.categories import INFRA_ERROR
from rlvf.verify.judge import check_completion
from rlvf.verify.sandbox import ForkServer, Limits, SandboxError, default_server


def default_workers() -> int:
    """Two judges per core: while one waits on its child, the other keeps the core busy."""
    return 2 * (os.cpu_count() or 1)


def verify_samples(
    tasks: Mapping[str, Task | dict[str, Any]] | Iterable[Task],
    samples: Sequence[Sample],
    *,
    timeout: float = 3.0,
    workers: int | None = None,
    progress: bool = True,
    limits: Limits | None = None,
    server: ForkServer | None = None,
    backend: Backend | None = None,
) -> list[Outcome]:
    """Judge every sample against its task; outcomes come back in the order of `samples`.

    `backend` None is the run's (`rlvf.verify.backend.current`). A given `server` means this
    machine's sandboxes. With Ray, `workers` (this machine's judges) does not apply: the
    actors are the parallelism, each with two judges and its own fork server.
    """
    problems = problems_of(tasks)
    limits = limits or Limits(timeout=timeout)
    backend = backend or current()
    if backend.name == "ray" and server is None:
        from rlvf.verify.ray_pool import pool_for

        return pool_for(backend).verify(problems, samples, limits=limits, progress=progress)
    return verify_local(problems, samples, limits=limits, workers=workers, progress=progress, server=server)


def problems_of(tasks: Mapping[str, Task | dict[str, Any]] | Iterable[Task]) -> dict[str, Any]:
    """task_id -> the problem dict a judge checks against (Tasks or such dicts)."""
    by_id: dict[str, Any] = dict(tasks) if isinstance(tasks, Mapping) else {t.task_id: t for t in tasks}
    return {tid: (t.to_problem() if hasattr(t, "to_problem") else t) for tid, t in by_id.items()}


def verify_local(
    problems: Mapping[str, dict[str, Any]],
    samples: Sequence[Sample],
    *,
    limits: Limits,
    workers: int | None = None,
    progress: bool = True,
    server: ForkServer | None = None,
) -> list[Outcome]:
    """Judge on this machine with a pool of judge threads sharing one fork server.

    A sample whose task is unknown gets an `invalid_input` outcome instead of stopping the batch.
    A sample the sandbox could not judge (the fork server died while it ran, or could not be
    started) gets `infra_error`: no verdict, never a wrong answer, so rewards can exclude it.
    """
    pool = JudgePool(workers, server)
    try:
        return collect([pool.submit(problems, s, limits) for s in samples], progress)
    finally:
        pool.close()


def collect(verdicts: Sequence[Future[Outcome]], progress: bool) -> list[Outcome]:
    """The verdicts in order, waiting on each, under the one "verify" progress bar."""
    bar = tqdm(verdicts, total=len(verdicts), desc="verify", unit="sample", disable=not progress)
    return [v.result() for v in bar]


def judge_one(
    problems: Mapping[str, dict[str, Any]], sample: Sample, limits: Limits, server: ForkServer
) -> Outcome:
    """One sample's verdict from a sandboxed child of `server` (`verify_local`'s judges)."""
    problem = problems.get(sample.task_id)
    if problem is None:
        return Outcome(sample.task_id, sample.index, False, "invalid_input", detail="unknown task_id")
    starts = server.starts
    try:
        outcome = check_completion(
            problem,
            sample.completion,
            limits.timeout,
            index=sample.index,
            limits=limits,
            server=server,
        )
    except (SandboxError, OSError) as e:
        return Outcome(sample.task_id, sample.index, False, INFRA_ERROR, detail=f"sandbox: {e}"[:300])
    # A restart while this sample ran means its child died with the old fork server: the
    # verdict (usually "stopped answering") says nothing about the sample.
    if server.starts > max(starts, 1):
        return dataclasses.replace(
            outcome,
            passed=False,
            category=INFRA_ERROR,
            detail=f"the sandbox fork server died while judging (would have read {outcome.category})",
        )
    return outcome


class JudgePool:
    """Judges that take samples one at a time, as they come (`judge_one` on a thread pool).

    `verify_local` judges a finished batch; an RL step can instead hand each completion over
    the moment its row stops sampling (`rlvf.rewards.VerifierReward.prefetch`), so the sandbox
    works on one core while the sampler finishes the batch's longest rows on the other.
    Local sandboxes only (with Ray the batch goes to the actors as a whole).
    """

    def __init__(self, workers: int | None = None, server: ForkServer | None = None) -> None:
        self.server = server or default_server()
        self._pool = ThreadPoolExecutor(
            max_workers=workers or default_workers(), thread_name_prefix="rlvf-judge"
        )

    def submit(
        self, problems: Mapping[str, dict[str, Any]], sample: Sample, limits: Limits
    ) -> Future[Outcome]:
        return self._pool.submit(judge_one, problems, sample, limits, self.server)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
