"""After training: log the model, evaluate it and the base (code suites, then lm-eval tasks),
compare the two with the site's statistic, register a version."""

from __future__ import annotations

import json
import time
from typing import Any

from rlvf.pipeline.base import base_eval, base_lm_eval, eval_settings, policy_label
from rlvf.pipeline.result import StageResult, log
from rlvf.tracking import schema


def log_suite_evals(run: Any, evals: dict[str, Any], prefix: str = schema.EVAL_PREFIX) -> dict[str, float]:
    from rlvf.tracking.evallog import log_eval_result

    logged: dict[str, float] = {}
    for suite, ev in evals.items():
        logged.update(log_eval_result(run.run_id, ev.result, prefix=prefix, client=run.client))
        if getattr(ev, "ranks", None):  # the ranks of an external launch shared the seeds
            run.tag(
                f"{schema.TAG_PREFIX}{prefix}.ranks", json.dumps({str(r): s for r, s in ev.ranks.items()})
            )
        base = f"{prefix}/{schema.suite_key(suite)}"
        if ev.samples:
            run.log_jsonl(f"{base}/{schema.SAMPLES_ARTIFACT}", ev.samples)
        if ev.outcomes:
            run.log_jsonl(f"{base}/{schema.OUTCOMES_ARTIFACT}", ev.outcomes)
    return logged


def log_lm_eval(run: Any, res: Any, prefix: str = schema.LM_EVAL_PREFIX) -> dict[str, float]:
    """An `LmEvalResult` into the run: metrics ``<prefix>/<task>/<metric>`` (and ``_stderr``),
    lm-eval's and each task's version as tags, the results JSON and per-sample logs."""
    logged = {f"{prefix}/{k}": v for k, v in res.metrics.items()}
    run.metrics(logged)
    tags = {schema.lm_eval_tag(prefix, "version"): res.lm_eval_version}
    tags.update({schema.lm_eval_tag(prefix, f"task_version.{t}"): v for t, v in res.task_versions.items()})
    if res.lower_is_better:
        tags[schema.lm_eval_tag(prefix, "lower_is_better")] = ",".join(res.lower_is_better)
    run.tags(tags)
    if res.raw:
        run.log_dict(f"{prefix}/results.json", res.raw)
    for task, rows in res.samples.items():
        run.log_jsonl(f"{prefix}/samples/{task}.jsonl", rows)
    run.flush()
    return logged


def lm_eval_summary(res: Any, label: str) -> list[str]:
    """One line per lm-eval task: its metrics with their stderr."""
    by_task: dict[str, list[str]] = {}
    for k, v in res.metrics.items():
        if k.endswith("_stderr"):
            continue
        task, metric = k.split("/", 1)
        se = res.metrics.get(k + "_stderr")
        by_task.setdefault(task, []).append(f"{metric} {v:.3f}" + (f" ± {se:.3f}" if se is not None else ""))
    return [f"lm-eval {task}: {', '.join(parts)} ({label})" for task, parts in by_task.items()]


def pass1(metrics: dict[str, float], suite: str, prefix: str) -> tuple[float, float] | None:
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
    one summary line per suite, judged by the site's statistic (`report.headtohead.suite_delta`:
    2xSE and McNemar), so the terminal and the site always give the same verdict."""
    from rlvf.report.collect import eval_record
    from rlvf.report.headtohead import suite_delta

    lines = []
    for suite, ev in evals.items():
        if suite not in bases:
            continue
        base_rec, new_rec = eval_record(bases[suite].result), eval_record(ev.result)
        d = suite_delta(base_rec, new_rec)
        new, base = new_rec["summary"]["pass_at_1"], base_rec["summary"]["pass_at_1"]
        delta, se = d["delta"], d["se"]
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
            f"± {new['stderr']:.3f}: {delta:+.3f} ± {2 * se:.3f} (2×SE), "
            f"tasks improved {d['improved']} / regressed {d['regressed']} (McNemar p={d['mcnemar_p']:.3g}): "
            f"{d['verdict']}"
        )
    return lines


def finish_training(
    cfg: Any, run: Any, trained: Any, result: StageResult, evals: dict[str, Any] | None = None
) -> dict[str, Any]:
    """After training: log the model, evaluate (metrics attach to the model), record the base's
    eval, then register a version and move the alias (last, so a version always has metrics).

    `evals`: the trained policy's evaluation when it was already run (the last round of an
    iterative run evaluated the policy its parent registers); returns the evaluation."""
    from rlvf.evaluate import evaluate
    from rlvf.evaluate.lmeval import LmEvalSettings, run_lm_eval
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
    lm_settings = LmEvalSettings.from_config(cfg)
    t0 = time.perf_counter()
    bases: dict[str, Any] = {}
    with active_model(model_id):
        fresh = evals is None
        if evals is None:
            evals = evaluate(
                trained.spec,
                eval_settings(cfg),
                policy_name=label,
                workers=cfg["verify.workers"],
                progress=cfg["tracking.progress"],
            )
        result.metrics.update(log_suite_evals(run, evals))
        if fresh:
            run.metrics({"time/eval_s": time.perf_counter() - t0})
        lm = None
        if lm_settings.tasks:
            t1 = time.perf_counter()
            lm = run_lm_eval(trained.spec, lm_settings, policy_name=label, progress=cfg["tracking.progress"])
            result.metrics.update(log_lm_eval(run, lm))
            run.metrics({"time/lm_eval_s": time.perf_counter() - t1})
        run.flush()
    if fresh:
        log(f"evaluated the trained policy in {time.perf_counter() - t0:.1f}s")
    if cfg["eval.base"]:
        from rlvf.tracking.evallog import log_eval_result

        t0 = time.perf_counter()
        bases = base_eval(cfg)
        for _suite, ev in bases.items():
            result.metrics.update(
                log_eval_result(run.run_id, ev.result, prefix=schema.BASE_EVAL_PREFIX, client=run.client)
            )
        base_lm = base_lm_eval(cfg)
        if base_lm is not None:
            result.metrics.update(log_lm_eval(run, base_lm, schema.BASE_LM_EVAL_PREFIX))
        log(f"base eval recorded in {time.perf_counter() - t0:.1f}s")
    result.summary.extend(compare_with_base(run, evals, bases, cfg.method))
    if lm is not None:
        result.summary.extend(lm_eval_summary(lm, label))
    if not bases:
        for suite, ev in evals.items():
            p = pass1(result.metrics, suite, schema.EVAL_PREFIX)
            if p is not None:
                result.summary.append(f"{suite} pass@1 {p[0]:.3f} ± {p[1]:.3f} ({ev.result.policy})")
    spooled = getattr(run.client, "spool", None) is not None  # the server is away: all waits for upload
    if cfg["tracking.log_model"] and (model_id or spooled) and cfg["registry.register"]:
        name = cfg["registry.name"] or registered_model_name(cfg["model.policy"])
        tags = {
            schema.TAG_METHOD: cfg.method,
            schema.TAG_CONFIG_HASH: cfg.hash,
            schema.TAG_INVARIANTS_HASH: run.invariants_hash,
            schema.TAG_BASE_MODEL: policy_label(cfg),
            "rlvf.run_id": run.run_id,
        }
        for suite in cfg["eval.suites"]:
            p = pass1(result.metrics, suite, schema.EVAL_PREFIX)
            if p is not None:
                tags[f"rlvf.pass_at_1.{schema.suite_key(suite)}"] = f"{p[0]:.4f}"
        version = register_policy(run, model_id, name=name, alias=cfg["registry.alias"], tags=tags)
        if version is None:
            result.summary.append(f"registration of {name} waits in the spool (rlvf upload)")
            return
        result.registered = (name, str(version.version))
        alias = f" (alias '{cfg['registry.alias']}')" if cfg["registry.alias"] else ""
        result.summary.append(f"registered {name} version {version.version}{alias}")
    return evals
