"""pairs: sample from a policy, verify, and build preference pairs (chosen passed, rejected
failed, same policy and prompt), logged as a run whose dataset is data/pairs.jsonl. DPO builds
its pairs with the same `make_pairs` when it is given none."""

from __future__ import annotations

import time
from typing import Any

from rlvf.config.fields import Field
from rlvf.errors import UserError
from rlvf.methods.registry import Method
from rlvf.pipeline.base import base_revision, ensure_base, policy_spec
from rlvf.pipeline.inputs import init_label, resolve_init
from rlvf.pipeline.result import StageResult, log
from rlvf.pipeline.sampling import data_lineage, training_tasks, verified_samples
from rlvf.records import Pair

# Keys of the data section that pairs and DPO share (the same Field objects: one key).
PAIR_FIELDS: dict[str, Field] = {
    "data.pairs_per_prompt": Field("int", "most pairs kept per prompt", minimum=1),
    "data.n_pairs": Field(
        "int",
        "train on a fixed-size subset of this many pairs; subsets of one pool are nested",
        nullable=True,
        minimum=1,
    ),
}


def make_pairs(cfg: Any, run: Any, policy: Any, policy_name: str) -> list[Pair]:
    """Sample, verify and pair on cfg.data.suite; logs the data metrics and the dataset input.
    `policy` None means the base policy (its verified samples are cached).
    Zero pairs is a UserError (after the stats are logged, so the run says why)."""
    from rlvf.datasets.pairs import build_pairs, nested_subset
    from rlvf.tracking.inputs import log_dataset

    tasks = training_tasks(cfg)
    log(
        f"sampling {cfg['generate.n_samples']} completions for each of {len(tasks)} prompts ({cfg['data.suite']})"
    )
    t0 = time.perf_counter()
    samples, outcomes = verified_samples(cfg, policy, tasks, policy_name)
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
        lineage=data_lineage(
            cfg,
            policy_name,
            pairs_per_prompt=cfg["data.pairs_per_prompt"],
            n_pairs=cfg["data.n_pairs"],
            pool=len(pool),
            source_run=run.run_id,
        ),
    )
    log(
        f"{len(pairs)} pairs from {stats.prompts_paired}/{stats.prompts} prompts "
        f"(sample pass rate {n_pass / max(1, len(outcomes)):.2f}; dataset digest {digest}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return pairs


def run_pairs(cfg: Any) -> StageResult:
    """Sample from a policy, verify, build pairs; the pairs are the run's dataset artifact."""
    from rlvf.tracking.runs import start_run

    init = resolve_init(cfg["model.init"])
    t0 = time.perf_counter()
    name = init_label(cfg, init)
    with start_run(
        cfg, "pairs", parent_run_id=init.run_id if init else None, base_revision=base_revision(cfg)
    ) as run:
        ensure_base(cfg, run)
        policy = policy_spec(cfg, init) if init else None  # loaded where it samples
        pairs = make_pairs(cfg, run, policy, name)
        res = StageResult(run.run_id, "pairs", cfg.hash, n_examples=len(pairs))
    res.seconds = time.perf_counter() - t0
    res.summary.append(f"{len(pairs)} pairs logged as data/pairs.jsonl (use data.pairs={res.run_id})")
    return res


METHOD = Method(
    name="pairs",
    help="Sample from a policy, verify, and build preference pairs (chosen passed, rejected failed, same "
    "policy and prompt), logged as an MLflow run with data/pairs.jsonl as its dataset.",
    kind="pairs",
    uses=("generate", "data", "verify"),
    fields=PAIR_FIELDS,
    shortcuts={"n_pairs": "data.n_pairs"},
    mlproject=("policy", "init", "suite", "n_pairs", "seed"),
    scan=("data.n_pairs",),
    run=run_pairs,
)
