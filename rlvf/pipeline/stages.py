"""The entry points as library calls: bootstrap, pairs, sft, dpo, eval.

Each takes a validated `Config`, opens (or attaches to) one MLflow run and leaves in it
everything `rlvf.tracking.schema` promises. `run_dpo(load_config("dpo"))` is what
`mlflow run . -e dpo --env-manager local` does: bootstrap the embedded model if missing,
sample from it, verify, build pairs, train DPO, evaluate the result and the base (cached),
log the model, attach the eval metrics, register a version and move the alias.

Inputs are checked before a run is opened where that is possible (a missing pairs file, a
run id that does not exist), so a typo does not leave a run behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvf.errors import UserError
from rlvf.records import Outcome, Pair, Sample, Task
from rlvf.tracking import schema


@dataclass
class StageResult:
    """What a stage returns to its caller (tests, the CLI's closing summary)."""

    run_id: str
    method: str
    config_hash: str
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    registered: tuple[str, str] | None = None  # (name, version)
    n_pairs: int = 0
    summary: list[str] = field(default_factory=list)


def _log(msg: str) -> None:
    print(f"[rlvf] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- inputs


@dataclass
class PolicySource:
    """Where a policy to start from (model.init) came from."""

    directory: Path
    run_id: str | None = None
    invariants: dict[str, Any] | None = None
    method: str | None = None


def _download_policy(artifact_uri: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    from rlvf.tracking.scratch import scratch_dir

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=scratch_dir()))
    except (MlflowException, OSError) as e:
        raise UserError(f"model.init: could not download {artifact_uri}: {str(e).splitlines()[0]}") from None
    policy = local / "artifacts" / "policy"
    if not policy.is_dir():
        raise UserError(f"model.init: {artifact_uri} is not an rlvf policy model (no artifacts/policy)")
    return policy


def resolve_init(init: str | None) -> PolicySource | None:
    """model.init -> a local policy directory (+ the run it came from)."""
    from rlvf.tracking.runs import get_run, looks_like_run_id

    if not init:
        return None
    path = Path(init).expanduser()
    if path.is_dir():
        return PolicySource(path)
    run_id = None
    if init.startswith("models:/"):
        directory = _download_policy(init)
        try:
            import mlflow

            name_ver = init[len("models:/") :]
            client = mlflow.MlflowClient()
            if "@" in name_ver:
                name, alias = name_ver.split("@", 1)
                run_id = client.get_model_version_by_alias(name, alias).run_id
            elif "/" in name_ver:
                name, ver = name_ver.rsplit("/", 1)
                run_id = client.get_model_version(name, ver).run_id
        except Exception:
            run_id = None
    elif looks_like_run_id(init) or init.startswith("runs:/"):
        run_id = init[len("runs:/") :].split("/", 1)[0] if init.startswith("runs:/") else init
        get_run(run_id, "model.init")
        directory = _download_policy(f"runs:/{run_id}/{schema.MODEL_ARTIFACT}")
    else:
        raise UserError(f"model.init: '{init}' is neither a directory, a run id nor a models:/ URI")
    inv = method = None
    if run_id:
        from rlvf.tracking.runs import client

        tags = client().get_run(run_id).data.tags
        method = tags.get(schema.TAG_METHOD)
        try:
            inv = json.loads(tags.get(schema.TAG_INVARIANTS, "null"))
        except ValueError:
            inv = None
    return PolicySource(directory, run_id, inv, method)


@dataclass
class PairsSource:
    path: Path
    run_id: str | None = None


def resolve_pairs(spec: str | None) -> PairsSource | None:
    """data.pairs -> a local JSONL: a file, or the data/pairs.jsonl artifact of a pairs run."""
    from rlvf.tracking.runs import get_run, looks_like_run_id

    if not spec:
        return None
    path = Path(spec).expanduser()
    if path.is_file():
        return PairsSource(path)
    if looks_like_run_id(spec) or spec.startswith("runs:/"):
        run_id = spec[len("runs:/") :].split("/", 1)[0] if spec.startswith("runs:/") else spec.strip()
        get_run(run_id, "data.pairs")
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data/pairs.jsonl")
        except (MlflowException, OSError):
            raise UserError(
                f"data.pairs: run {run_id} has no data/pairs.jsonl artifact (is it a pairs run?)"
            ) from None
        return PairsSource(Path(local), run_id)
    if path.exists():
        raise UserError(f"data.pairs: {spec} is not a file")
    raise UserError(f"data.pairs: pairs file {spec} does not exist (give a JSONL path or a pairs run id)")


# --------------------------------------------------------------------------- shared steps


def _policy_label(cfg: Any) -> str:
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
    _log(f"bootstrapping the embedded model '{name}' (first use only; it is cached for later runs)")
    t0 = time.perf_counter()
    path = bootstrap(name, seed=DEFAULT_SEED, progress=cfg["tracking.progress"])
    run.metrics({"time/bootstrap_s": time.perf_counter() - t0})
    _log(f"embedded model ready in {time.perf_counter() - t0:.0f}s: {path}")


def _base_revision(cfg: Any) -> str | None:
    """The embedded model's bootstrap key stands in for a hub revision."""
    from rlvf.models.loader import is_embedded

    if cfg["model.revision"]:
        return cfg["model.revision"]
    if is_embedded(cfg["model.policy"]):
        from rlvf.models.bootstrap import DEFAULT_SEED, get_config, parse_embedded

        return "bootstrap-" + get_config(parse_embedded(cfg["model.policy"])).key(DEFAULT_SEED)
    return None


def _spec(cfg: Any, init: PolicySource | None):
    from rlvf.train.common import base_spec

    return base_spec(cfg, init.directory if init else None)


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


def _training_tasks(cfg: Any) -> list[Task]:
    from rlvf.evaluate import load_tasks

    return load_tasks(cfg["data.suite"], cfg["data.per_cell"], cfg["data.limit"])


def _data_lineage(cfg: Any, policy_name: str, **extra: Any) -> dict[str, Any]:
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


def _samples_cache_key(cfg: Any) -> tuple[str, dict[str, Any]]:
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

    key, ident = _samples_cache_key(cfg)
    hit = cache.load_samples(key)
    if hit is not None:
        _log(f"training samples: cached ({key})")
        return hit
    samples, outcomes = sample_and_verify(cfg, load_policy(_spec(cfg, None)), tasks, policy_name)
    cache.store_samples(key, samples, outcomes, ident)
    return samples, outcomes


def make_pairs(cfg: Any, run: Any, policy: Any, policy_name: str) -> list[Pair]:
    """Sample, verify and pair on cfg.data.suite; logs the data metrics and the dataset input.
    `policy` None means the base policy (its verified samples are cached).
    Zero pairs is a UserError (after the stats are logged, so the run says why)."""
    from rlvf.datasets.pairs import build_pairs, nested_subset
    from rlvf.tracking.inputs import log_dataset

    tasks = _training_tasks(cfg)
    _log(
        f"sampling {cfg['generate.n_samples']} completions for each of {len(tasks)} prompts ({cfg['data.suite']})"
    )
    t0 = time.perf_counter()
    if policy is None:
        samples, outcomes = base_samples(cfg, tasks, policy_name)
    else:
        samples, outcomes = sample_and_verify(cfg, policy, tasks, policy_name)
    run.metrics({"data/sample_verify_s": time.perf_counter() - t0})
    pool, stats = build_pairs(
        tasks,
        samples,
        outcomes,
        pairs_per_prompt=cfg["data.pairs_per_prompt"],
        dedupe=cfg["data.dedupe"],
        min_chars=cfg["data.min_chars"],
        max_chars=cfg["data.max_chars"],
        seed=cfg["seed"],
    )
    n_pass = sum(o.passed for o in outcomes)
    run.metrics(
        {
            "data/prompts": stats.prompts,
            "data/samples": stats.samples,
            "data/sample_pass_rate": n_pass / max(1, len(outcomes)),
            "data/prompts_paired": stats.prompts_paired,
            "data/prompts_all_pass": stats.prompts_all_pass,
            "data/prompts_all_fail": stats.prompts_all_fail,
            "data/pairs_pool": len(pool),
        }
    )
    run.log_dict("data/pair_stats.json", stats.to_dict())
    if not pool:
        raise UserError(
            f"pairs: 0 pairs from {stats.prompts} prompts ({stats.prompts_all_pass} had only passing samples, "
            f"{stats.prompts_all_fail} only failing ones); sample more (generate.n_samples) or use other prompts"
        )
    pairs = nested_subset(pool, cfg["data.n_pairs"], seed=cfg["seed"])
    run.metrics({"data/pairs": len(pairs)})
    digest = log_dataset(
        run,
        pairs,
        name="pairs",
        artifact_path="data/pairs.jsonl",
        lineage=_data_lineage(
            cfg,
            policy_name,
            pairs_per_prompt=cfg["data.pairs_per_prompt"],
            n_pairs=cfg["data.n_pairs"],
            pool=len(pool),
            source_run=run.run_id,
        ),
    )
    _log(
        f"{len(pairs)} pairs from {stats.prompts_paired}/{stats.prompts} prompts "
        f"(sample pass rate {n_pass / max(1, len(outcomes)):.2f}; dataset digest {digest}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return pairs


def _eval_settings(cfg: Any):
    from rlvf.evaluate import EvalSettings

    return EvalSettings.from_config(cfg)


def _log_suite_evals(run: Any, evals: dict[str, Any], prefix: str = schema.EVAL_PREFIX) -> dict[str, float]:
    from rlvf.tracking.evallog import log_eval_result

    logged: dict[str, float] = {}
    for suite, ev in evals.items():
        logged.update(log_eval_result(run.run_id, ev.result, prefix=prefix, client=run.client))
        base = f"{prefix}/{schema.suite_key(suite)}"
        if ev.samples:
            run.log_jsonl(f"{base}/{schema.SAMPLES_ARTIFACT}", ev.samples)
        if ev.outcomes:
            run.log_jsonl(f"{base}/{schema.OUTCOMES_ARTIFACT}", ev.outcomes)
    return logged


def _base_eval_key(cfg: Any) -> tuple[str, dict[str, Any], Any]:
    from rlvf.evaluate import cache as eval_cache

    settings = _eval_settings(cfg)
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


def prefetch_base_eval(cfg: Any) -> None:
    """Start the base's eval in another process when it is not cached yet.

    Sampling and training a tiny model on CPU keep one core busy; the base's eval does not
    depend on them, so it runs on the other core meanwhile and training runs find it cached.
    A failed prefetch costs nothing: `base_eval` then computes it in-process as before.
    """
    import multiprocessing

    from rlvf.evaluate import cache as eval_cache

    if not cfg["eval.base"] or not eval_cache.enabled() or (os.cpu_count() or 1) < 2:
        return
    key, _, settings = _base_eval_key(cfg)
    if key in _BASE_EVAL_JOBS or eval_cache.load(key, list(settings.suites)) is not None:
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

    key, ident, settings = _base_eval_key(cfg)
    job = _BASE_EVAL_JOBS.pop(key, None)
    if job is not None:
        job.join()
    cached = eval_cache.load(key, list(settings.suites))
    if cached is not None:
        _log(f"base eval: cached ({key})")
        return cached
    _log("base eval: evaluating the base policy (cached for next time)")
    evals = evaluate(
        _spec(cfg, None),
        settings,
        policy_name=_policy_label(cfg),
        workers=cfg["verify.workers"],
        progress=cfg["tracking.progress"],
    )
    eval_cache.store(key, evals, ident)
    return evals


def _pass1(metrics: dict[str, float], suite: str, prefix: str) -> tuple[float, float] | None:
    k = schema.eval_metric(suite, "pass_at_1", prefix)
    if k not in metrics:
        return None
    return metrics[k], metrics.get(schema.eval_metric(suite, "pass_at_1_stderr", prefix), 0.0)


def paired_delta(new: Any, base: Any) -> tuple[float, float]:
    """Mean and stderr over tasks of (new - base) per-task pass rates: the paired comparison of
    two EvalResults on the same tasks (tighter than combining the two unpaired stderrs)."""
    from rlvf.metrics import mean_std, task_pass_rates

    if new.task_ids != base.task_ids:
        raise ValueError("paired_delta: the results cover different tasks")
    d = [a - b for a, b in zip(task_pass_rates(new), task_pass_rates(base), strict=True)]
    m, sd = mean_std(d)
    return m, sd / len(d) ** 0.5 if d else 0.0


def compare_with_base(run: Any, evals: dict[str, Any], bases: dict[str, Any], method: str) -> list[str]:
    """Log `compare/<suite>/...` (delta of pass@1, its unpaired and paired stderr, z) and return
    one summary line per suite."""
    from rlvf.metrics import summarize

    lines = []
    for suite, ev in evals.items():
        if suite not in bases:
            continue
        new, base = summarize(ev.result)["pass_at_1"], summarize(bases[suite].result)["pass_at_1"]
        delta = new["mean"] - base["mean"]
        se = (new["stderr"] ** 2 + base["stderr"] ** 2) ** 0.5
        pd, pse = paired_delta(ev.result, bases[suite].result)
        key = schema.suite_key(suite)
        run.metrics(
            {
                f"compare/{key}/delta_pass_at_1": delta,
                f"compare/{key}/delta_stderr": se,
                f"compare/{key}/delta_stderr_paired": pse,
                f"compare/{key}/z": delta / se if se else 0.0,
                f"compare/{key}/z_paired": pd / pse if pse else 0.0,
            }
        )
        lines.append(
            f"{suite} pass@1: base {base['mean']:.3f} ± {base['stderr']:.3f} -> {method} {new['mean']:.3f} "
            f"± {new['stderr']:.3f}: {delta:+.3f} = {delta / se if se else 0:+.1f} x combined stderr "
            f"({pd / pse if pse else 0:+.1f} x paired stderr)"
        )
    return lines


def finish_training(cfg: Any, run: Any, trained: Any, result: StageResult) -> None:
    """After training: log the model, evaluate (metrics attach to the model), record the base's
    eval, then register a version and move the alias (last, so a version always has metrics)."""
    from rlvf.evaluate import evaluate
    from rlvf.tracking.models import active_model, log_policy_model, register_policy, registered_model_name

    model_id = None
    if cfg["tracking.log_model"]:
        model_id = log_policy_model(
            run,
            trained.policy_dir,
            tags={
                schema.TAG_METHOD: cfg.method,
                schema.TAG_CONFIG_HASH: cfg.hash,
            },
        )
    label = f"{cfg.method}:{run.run_id[:8]}"
    t0 = time.perf_counter()
    bases: dict[str, Any] = {}
    with active_model(model_id):
        evals = evaluate(
            trained.spec,
            _eval_settings(cfg),
            policy_name=label,
            workers=cfg["verify.workers"],
            progress=cfg["tracking.progress"],
        )
        result.metrics.update(_log_suite_evals(run, evals))
        run.metrics({"time/eval_s": time.perf_counter() - t0})
        run.flush()
    _log(f"evaluated the trained policy in {time.perf_counter() - t0:.1f}s")
    if cfg["eval.base"]:
        from rlvf.tracking.evallog import log_eval_result

        t0 = time.perf_counter()
        bases = base_eval(cfg)
        for _suite, ev in bases.items():
            result.metrics.update(
                log_eval_result(run.run_id, ev.result, prefix=schema.BASE_EVAL_PREFIX, client=run.client)
            )
        _log(f"base eval recorded in {time.perf_counter() - t0:.1f}s")
    result.summary.extend(compare_with_base(run, evals, bases, cfg.method))
    if not bases:
        for suite, ev in evals.items():
            p = _pass1(result.metrics, suite, schema.EVAL_PREFIX)
            if p is not None:
                result.summary.append(f"{suite} pass@1 {p[0]:.3f} ± {p[1]:.3f} ({ev.result.policy})")
    if model_id and cfg["registry.register"]:
        name = cfg["registry.name"] or registered_model_name(cfg["model.policy"])
        tags = {
            schema.TAG_METHOD: cfg.method,
            schema.TAG_CONFIG_HASH: cfg.hash,
            schema.TAG_INVARIANTS_HASH: run.invariants_hash,
            schema.TAG_BASE_MODEL: _policy_label(cfg),
            "rlvf.run_id": run.run_id,
        }
        for suite in cfg["eval.suites"]:
            p = _pass1(result.metrics, suite, schema.EVAL_PREFIX)
            if p is not None:
                tags[f"rlvf.pass_at_1.{schema.suite_key(suite)}"] = f"{p[0]:.4f}"
        version = register_policy(run, model_id, name=name, alias=cfg["registry.alias"], tags=tags)
        result.registered = (name, str(version.version))
        alias = f" (alias '{cfg['registry.alias']}')" if cfg["registry.alias"] else ""
        result.summary.append(f"registered {name} version {version.version}{alias}")


def _cleanup(out: Path, cfg: Any) -> None:
    if not cfg["tracking.output_dir"]:
        shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------- entry points


def _run_bootstrap(cfg: Any) -> StageResult:
    """Bootstrap (or reuse) the embedded model and record it as a run."""
    from rlvf.models.bootstrap import bootstrap, parse_embedded, read_info
    from rlvf.models.loader import is_embedded
    from rlvf.tracking.runs import start_run

    policy = cfg["model.policy"]
    if not is_embedded(policy):
        raise UserError(f"bootstrap: model.policy must be 'embedded' or 'embedded:<config>', got '{policy}'")
    name = parse_embedded(policy)
    t0 = time.perf_counter()
    with start_run(cfg, "bootstrap", base_revision=_base_revision(cfg)) as run:
        path = bootstrap(name, progress=cfg["tracking.progress"])
        info = read_info(path)
        tr = info.get("train", {})
        curve = tr.get("loss_curve") or []
        every = max(1, int(tr.get("steps", len(curve)) or 1) // max(1, len(curve)))
        for i, v in enumerate(curve):
            run.metric("train/loss", v, step=i * every)
        run.metrics(
            {
                "train/steps": tr.get("steps", 0),
                "train/wall_s": sum((info.get("seconds") or {}).values()),
                "bootstrap/parameters": info.get("parameters", 0),
                "bootstrap/documents": (info.get("corpus") or {}).get("documents_kept", 0),
            }
        )
        run.log_dict("bootstrap.json", info)
        run.tag("rlvf.model_dir", str(path))
        res = StageResult(run.run_id, "bootstrap", cfg.hash)
    res.seconds = time.perf_counter() - t0
    res.summary.append(f"embedded model '{name}' at {path}")
    return res


def _run_pairs(cfg: Any) -> StageResult:
    """Sample from a policy, verify, build pairs; the pairs are the run's dataset artifact."""
    from rlvf.models.loader import load_policy
    from rlvf.tracking.runs import start_run

    init = resolve_init(cfg["model.init"])
    t0 = time.perf_counter()
    name = _policy_label(cfg) if init is None else f"init:{init.run_id or init.directory.name}"
    with start_run(
        cfg, "pairs", parent_run_id=init.run_id if init else None, base_revision=_base_revision(cfg)
    ) as run:
        ensure_base(cfg, run)
        policy = load_policy(_spec(cfg, init)) if init else None
        pairs = make_pairs(cfg, run, policy, name)
        res = StageResult(run.run_id, "pairs", cfg.hash, n_pairs=len(pairs))
    res.seconds = time.perf_counter() - t0
    res.summary.append(f"{len(pairs)} pairs logged as data/pairs.jsonl (use data.pairs={res.run_id})")
    return res


def _run_dpo(cfg: Any) -> StageResult:
    """DPO on given pairs (data.pairs) or on pairs built now from the base's own samples."""
    from rlvf.datasets.pairs import load_pairs, nested_subset
    from rlvf.models.loader import load_policy
    from rlvf.tracking.inputs import log_dataset
    from rlvf.tracking.runs import start_run
    from rlvf.train.common import output_dir
    from rlvf.train.dpo import train_dpo

    source = resolve_pairs(cfg["data.pairs"])
    init = resolve_init(cfg["model.init"])
    pairs: list[Pair] | None = None
    if source is not None:
        pairs = load_pairs(source.path)
        if not pairs:
            raise UserError(f"data.pairs: {cfg['data.pairs']} holds 0 pairs: nothing to train on")
        pairs = nested_subset(pairs, cfg["data.n_pairs"], seed=cfg["seed"])
    parent = (source.run_id if source else None) or (init.run_id if init else None)
    t0 = time.perf_counter()
    with start_run(cfg, "train", parent_run_id=parent, base_revision=_base_revision(cfg)) as run:
        res = StageResult(run.run_id, "dpo", cfg.hash)
        ensure_base(cfg, run)
        prefetch_base_eval(cfg)
        if pairs is None:
            policy = load_policy(_spec(cfg, init)) if init else None
            name = _policy_label(cfg) if init is None else f"init:{init.run_id or init.directory.name}"
            pairs = make_pairs(cfg, run, policy, name)
            del policy
        else:
            assert source is not None
            run.metrics({"data/pairs": len(pairs)})
            log_dataset(
                run,
                pairs,
                name="pairs",
                artifact_path="data/pairs.jsonl",
                lineage={
                    "source": str(cfg["data.pairs"]),
                    "source_run": source.run_id,
                    "n_pairs": cfg["data.n_pairs"],
                    "policy": pairs[0].policy or None,
                },
            )
        res.n_pairs = len(pairs)
        out = output_dir(cfg, run.run_id)
        try:
            _log(f"training DPO on {len(pairs)} pairs")
            trained = train_dpo(cfg, pairs, out, run=run, init_dir=init.directory if init else None)
            _log(f"trained {trained.steps} steps in {trained.wall_s:.1f}s")
            finish_training(cfg, run, trained, res)
        finally:
            _cleanup(out, cfg)
    res.seconds = time.perf_counter() - t0
    return res


def _run_sft(cfg: Any) -> StageResult:
    """SFT on the policy's own passed samples, or on a teacher-trace JSONL."""
    from rlvf.datasets.sft import load_traces, sft_from_samples
    from rlvf.models.loader import load_policy
    from rlvf.tracking.inputs import log_dataset
    from rlvf.tracking.runs import start_run
    from rlvf.train.common import output_dir
    from rlvf.train.sft import train_sft

    init = resolve_init(cfg["model.init"])
    rows = None
    if cfg["data.sft_source"] == "traces":
        rows = load_traces(
            cfg["data.traces"], min_chars=cfg["data.min_chars"], max_chars=cfg["data.max_chars"]
        )
        if not rows:
            raise UserError(f"data.traces: {cfg['data.traces']} holds no usable rows: nothing to train on")
    t0 = time.perf_counter()
    with start_run(
        cfg, "train", parent_run_id=init.run_id if init else None, base_revision=_base_revision(cfg)
    ) as run:
        res = StageResult(run.run_id, "sft", cfg.hash)
        ensure_base(cfg, run)
        prefetch_base_eval(cfg)
        name = _policy_label(cfg) if init is None else f"init:{init.run_id or init.directory.name}"
        if rows is None:
            tasks = _training_tasks(cfg)
            if init is None:
                samples, outcomes = base_samples(cfg, tasks, name)
            else:
                samples, outcomes = sample_and_verify(cfg, load_policy(_spec(cfg, init)), tasks, name)
            rows, stats = sft_from_samples(
                tasks,
                samples,
                outcomes,
                max_per_prompt=cfg["data.max_per_prompt"],
                dedupe=cfg["data.dedupe"],
                min_chars=cfg["data.min_chars"],
                max_chars=cfg["data.max_chars"],
            )
            run.metrics({f"data/{k}": v for k, v in stats.items()})
            if not rows:
                raise UserError(f"sft: none of {stats['samples']} samples passed: no SFT data")
            lineage = _data_lineage(
                cfg, name, source_run=run.run_id, max_per_prompt=cfg["data.max_per_prompt"]
            )
        else:
            lineage = {"source": cfg["data.traces"], "kind": "teacher traces"}
        run.metrics({"data/rows": len(rows)})
        log_dataset(run, rows, name="sft", artifact_path="data/sft.jsonl", lineage=lineage)
        out = output_dir(cfg, run.run_id)
        try:
            _log(f"training SFT on {len(rows)} examples")
            trained = train_sft(cfg, rows, out, run=run, init_dir=init.directory if init else None)
            _log(f"trained {trained.steps} steps in {trained.wall_s:.1f}s")
            finish_training(cfg, run, trained, res)
        finally:
            _cleanup(out, cfg)
    res.seconds = time.perf_counter() - t0
    return res


def _run_eval(cfg: Any) -> StageResult:
    """Evaluate a policy (the base, or model.init) on cfg.eval's suites and seeds."""
    from rlvf.evaluate import evaluate
    from rlvf.tracking.runs import start_run

    init = resolve_init(cfg["model.init"])
    t0 = time.perf_counter()
    if init is None:
        method, label = "base", _policy_label(cfg)
    else:
        method = init.method or "eval"
        label = f"{method}:{init.run_id[:8]}" if init.run_id else f"init:{init.directory.name}"
    with start_run(
        cfg,
        "eval",
        method=method,
        parent_run_id=init.run_id if init else None,
        invariants=cfg.invariants(init.invariants if init else None),
        base_revision=_base_revision(cfg),
    ) as run:
        res = StageResult(run.run_id, "eval", cfg.hash)
        ensure_base(cfg, run)
        if init is None:
            evals = base_eval(cfg)  # the same cache the training runs' base_eval uses
        else:
            evals = evaluate(
                _spec(cfg, init),
                _eval_settings(cfg),
                policy_name=label,
                workers=cfg["verify.workers"],
                progress=cfg["tracking.progress"],
            )
        res.metrics.update(_log_suite_evals(run, evals))
        for suite in cfg["eval.suites"]:
            p = _pass1(res.metrics, suite, schema.EVAL_PREFIX)
            if p is not None:
                res.summary.append(f"{suite} pass@1 {p[0]:.3f} ± {p[1]:.3f} ({label})")
    res.seconds = time.perf_counter() - t0
    return res


def _with_threads(fn):
    def stage(cfg: Any) -> StageResult:
        from rlvf.runtime import cpu_threads
        from rlvf.train.common import quiet

        with cpu_threads(cfg["model.device"]), quiet(cfg["tracking.progress"]):
            return fn(cfg)

    stage.__name__ = fn.__name__.lstrip("_")
    stage.__doc__ = fn.__doc__
    return stage


run_bootstrap = _with_threads(_run_bootstrap)
run_pairs = _with_threads(_run_pairs)
run_sft = _with_threads(_run_sft)
run_dpo = _with_threads(_run_dpo)
run_eval = _with_threads(_run_eval)

STAGES = {
    "bootstrap": run_bootstrap,
    "pairs": run_pairs,
    "sft": run_sft,
    "dpo": run_dpo,
    "eval": run_eval,
}
