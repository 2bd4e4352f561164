"""Sample and judge at once: each sample goes to the sandbox the moment its row stops.

`generate` then `verify_samples` leaves a core idle twice: the judges wait for the last row of
the last batch, and the sampler waits for the judges. Here every sample is handed to a
`JudgePool` as soon as `generate` builds it (`on_sample`), so the sandbox judges the early rows
while the sampler finishes the long ones; what is left to wait for at the end is the last few
verdicts. The samples and verdicts are exactly those of `generate` + `verify_samples` (the same
clean-up, judge and limits). With Ray as the verify backend the batch goes to the actors whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from rlvf.records import Outcome, Sample, Task


def sample_and_judge(
    policy: Any,
    tasks: Sequence[Task],
    settings: Any,
    *,
    batch_size: int,
    policy_name: str,
    timeout: float,
    workers: int | None = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> tuple[list[Sample], list[Outcome]]:
    """`generate(policy, tasks, settings, backend="hf", ...)` and the sandbox's verdicts, in order."""
    from rlvf.generate import generate
    from rlvf.verify.backend import current
    from rlvf.verify.batch import JudgePool, collect, problems_of, verify_samples
    from rlvf.verify.sandbox import Limits

    tasks = list(tasks)
    common: dict[str, Any] = dict(
        backend="hf", batch_size=batch_size, progress=progress, policy_name=policy_name, shard=shard
    )
    if current().name == "ray":
        samples, _ = generate(policy, tasks, settings, **common)
        return samples, verify_samples(tasks, samples, timeout=timeout, workers=workers, progress=progress)
    problems, limits = problems_of(tasks), Limits(timeout=timeout)
    pool = JudgePool(workers)
    verdicts: dict[int, Future[Outcome]] = {}
    try:
        samples, _ = generate(
            policy,
            tasks,
            settings,
            on_sample=lambda k, sample: verdicts.__setitem__(k, pool.submit(problems, sample, limits)),
            **common,
        )
        if len(verdicts) != len(samples):
            raise RuntimeError(f"sampling handed over {len(verdicts)} of {len(samples)} samples")
        # generate's order: by task, then sample index
        return samples, collect([verdicts[k] for k in sorted(verdicts)], progress)
    finally:
        pool.close()
