"""kto: KTO (TRL's KTOTrainer) on unpaired rows from the policy's own verified samples.

Each verified sample is one row (prompt, completion, label): desirable exactly when the
sandboxed verifier passed it (`rlvf.datasets.unpaired`, cut from the same verified samples
and the same per-prompt split as DPO's pairs). KTO needs no pairs, so prompts whose samples
all passed or all failed still teach something.

The desirable/undesirable loss weights follow the class balance: the majority class keeps
weight 1 and the minority one is weighted up so that lambda_D n_D / (lambda_U n_U) equals
`kto.weight_ratio`, inside the KTO paper's [1, 4/3] (TRL warns outside it). The counts,
their ratio and both weights are logged on the run.

TRL's KTO estimates its KL reference point from mismatched (prompt, completion) pairs inside
each batch, so it needs at least 2 rows per device batch: the config check refuses
`train.batch_size: 1` before a run opens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlvf.config.fields import Field
from rlvf.datasets.unpaired import RATIO_BOUNDS
from rlvf.errors import UserError
from rlvf.methods.registry import Inputs, Method, Training

SECTION: dict[str, Field] = {
    "beta": Field("float", "KTO beta: strength of the pull towards the reference", minimum=0.0),
    "loss_type": Field("str", "TRL loss type", choices=("kto", "apo_zero_unpaired")),
    "weight_ratio": Field(
        "float",
        "weighted desirable:undesirable ratio the class-balance weights aim at (KTO paper: [1, 4/3])",
        minimum=RATIO_BOUNDS[0],
        maximum=RATIO_BOUNDS[1],
    ),
    "precompute_ref_log_probs": Field("bool", "compute the reference log-probs once before training"),
}


def resolve(cfg: Any) -> Inputs:
    """The batch-size rule is checked before a run opens (a bad recipe leaves no run behind)."""
    if cfg["kto.loss_type"] == "kto" and cfg["train.batch_size"] < 2:
        raise UserError(
            f"kto: train.batch_size must be at least 2 (got {cfg['train.batch_size']}): "
            "KTO estimates its KL term from the other rows of a batch"
        )
    return Inputs()


def build_data(ctx: Any) -> list[dict[str, Any]]:
    """Sample and verify (base: cached), label each kept sample by its verdict, log the rows,
    the class balance and the weights it sets."""
    from rlvf.datasets.unpaired import kto_weights, unpaired_from_samples
    from rlvf.pipeline.result import log
    from rlvf.pipeline.sampling import data_lineage, training_tasks, verified_samples
    from rlvf.tracking.inputs import log_dataset

    cfg, run = ctx.cfg, ctx.run
    tasks = training_tasks(cfg)
    policy = ctx.init_spec()
    samples, outcomes = verified_samples(cfg, policy, tasks, ctx.policy_name)
    del policy
    rows, stats = unpaired_from_samples(
        tasks,
        samples,
        outcomes,
        dedupe=cfg["data.dedupe"],
        min_chars=cfg["data.min_chars"],
        max_chars=cfg["data.max_chars"],
        seed=cfg["seed"],
    )
    run.metrics({f"data/{k}": v for k, v in stats.items()})
    run.metrics({"data/rows": len(rows)})
    n_d, n_u = stats["desirable"], stats["undesirable"]
    w_d, w_u = kto_weights(n_d, n_u, cfg["kto.weight_ratio"])
    balance = {
        "desirable_ratio": n_d / max(1, n_u),
        "desirable_weight": w_d,
        "undesirable_weight": w_u,
        "weighted_ratio": (w_d * n_d) / (w_u * n_u),
    }
    run.metrics({f"kto/{k}": v for k, v in balance.items()})
    run.params({"kto.desirable_weight": round(w_d, 6), "kto.undesirable_weight": round(w_u, 6)})
    log_dataset(
        run,
        rows,
        name="kto",
        artifact_path="data/kto.jsonl",
        lineage=data_lineage(cfg, ctx.policy_name, source_run=run.run_id, desirable=n_d, undesirable=n_u),
    )
    log(f"{len(rows)} rows: {n_d} desirable (weight {w_d:.3f}), {n_u} undesirable (weight {w_u:.3f})")
    return rows


def kto_dataset(rows: Sequence[Mapping[str, Any]]):
    from datasets import Dataset

    if not rows:
        raise UserError("kto: the training set is empty (0 rows): nothing to train on")
    return Dataset.from_dict(
        {
            "prompt": [r["prompt"] for r in rows],
            "completion": [r["completion"] for r in rows],
            "label": [bool(r["label"]) for r in rows],
        }
    )


def config_class() -> type:
    from trl import KTOConfig

    return KTOConfig


def trainer_args(cfg: Any) -> dict[str, Any]:
    return dict(
        max_length=cfg["train.max_length"],
        remove_unused_columns=True,
        beta=cfg["kto.beta"],
        loss_type=cfg["kto.loss_type"],
        precompute_ref_log_probs=cfg["kto.precompute_ref_log_probs"],
    )


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    """KTOTrainer with the class-balance weights of `rows` (the data decides them, not the recipe)."""
    from trl import KTOTrainer

    from rlvf.datasets.unpaired import kto_weights

    n_d = sum(bool(r["label"]) for r in rows)
    args.desirable_weight, args.undesirable_weight = kto_weights(
        n_d, len(rows) - n_d, cfg["kto.weight_ratio"]
    )
    return KTOTrainer(
        model=model,
        args=args,
        train_dataset=kto_dataset(rows),
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def examples(n: int) -> list[dict[str, Any]]:
    """Rows that need no model: reference solutions (desirable) and wrong ones (undesirable),
    interleaved so every batch holds both."""
    from rlvf.tasks import load_suite

    tasks = [t for t in load_suite("procedural:train") if t.wrong_solutions]
    rows = []
    for i in range(n):
        t = tasks[(i // 2) % len(tasks)]
        good = i % 2 == 0
        rows.append(
            {
                "prompt": t.prompt,
                "completion": t.canonical_solution if good else t.wrong_solutions[0].completion,
                "label": good,
                "task_id": t.task_id,
            }
        )
    return rows


METHOD = Method(
    name="kto",
    help="KTO (TRL) on the policy's own verified samples, each labelled by its verdict (unpaired), with "
    "class-balance weights; evaluates against the base, logs and registers the result. The same as "
    "`mlflow run . -e kto --env-manager local`.",
    uses=("generate", "data", "verify"),
    section=SECTION,
    shortcuts={"kto_beta": "kto.beta"},
    mlproject=("policy", "init", "suite", "learning_rate", "epochs", "kto_beta", "seeds", "seed"),
    training=Training(
        title="KTO",
        noun="rows",
        resolve=resolve,
        build_data=build_data,
        config_class=config_class,
        trainer_args=trainer_args,
        make_trainer=make_trainer,
        curves=("train/loss", "train/rewards_margins", "train/kl"),
        examples=examples,
    ),
)
