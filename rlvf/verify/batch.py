"""Verify many samples at once with a pool of judges, each driving its own sandboxed child."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from rlvf.records import Outcome, Sample, Task
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
) -> list[Outcome]:
    """Judge every sample against its task; outcomes come back in the order of `samples`.

    A sample whose task is unknown gets an `invalid_input` outcome instead of stopping the batch.
    A sample the sandbox could not judge (the fork server died while it ran, or could not be
    started) gets `infra_error`: no verdict, never a wrong answer, so rewards can exclude it.
    """
    by_id: dict[str, Any] = dict(tasks) if isinstance(tasks, Mapping) else {t.task_id: t for t in tasks}
    problems = {tid: (t.to_problem() if hasattr(t, "to_problem") else t) for tid, t in by_id.items()}
    limits = limits or Limits(timeout=timeout)
    judge_server = server or default_server()

    def one(sample: Sample) -> Outcome:
        problem = problems.get(sample.task_id)
        if problem is None:
            return Outcome(sample.task_id, sample.index, False, "invalid_input", detail="unknown task_id")
        starts = judge_server.starts
        try:
            outcome = check_completion(
                problem,
                sample.completion,
                limits.timeout,
                index=sample.index,
                limits=limits,
                server=judge_server,
            )
        except (SandboxError, OSError) as e:
            return Outcome(sample.task_id, sample.index, False, INFRA_ERROR, detail=f"sandbox: {e}"[:300])
        # A restart while this sample ran means its child died with the old fork server: the
        # verdict (usually "stopped answering") says nothing about the sample.
        if judge_server.starts > max(starts, 1):
            return dataclasses.replace(
                outcome,
                passed=False,
                category=INFRA_ERROR,
                detail=f"the sandbox fork server died while judging (would have read {outcome.category})",
            )
        return outcome

    n = workers or default_workers()
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="rlvf-judge") as pool:
        results = pool.map(one, samples)
        bar = tqdm(results, total=len(samples), desc="verify", unit="sample", disable=not progress)
        return list(bar)
