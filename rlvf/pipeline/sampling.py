"""Training data from a policy's own verified samples: sample, run in the sandbox, cache the
base's samples. Pairs (DPO) and SFT rows are built from these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlvf.pipeline.base import policy_spec
from rlvf.pipeline.result import log
from rlvf.records import Outcome, Sample, Task


def sample_and_verify(
    cfg: Any, policy: Any, tasks: Sequence[Task], policy_name: str
) -> tuple[list[Sample], list[Outcome]]:
    """n samples per task from `policy` with cfg.generate, judged by the verifier."""
    from rlvf.generate import SamplingSettings, generate
    from rlvf.verify import verify_samples

    settings = SamplingSettings(
        n=cfg["generate.n_samples"],
        temperature=cfg["generate.temperature"],
        top_p=cfg["generate.top_p"],
        max_new_tokens=cfg["generate.max_new_tokens"],
        seed=cfg["seed"],
    )
    progress = cfg["tracking.progress"]
    samples, _ = generate(
        policy,
        tasks,
        settings,
        backend="hf",
        batch_size=cfg["generate.batch_size"],
        progress=progress,
        policy_name=policy_name,
    )
    outcomes = verify_samples(
        tasks, samples, timeout=cfg["verify.timeout"], workers=cfg["verify.workers"], progress=progress
    )
    return samples, outcomes


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
    from rlvf.models.loader import load_policy

    key, ident = samples_cache_key(cfg)
    hit = cache.load_samples(key)
    if hit is not None:
        log(f"training samples: cached ({key})")
        return hit
    samples, outcomes = sample_and_verify(cfg, load_policy(policy_spec(cfg, None)), tasks, policy_name)
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
