"""The base policy every run starts from: bootstrapping it on first use, naming it, and its
(cached, prefetched) evaluation that trained policies are compared with."""

from __future__ import annotations

import os
import time
from typing import Any

from rlvf.pipeline.result import log


def policy_label(cfg: Any) -> str:
    from rlvf.tracking.runs import base_model_tag

    return base_model_tag(cfg["model.policy"])


def ensure_base(cfg: Any, run: Any) -> None:
    """Bootstrap the embedded base on first use, saying so (it takes minutes, silently otherwise),
    and record how long it took as `time/bootstrap_s`."""
    from rlvf.models.loader import is_embedded

    policy = cfg["model.policy"]
    if not is_embedded(policy):
        return
    from rlvf.models.bootstrap import (
        DEFAULT_SEED,
        bootstrap,
        default_dir,
        get_config,
        is_complete,
        parse_embedded,
    )

    name = parse_embedded(policy)
    if is_complete(default_dir(get_config(name), DEFAULT_SEED)):
        return
    log(f"bootstrapping the embedded model '{name}' (first use only; it is cached for later runs)")
    t0 = time.perf_counter()
    path = bootstrap(name, seed=DEFAULT_SEED, progress=cfg["tracking.progress"])
    run.metrics({"time/bootstrap_s": time.perf_counter() - t0})
    log(f"embedded model ready in {time.perf_counter() - t0:.0f}s: {path}")


def base_revision(cfg: Any) -> str | None:
    """The embedded model's bootstrap key stands in for a hub revision."""
    from rlvf.models.loader import is_embedded

    if cfg["model.revision"]:
        return cfg["model.revision"]
    if is_embedded(cfg["model.policy"]):
        from rlvf.models.bootstrap import DEFAULT_SEED, get_config, parse_embedded

        return "bootstrap-" + get_config(parse_embedded(cfg["model.policy"])).key(DEFAULT_SEED)
    return None


def policy_spec(cfg: Any, init: Any = None):
    """The PolicySpec of the base, or of model.init (a `PolicySource`) when given."""
    from rlvf.train.common import base_spec

    return base_spec(cfg, init.directory if init else None)


def eval_settings(cfg: Any):
    from rlvf.evaluate import EvalSettings

    return EvalSettings.from_config(cfg)


def base_eval_key(cfg: Any) -> tuple[str, dict[str, Any], Any]:
    from rlvf.evaluate import cache as eval_cache

    settings = eval_settings(cfg)
    ident = eval_cache.base_identity(cfg["model.policy"], cfg["model.revision"])
    return eval_cache.cache_key(ident, settings.to_dict()), ident, settings


# Base evals computing in a second process while this one samples and trains (see below).
_BASE_EVAL_JOBS: dict[str, Any] = {}


def _base_eval_job(flat: dict[str, Any], recipe: str) -> None:
    """Child process: compute and cache the base's eval (single-threaded, no progress bars)."""
    from rlvf.config.loader import Config
    from rlvf.runtime import cpu_threads, die_with_parent
    from rlvf.train.common import quiet

    die_with_parent()
    cfg = Config({**flat, "tracking.progress": False}, recipe)
    with cpu_threads(cfg["model.device"]), quiet(False):
        base_eval(cfg)
        base_lm_eval(cfg)


def _samples(settings: Any) -> int:
    """Completions an evaluation with `settings` samples."""
    from rlvf.evaluate.core import load_tasks

    n = sum(len(load_tasks(s, settings.per_cell, settings.limit)) for s in settings.suites)
    return n * settings.n_samples * len(settings.seeds)


def prefetch_base_eval(cfg: Any) -> None:
    """Start the base's eval in another process when it is not cached yet.

    Sampling and training a tiny model on CPU keep one core busy; the base's eval does not
    depend on them, so it runs on the other core meanwhile and training runs find it cached.
    A failed prefetch costs nothing: `base_eval` then computes it in-process as before.
    """
    import multiprocessing

    from rlvf.evaluate import cache as eval_cache
    from rlvf.train import shards

    if not cfg["eval.base"] or not eval_cache.enabled() or (os.cpu_count() or 1) < 2:
        return
    if shards.ranks() > 1:  # the ranks of an external launch share the base's eval instead
        return
    key, _, settings = base_eval_key(cfg)
    lm_key = base_lm_eval_key(cfg)
    lm_done = lm_key is None or eval_cache.load_json(lm_key) is not None
    if key in _BASE_EVAL_JOBS or (eval_cache.load(key, list(settings.suites)) is not None and lm_done):
        return
    from rlvf.evaluate.core import MIN_SPLIT_SAMPLES

    if lm_key is None and _samples(settings) < MIN_SPLIT_SAMPLES:  # cheaper here than a process
        return
    proc = multiprocessing.get_context("spawn").Process(
        target=_base_eval_job, args=(dict(cfg._flat), cfg.recipe), daemon=True
    )
    proc.start()
    _BASE_EVAL_JOBS[key] = proc


def base_eval(cfg: Any) -> dict[str, Any]:
    """The base policy's SuiteEvals for cfg's eval settings, from the cache when there."""
    from rlvf.evaluate import cache as eval_cache
    from rlvf.evaluate import evaluate

    key, ident, settings = base_eval_key(cfg)
    job = _BASE_EVAL_JOBS.pop(key, None)
    if job is not None:
        job.join()
    cached = eval_cache.load(key, list(settings.suites))
    if cached is not None:
        log(f"base eval: cached ({key})")
        return cached
    log("base eval: evaluating the base policy (cached for next time)")
    evals = evaluate(
        policy_spec(cfg, None),
        settings,
        policy_name=policy_label(cfg),
        workers=cfg["verify.workers"],
        progress=cfg["tracking.progress"],
    )
    eval_cache.store(key, evals, ident)
    return evals


def base_lm_eval_key(cfg: Any) -> str | None:
    """The cache key of the base's lm-eval results (None when cfg runs no lm-eval task):
    the base, the settings, lm-eval's version and the shipped tasks' content."""
    from rlvf.evaluate import cache as eval_cache
    from rlvf.evaluate.lmeval import LmEvalSettings, lm_eval_version, local_tasks_digest

    settings = LmEvalSettings.from_config(cfg)
    if not settings.tasks:
        return None
    ident = eval_cache.base_identity(cfg["model.policy"], cfg["model.revision"])
    extra = {"lm_eval": settings.to_dict(), "version": lm_eval_version(), "local": local_tasks_digest()}
    extra["dtype"], extra["device"] = cfg["model.dtype"], cfg["model.device"]
    return "lm_eval-" + eval_cache.cache_key(ident, extra)


def base_lm_eval(cfg: Any) -> Any:
    """The base policy's `LmEvalResult` for cfg's lm-eval settings (cached), or None without tasks."""
    from rlvf.evaluate import cache as eval_cache
    from rlvf.evaluate.lmeval import LmEvalResult, LmEvalSettings, run_lm_eval

    key = base_lm_eval_key(cfg)
    if key is None:
        return None
    job = _BASE_EVAL_JOBS.pop(base_eval_key(cfg)[0], None)
    if job is not None:
        job.join()
    cached = eval_cache.load_json(key)
    if cached is not None:
        try:
            res = LmEvalResult.from_dict(cached)
            log(f"base lm-eval: cached ({key})")
            return res
        except (KeyError, TypeError, ValueError):
            pass
    log("base lm-eval: evaluating the base policy (cached for next time)")
    res = run_lm_eval(
        policy_spec(cfg, None),
        LmEvalSettings.from_config(cfg),
        policy_name=policy_label(cfg),
        progress=cfg["tracking.progress"],
    )
    eval_cache.store_json(key, res.to_dict())
    return res
