"""Training data from a policy's own verified samples: sample, run in the sandbox, cache the
base's samples. Pairs (DPO) and SFT rows are built from these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlvf.pipeline.base import policy_spec
from rlvf.pipeline.result import log
from rlvf.records import Outcome, Sample, Task


def sampling_shard(
    spec: Any,
    tasks: list[Task],
    settings: Any,
    batch_size: int,
    policy_name: str,
    timeout: float,
    workers: int | None,
    shard: tuple[int, int],
    progress: bool = False,
) -> tuple[list[Sample], list[Outcome]]:
    """One rank's share of `sample_and_verify`: the sampling batches b with b % world == rank
    (`rlvf.generate.engine.HFBackend.run`), judged in the sandbox on that rank."""
    from rlvf.verify.stream import sample_and_judge

    return sample_and_judge(
        spec,
        tasks,
        settings,
        batch_size=batch_size,
        policy_name=policy_name,
        timeout=timeout,
        workers=workers,
        progress=progress,
        shard=shard,
    )


def _sample_on_ranks(
    job: dict[str, Any], tasks: list[Task], world: int, progress: bool
) -> tuple[list[Sample], list[Outcome]]:
    """`sample_and_verify` as rank 0 of an external launch: every rank samples and judges its
    share of the batches, rank 0 puts the rows back in one process's order."""
    from rlvf.train import shards

    pending = shards.scatter(
        f"sampling from {job['policy_name']}",
        sampling_shard,
        {r: {**job, "tasks": tasks, "shard": (r, world)} for r in range(1, world)},
    )
    got = {
        0: sampling_shard(**job, tasks=tasks, shard=(0, world), progress=progress),
        **shards.gather(pending),
    }
    pos = {t.task_id: i for i, t in enumerate(tasks)}
    n = job["settings"].n
    rows = sorted(
        (
            (pos[s.task_id] * n + s.index, s, o)
            for samples, outcomes in got.values()
            for s, o in zip(samples, outcomes, strict=True)
        ),
        key=lambda row: row[0],
    )
    if [k for k, _, _ in rows] != list(range(len(tasks) * n)):
        raise RuntimeError(f"sampling on {world} ranks: the ranks' rows do not add up to {len(tasks)} x {n}")
    log(f"sampled and verified on {world} ranks")
    return [s for _, s, _ in rows], [o for _, _, o in rows]


def sample_and_verify(
    cfg: Any, policy: Any, tasks: Sequence[Task], policy_name: str
) -> tuple[list[Sample], list[Outcome]]:
    """n samples per task from `policy` (a PolicySpec, or a loaded (model, tokenizer)) with
    cfg.generate, judged by the verifier. As rank 0 of an external launch, a PolicySpec's
    batches are shared among the ranks (`rlvf.train.shards`): the same samples either way."""
    from rlvf.generate import SamplingSettings
    from rlvf.models.loader import PolicySpec
    from rlvf.train import shards
    from rlvf.verify.stream import sample_and_judge

    settings = SamplingSettings(
        n=cfg["generate.n_samples"],
        temperature=cfg["generate.temperature"],
        top_p=cfg["generate.top_p"],
        max_new_tokens=cfg["generate.max_new_tokens"],
        seed=cfg["seed"],
    )
    progress = cfg["tracking.progress"]
    world = shards.ranks() if isinstance(policy, PolicySpec) else 1
    batches = -(-len(tasks) * settings.n // cfg["generate.batch_size"])
    world = min(world, batches)  # a rank without a batch has nothing to do
    if world > 1 and len({t.task_id for t in tasks}) == len(tasks):
        job = {
            "spec": policy,
            "settings": settings,
            "batch_size": cfg["generate.batch_size"],
            "policy_name": policy_name,
            "timeout": cfg["verify.timeout"],
            "workers": cfg["verify.workers"],
        }
        return _sample_on_ranks(job, list(tasks), world, progress)
    return sample_and_judge(
        policy,
        tasks,
        settings,
        batch_size=cfg["generate.batch_size"],
        policy_name=policy_name,
        timeout=cfg["verify.timeout"],
        workers=cfg["verify.workers"],
        progress=progress,
    )


def training_tasks(cfg: Any) -> list[Task]:
    from rlvf.evaluate import load_tasks

    return load_tasks(cfg["data.suite"], cfg["data.per_cell"], cfg["data.limit"])


def data_lineage(cfg: Any, policy_name: str, **extra: Any) -> dict[str, Any]:
    return {
        "policy": policy_name,
        "suite": cfg["data.suite"],
        "per_cell": cfg["data.per_cell"],
        "limit": cfg["data.limit"],
        "seed": cfg["seed"],
        "n_samples": cfg["generate.n_samples"],
        "temperature": cfg["generate.temperature"],
        "max_new_tokens": cfg["generate.max_new_tokens"],
        "verifier": f"rlvf.verify timeout={cfg['verify.timeout']}",
        **extra,
    }


def samples_cache_key(cfg: Any) -> tuple[str, dict[str, Any]]:
    from rlvf.evaluate import cache

    ident = cache.base_identity(cfg["model.policy"], cfg["model.revision"])
    gen = ("n_samples", "temperature", "top_p", "max_new_tokens", "batch_size")
    settings = {
        "kind": "training samples",
        "generate": {k: cfg[f"generate.{k}"] for k in gen},
        "data": {k: cfg[f"data.{k}"] for k in ("suite", "per_cell", "limit")},
        "timeout": cfg["verify.timeout"],
        "seed": cfg["seed"],
    }
    return cache.cache_key(ident, settings), ident


def base_samples(cfg: Any, tasks: Sequence[Task], policy_name: str) -> tuple[list[Sample], list[Outcome]]:
    """The base policy's verified samples on the training prompts, from the cache when there."""
    from rlvf.evaluate import cache

    key, ident = samples_cache_key(cfg)
    hit = cache.load_samples(key)
    if hit is not None:
        log(f"training samples: cached ({key})")
        return hit
    samples, outcomes = sample_and_verify(cfg, policy_spec(cfg, None), tasks, policy_name)
    cache.store_samples(key, samples, outcomes, ident)
    return samples, outcomes


def verified_samples(
    cfg: Any, policy: Any, tasks: Sequence[Task], policy_name: str
) -> tuple[list[Sample], list[Outcome]]:
    """The policy's verified samples on the training prompts: `policy` None means the base
    (cached). Pairs, SFT rows and KTO's unpaired rows are all cut from these."""
    if policy is None:
        return base_samples(cfg, tasks, policy_name)
    return sample_and_verify(cfg, policy, tasks, policy_name)
