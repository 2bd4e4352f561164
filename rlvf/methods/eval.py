"""eval: evaluate a policy (the base, or model.init: a run id, a models:/ URI or a directory)
on cfg.eval's suites and seeds, and on cfg.eval.lm_eval's tasks, as one run of its own.

With `eval.select: rm:<rm run id | models:/ URI | directory>` it also runs best-of-N: N =
`eval.select_n` samples per task and seed (the eval's own samples when eval.n_samples >= N,
else N new ones with the same settings), one picked per task by the reward model's score,
and logs pass@1 of the RM's pick against a random pick and the oracle (any of the N passed):
`eval/bon/{rm,random,oracle}_pass1` (mean over suites; per suite under `eval/bon/<suite>/`,
with `_std` over seeds and per seed), `eval/bon/rm_gain` (rm - random), and every selection
as `bon/<suite>/selections.jsonl`. See `rlvf.evaluate.bestofn`.
"""

from __future__ import annotations

import time
from typing import Any

from rlvf.config.fields import Field
from rlvf.errors import UserError
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
from rlvf.pipeline.result import StageResult, log
from rlvf.tracking import schema

FIELDS: dict[str, Field] = {
    "eval.select": Field(
        "str",
        "best-of-N: pick one of eval.select_n samples per task by a reward model "
        "(rm:<rm run id | models:/name/version | models:/name@alias | directory>; null: off)",
        nullable=True,
    ),
    "eval.select_n": Field(
        "int", "best-of-N: samples per task and seed the selector chooses from", minimum=2
    ),
}

BON_PREFIX = f"{schema.EVAL_PREFIX}/bon"


def load_selector(cfg: Any) -> Any:
    """The eval.select reward model, loaded before a run opens (a bad reference is one line
    and leaves no run behind); None when best-of-N is off."""
    spec = cfg["eval.select"]
    if not spec:
        return None
    if not spec.startswith("rm:"):
        raise UserError(
            f"eval.select: '{spec}' is not a selector; use rm:<rm run id | models:/name/version | "
            "models:/name@alias | directory>"
        )
    from rlvf.rewards.reward_model import load_reward_model

    return load_reward_model(
        spec, device=cfg["model.device"], batch_size=cfg["eval.batch_size"], what="eval.select"
    )


def run_best_of_n(
    cfg: Any, run: Any, policy: Any, label: str, evals: dict[str, Any], rm: Any
) -> tuple[list[str], dict[str, float]]:
    """Best-of-N for every suite (see the module doc); logs the metrics and selections and
    returns one summary line per suite and the metrics."""
    import dataclasses

    from rlvf.evaluate import evaluate, load_tasks
    from rlvf.evaluate.bestofn import KINDS, best_of_n

    n = cfg["eval.select_n"]
    settings = eval_settings(cfg)
    lines, pooled, logged = [], {k: 0.0 for k in KINDS}, {}
    for suite in settings.suites:
        ev = evals.get(suite)
        if ev is None or settings.n_samples < n or not ev.samples or not ev.outcomes:
            log(f"best-of-{n}: sampling {n} per task on {suite}")
            more = dataclasses.replace(settings, suites=(suite,), n_samples=n)
            ev = evaluate(
                policy,
                more,
                policy_name=label,
                workers=cfg["verify.workers"],
                progress=cfg["tracking.progress"],
            )[suite]
        tasks = load_tasks(suite, settings.per_cell, settings.limit)
        bon = best_of_n(ev, tasks, rm, n, batch_size=cfg["eval.batch_size"])
        logged.update(bon.metrics(f"{BON_PREFIX}/{schema.suite_key(suite)}"))
        run.log_jsonl(f"bon/{schema.suite_key(suite)}/selections.jsonl", bon.selections)
        summary = bon.summary()
        for k in KINDS:
            pooled[k] += summary[k][0] / len(settings.suites)
        lines.append(
            f"{suite} best-of-{n} by {cfg['eval.select']}: pass@1 RM-selected {summary['rm'][0]:.3f} "
            f"vs random {summary['random'][0]:.3f} vs oracle {summary['oracle'][0]:.3f} "
            f"(mean over {len(bon.per_seed)} seed(s), {bon.n_tasks} tasks)"
        )
    metrics = {f"{BON_PREFIX}/{k}_pass1": v for k, v in pooled.items()}
    metrics[f"{BON_PREFIX}/rm_gain"] = pooled["rm"] - pooled["random"]
    metrics[f"{BON_PREFIX}/n"] = float(n)
    logged.update(metrics)
    run.metrics(logged)
    return lines, logged


def run_eval(cfg: Any) -> StageResult:
    """Evaluate a policy (the base, or model.init) on cfg.eval's suites and seeds; with
    eval.select, best-of-N by a reward model too."""
    from rlvf.evaluate import evaluate
    from rlvf.evaluate.lmeval import LmEvalSettings, run_lm_eval
    from rlvf.tracking.runs import start_run

    init = resolve_init(cfg["model.init"])
    selector = load_selector(cfg)
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
        if selector is not None:
            lines, metrics = run_best_of_n(cfg, run, policy_spec(cfg, init), label, evals, selector)
            res.summary.extend(lines)
            res.metrics.update(metrics)
    res.seconds = time.perf_counter() - t0
    return res


METHOD = Method(
    name="eval",
    help="Evaluate a policy (the base, or --init RUN_ID|models:/...|DIR) on code suites over several seeds "
    "and on lm-eval tasks (eval.lm_eval.tasks); with --select rm:<RM>, best-of-N by a reward model "
    "against random and oracle picks.",
    kind="eval",
    uses=("verify", "eval"),
    fields=FIELDS,
    shortcuts={"select": "eval.select"},
    mlproject=("policy", "init", "suites", "seeds", "select"),
    run=run_eval,
)
