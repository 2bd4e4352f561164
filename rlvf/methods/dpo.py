"""dpo: DPO (TRL's DPOTrainer) on verified preference pairs: a pairs file, a pairs run's
data/pairs.jsonl, or pairs built now from the policy's own samples (`methods.pairs.make_pairs`).

The default recipe is tuned for the embedded model: plain sigmoid DPO lowered pass@1 on it
(chosen log-probs fell with the rejected ones), so the loss adds an SFT term on the chosen
side (`loss_type: [sigmoid, sft]`), with precomputed reference log-probs and no gradient
checkpointing (TRL's defaults, lr 1e-6 and checkpointing on, do not suit a tiny model).

Tuning on the embedded default (procedural eval: 110 tasks x 4 samples x 3 seeds, T 0.8;
244 pairs from its own samples on procedural:train; paired delta of pass@1 vs the base, in
stderrs over tasks):

    loss weights (sigmoid, sft)   lr     epochs   delta     z
    (1, 1)                        2e-4   2        -0.002   -0.1
    (1, 1)                        2e-4   4        +0.028   +1.4
    (1, 1)                        5e-4   3        +0.033   +1.5
    (1, 1), beta 0.5              5e-4   3        +0.023   +1.0
    (1, 2)                        2e-4   3        +0.028   +1.4
    (0.5, 1)                      5e-4   3        +0.050   +2.1
    (0.5, 1)                      1e-3   2        +0.031   +1.5
    (0.25, 1)                     5e-4   3        +0.062   +2.8   <- default

Iterative DPO (`dpo.rounds: N`, `rlvf.pipeline.rounds`): N rounds, each sampling from the
latest policy, verifying, pairing and training DPO from that policy (its reference), each a
nested run with its own eval; `dpo.keep_pairs` adds the earlier rounds' pairs to a round's.
Given pairs (data.pairs) are round 1's; later rounds build their own.

That table was measured on an earlier embedded model (base pass@1 0.17, most failures
NameError). On the current one (base 0.53 in the main job, 432 pairs) the default recipe
gives +0.257 (+8.5 paired stderr; see the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvf.config.fields import Field
from rlvf.errors import UserError
from rlvf.methods.pairs import PAIR_FIELDS, make_pairs
from rlvf.methods.registry import Inputs, Method, Training
from rlvf.records import Pair

SECTION: dict[str, Field] = {
    "beta": Field("float", "DPO beta: strength of the pull towards the reference", minimum=0.0),
    "loss_type": Field("list[str]", "TRL loss types, combined (e.g. [sigmoid, sft])"),
    "loss_weights": Field("list[float]", "one weight per loss type", nullable=True),
    "precompute_ref_log_probs": Field("bool", "compute the reference log-probs once before training"),
    # Iterative DPO. Left out of config_hash at their defaults: one round is plain DPO, whose
    # recorded hashes stay valid.
    "rounds": Field(
        "int",
        "iterative DPO: sample-verify-pair-train rounds, each from the latest policy, each a nested run",
        minimum=1,
        hash_omits=(1,),
    ),
    "keep_pairs": Field(
        "bool", "iterative DPO: a round also trains on the earlier rounds' pairs", hash_omits=(False,)
    ),
}

FIELDS: dict[str, Field] = {
    "data.pairs": Field(
        "str",
        "existing pairs: a pairs JSONL path or the run id of a pairs run (empty: build them now)",
        nullable=True,
    ),
    **PAIR_FIELDS,
}


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


def resolve(cfg: Any) -> Inputs:
    """Given pairs (data.pairs) are loaded and subset before the run opens; none: built later."""
    from rlvf.datasets.pairs import load_pairs, nested_subset

    source = resolve_pairs(cfg["data.pairs"])
    if source is None:
        return Inputs()
    pairs = load_pairs(source.path)
    if not pairs:
        raise UserError(f"data.pairs: {cfg['data.pairs']} holds 0 pairs: nothing to train on")
    return Inputs(source.run_id, (source, nested_subset(pairs, cfg["data.n_pairs"], seed=cfg["seed"])))


def build_data(ctx: Any) -> list[Pair]:
    """The given pairs (logged as the run's dataset), or pairs built now from the policy's samples."""
    from rlvf.tracking.inputs import log_dataset

    cfg, run = ctx.cfg, ctx.run
    if ctx.inputs.data is None:
        policy = ctx.init_spec()
        pairs = make_pairs(cfg, run, policy, ctx.policy_name)
        del policy
        return pairs
    source, pairs = ctx.inputs.data
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
    return pairs


def pairs_dataset(pairs: Sequence[Pair]):
    from datasets import Dataset

    if not pairs:
        raise UserError("dpo: the pairs dataset is empty (0 pairs): nothing to train on")
    return Dataset.from_dict(
        {
            "prompt": [p.prompt for p in pairs],
            "chosen": [p.chosen for p in pairs],
            "rejected": [p.rejected for p in pairs],
        }
    )


def config_class() -> type:
    from trl import DPOConfig

    return DPOConfig


def trainer_args(cfg: Any) -> dict[str, Any]:
    return dict(
        max_length=cfg["train.max_length"],
        remove_unused_columns=True,
        beta=cfg["dpo.beta"],
        loss_type=list(cfg["dpo.loss_type"]),
        loss_weights=cfg["dpo.loss_weights"],
        precompute_ref_log_probs=cfg["dpo.precompute_ref_log_probs"],
    )


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    from trl import DPOTrainer

    return DPOTrainer(
        model=model,
        args=args,
        train_dataset=pairs_dataset(rows),
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def health(history: list[dict[str, float]]) -> list[str]:
    """Chosen log-probs falling: the failure seen with plain sigmoid DPO on a tiny model
    (chosen fell with rejected)."""
    chosen = [h["train/logps_chosen"] for h in history if "train/logps_chosen" in h]
    if len(chosen) >= 4 and sum(chosen[-2:]) / 2 < sum(chosen[:2]) / 2 - 1.0:
        return ["chosen_logps_fell"]
    return []


def examples(n: int) -> list[Pair]:
    """Pairs that need no model: a task's reference solution (chosen) against a wrong one."""
    from rlvf.tasks import load_suite

    tasks = [t for t in load_suite("procedural:train") if t.wrong_solutions][:n]
    return [
        Pair(
            t.prompt,
            t.canonical_solution,
            t.wrong_solutions[0].completion,
            t.task_id,
            0,
            1,
            "assertion",
            "ref",
        )
        for t in tasks
    ]


METHOD = Method(
    name="dpo",
    help="DPO (TRL) on verified pairs (a file, a pairs run id, or built now); evaluates against the base, "
    "logs and registers the result. The same as `mlflow run . -e dpo --env-manager local`.",
    uses=("generate", "data", "verify"),
    section=SECTION,
    fields=FIELDS,
    shortcuts={"pairs": "data.pairs", "n_pairs": "data.n_pairs", "beta": "dpo.beta", "rounds": "dpo.rounds"},
    mlproject=(
        "policy",
        "init",
        "pairs",
        "n_pairs",
        "learning_rate",
        "epochs",
        "beta",
        "rounds",
        "seeds",
        "seed",
    ),
    scan=("data.n_pairs",),
    training=Training(
        title="DPO",
        noun="pairs",
        resolve=resolve,
        build_data=build_data,
        config_class=config_class,
        trainer_args=trainer_args,
        make_trainer=make_trainer,
        # rounds/...: iterative DPO's pass@1 per round (step = round), on the default eval suite
        curves=(
            "train/loss",
            "train/rewards_margins",
            "train/rewards_accuracies",
            "rounds/procedural/pass_at_1",
        ),
        health=health,
        examples=examples,
        rounds=lambda cfg: cfg["dpo.rounds"],
        keep_data=lambda cfg: cfg["dpo.keep_pairs"],
    ),
)
