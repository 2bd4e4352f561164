"""Iterative training: several sample-train rounds inside one run (iterative DPO, `dpo.rounds`).

    parent run (the method's run; registers the final policy)
      round 1: nested run -> data from the start policy -> train from it -> evaluate
      round 2: nested run -> data from round 1's policy -> train from it -> evaluate
      ...

Each round samples from the latest policy, so its data targets that policy's own failures
(seed 001: more pairs from another distribution made things worse). A round is a full
training run of the method (its data metrics and dataset, its curves, its eval and the
comparison with the base) except that it logs and registers no model; its reference policy
(DPO) is the policy it started from. The parent gets, per round, the eval's pass@1 as a
stepped curve (`rounds/<suite>/pass_at_1`, step = round, step 0 the base when the run started
from it), the rounds' training curves end to end, and the last round's eval, under which
the final policy is logged and registered once.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

from rlvf.pipeline.finish import finish_training, pass1
from rlvf.pipeline.inputs import PolicySource
from rlvf.pipeline.result import StageResult, log
from rlvf.tracking import schema

TAG_ROUND = "rlvf.round"
KIND_ROUND = "round"


def round_metric(suite: str, name: str = "pass_at_1") -> str:
    """The parent's per-round curve of an eval suite's metric (step = round)."""
    return f"rounds/{schema.suite_key(suite)}/{name}"


def _round_config(cfg: Any, parent_name: str, r: int) -> Any:
    """A round's config: the parent's, less model logging and registration (both unhashed, so
    a round's config_hash is its parent's)."""
    return cfg.replace(
        {
            "tracking.log_model": "false",
            "registry.register": "false",
            "tracking.run_name": f"{parent_name}/round-{r}",
        }
    )


def run_rounds(
    method: Any,
    cfg: Any,
    run: Any,
    result: StageResult,
    *,
    init: PolicySource | None,
    inputs: Any,
    n_rounds: int,
) -> None:
    """Run `n_rounds` rounds of `method` under the open run `run` (see the module doc)."""
    import mlflow

    from rlvf.methods import Inputs
    from rlvf.pipeline.base import base_revision
    from rlvf.pipeline.lifecycle import DataContext
    from rlvf.tracking.runs import start_run
    from rlvf.train.common import output_dir, train_policy

    training = method.training
    keep = bool(training.keep_data(cfg)) if training.keep_data else False
    active = mlflow.active_run()
    parent_name = (active.info.run_name if active else None) or run.run_id[:8]
    with contextlib.suppress(Exception):  # the name in the store (renamed under `mlflow run`)
        parent_name = run.client.get_run(run.run_id).info.run_name or parent_name
    source = init
    kept: list[Any] = []
    outs: list[Any] = []
    steps = 0
    wall = 0.0
    trained = evals = None
    try:
        for r in range(1, n_rounds + 1):
            t0 = time.perf_counter()
            rcfg = _round_config(cfg, parent_name, r)
            log(f"round {r}/{n_rounds}")
            with start_run(
                rcfg,
                KIND_ROUND,
                child_of=run.run_id,
                base_revision=base_revision(cfg),
                extra_tags={TAG_ROUND: str(r), "rlvf.rounds": str(n_rounds)},
            ) as child:
                child_res = StageResult(child.run_id, method.name, rcfg.hash)
                rows = training.build_data(DataContext(rcfg, child, source, inputs if r == 1 else Inputs()))
                rows = kept + list(rows) if keep else list(rows)
                kept = rows if keep else []
                child.metrics({"data/train_rows": len(rows)})
                out = output_dir(rcfg, child.run_id)
                outs.append(out)
                log(f"round {r}: training {training.title} on {len(rows)} {training.noun}")
                trained = train_policy(
                    method, rcfg, rows, out, run=child, init_dir=source.directory if source else None
                )
                evals = finish_training(rcfg, child, trained, child_res)
            _log_round(run, cfg["eval.suites"], r, child_res, trained, len(rows), steps, r == 1 and not init)
            steps += trained.steps
            wall += trained.wall_s
            result.n_examples = len(rows)
            line = "; ".join(
                f"{suite} pass@1 {p[0]:.3f} ± {p[1]:.3f}"
                for suite in cfg["eval.suites"]
                if (p := pass1(child_res.metrics, suite, schema.EVAL_PREFIX)) is not None
            )
            result.summary.append(f"round {r} (run {child.run_id[:8]}): {line}")
            log(f"round {r} done in {time.perf_counter() - t0:.1f}s: {line}")
            if len(outs) > 1:  # the policy the finished round started from is no longer needed
                _remove(outs[-2], cfg)
            source = PolicySource(trained.policy_dir, child.run_id, method=method.name)
        run.metrics({"train/steps": steps, "train/wall_s": wall, "rounds/n": n_rounds})
        finish_training(cfg, run, trained, result, evals=evals)
    finally:
        for out in outs:
            _remove(out, cfg)


def _remove(out: Any, cfg: Any) -> None:
    """A round's folder, once its policy is no longer needed (rounds are not resumable: a
    crashed iterative run starts again), unless the user chose where folders go."""
    import shutil

    if not cfg["tracking.output_dir"]:
        shutil.rmtree(out, ignore_errors=True)


def _log_round(
    run: Any, suites: list[str], r: int, res: StageResult, trained: Any, n_rows: int, offset: int, first: bool
) -> None:
    """The parent's view of round r: pass@1 per suite at step r (the base's at step 0 before
    the first round, when the run started from the base), the round's training rows, and its
    training curves shifted past the earlier rounds' steps."""
    for suite in suites:
        for name in ("pass_at_1", "pass_at_1_stderr"):
            key = schema.eval_metric(suite, name)
            if key in res.metrics:
                run.metric(round_metric(suite, name), res.metrics[key], step=r)
            base = schema.eval_metric(suite, name, schema.BASE_EVAL_PREFIX)
            if first and base in res.metrics:
                run.metric(round_metric(suite, name), res.metrics[base], step=0)
    run.metric("rounds/train_rows", n_rows, step=r)
    for row in trained.history:
        step = offset + int(row.get("step", 0))
        for k, v in row.items():
            if k != "step" and k.startswith("train/") and math.isfinite(v):
                run.metric(k, v, step=step)
    run.flush()
