"""eval: evaluate a policy (the base, or model.init: a run id, a models:/ URI or a directory)
on cfg.eval's suites and seeds, and on cfg.eval.lm_eval's tasks, as one run of its own."""

from __future__ import annotations

import time
from typing import Any

from rlvf.methods.registry import Method
from rlvf.pipeline.base import (
    base_eval,
    base_lm_eval,
    base_revision,
    ensure_base,
    eval_settings,
    policy_label,
    policy_spec,
)
from rlvf.pipeline.finish import lm_eval_summary, log_lm_eval, log_suite_evals, pass1
from rlvf.pipeline.inputs import resolve_init
from rlvf.pipeline.result import StageResult
from rlvf.tracking import schema


def run_eval(cfg: Any) -> StageResult:
    """Evaluate a policy (the base, or model.init) on cfg.eval's suites and seeds."""
    from rlvf.evaluate import evaluate
    from rlvf.evaluate.lmeval import LmEvalSettings, run_lm_eval
    from rlvf.tracking.runs import start_run

    init = resolve_init(cfg["model.init"])
    t0 = time.perf_counter()
    if init is None:
        method, label = "base", policy_label(cfg)
    else:
        method = init.method or "eval"
        label = f"{method}:{init.run_id[:8]}" if init.run_id else f"init:{init.directory.name}"
    with start_run(
        cfg,
        "eval",
        method=method,
        parent_run_id=init.run_id if init else None,
        invariants=cfg.invariants(init.invariants if init else None),
        base_revision=base_revision(cfg),
    ) as run:
        res = StageResult(run.run_id, "eval", cfg.hash)
        ensure_base(cfg, run)
        if init is None:
            evals = base_eval(cfg)  # the same cache the training runs' base_eval uses
        else:
            evals = evaluate(
                policy_spec(cfg, init),
                eval_settings(cfg),
                policy_name=label,
                workers=cfg["verify.workers"],
                progress=cfg["tracking.progress"],
            )
        res.metrics.update(log_suite_evals(run, evals))
        lm_settings = LmEvalSettings.from_config(cfg)
        lm = None
        if lm_settings.tasks:  # on the same run, after the code suites
            t1 = time.perf_counter()
            lm = (
                base_lm_eval(cfg)
                if init is None
                else run_lm_eval(
                    policy_spec(cfg, init), lm_settings, policy_name=label, progress=cfg["tracking.progress"]
                )
            )
            res.metrics.update(log_lm_eval(run, lm))
            run.metrics({"time/lm_eval_s": time.perf_counter() - t1})
        for suite in cfg["eval.suites"]:
            p = pass1(res.metrics, suite, schema.EVAL_PREFIX)
            if p is not None:
                res.summary.append(f"{suite} pass@1 {p[0]:.3f} ± {p[1]:.3f} ({label})")
        if lm is not None:
            res.summary.extend(lm_eval_summary(lm, label))
    res.seconds = time.perf_counter() - t0
    return res


METHOD = Method(
    name="eval",
    help="Evaluate a policy (the base, or --init RUN_ID|models:/...|DIR) on code suites over several seeds "
    "and on lm-eval tasks (eval.lm_eval.tasks).",
    kind="eval",
    uses=("verify", "eval"),
    mlproject=("policy", "init", "suites", "seeds"),
    run=run_eval,
)
