"""rm: a reward model (TRL's RewardTrainer) on verified pairs, over the policy's base.

The pairs are DPO's: a pairs file, a pairs run's data/pairs.jsonl (`data.pairs`), or pairs
built now from the policy's own verified samples. The model is the base (or `model.init`)
with a one-output sequence-classification head (`score`) on its transformer trunk, trained
with the Bradley-Terry loss on (prompt + chosen, prompt + rejected); LoRA or full weights by
the usual `model.finetune` / `lora` keys (with LoRA the `score` head is trained in full and
saved with the adapter).

The share `rm.heldout_fraction` of the pairs' *prompts* never reaches training: the RM's
pairwise accuracy on their pairs (`rm/heldout_accuracy`, over `rm/heldout_pairs` pairs) says
whether it ranks passing code above failing code on tasks it has not seen, which is what
PPO and best-of-N need from it. The split is by prompt, seeded by `seed`: one task's pairs
are all in or all out.

An RM writes no code, so it is not evaluated as a policy (no pass@1, no base comparison,
no eval section in its config): its `finish` scores the held-out and training pairs, logs
the RM as an MLflow model (a pyfunc that scores prompt/completion rows) and registers it
as a version of its own registered model, `rlvf-rm-<base>` (`registry.name` to choose),
which `rlvf.rewards.reward_model.load_reward_model` loads back for PPO and
`eval.select: rm:<...>` (best-of-N).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

from rlvf.config.fields import Field
from rlvf.errors import UserError
from rlvf.methods import dpo
from rlvf.methods.registry import Inputs, Method, Training
from rlvf.pipeline.result import StageResult, log
from rlvf.records import Pair

# Held-out accuracy at or under this, over at least MIN_FLAG_PAIRS pairs: the RM ranks no
# better than a coin on unseen prompts.
CHANCE_ACCURACY = 0.55
MIN_FLAG_PAIRS = 20

SECTION: dict[str, Field] = {
    "heldout_fraction": Field(
        "float",
        "share of the pairs' prompts kept out of training to measure pairwise accuracy",
        minimum=0.01,
        maximum=0.9,
    ),
    "learning_rate": Field("float", "the RM's learning rate (null: train.learning_rate)", nullable=True),
    "center_rewards_coefficient": Field(
        "float", "pull the rewards towards mean zero (TRL's; null: off)", nullable=True, minimum=0.0
    ),
}


def split_by_prompt(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): the pairs of a seeded `fraction` of the distinct prompts (at least
    one) are held out, the rest train. A prompt's place depends only on itself and `seed`,
    so a larger pool keeps the same prompts out. Fewer than two prompts is a UserError."""
    prompts = sorted({p.prompt for p in pairs})
    if len(prompts) < 2:
        raise UserError(
            f"rm: the pairs come from {len(prompts)} prompt(s); at least 2 are needed to hold prompts out "
            "for the held-out accuracy (sample more prompts: data.limit / data.per_cell)"
        )
    ranked = sorted(prompts, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    n_out = min(len(prompts) - 1, max(1, round(fraction * len(prompts))))
    held = set(ranked[:n_out])
    return [p for p in pairs if p.prompt not in held], [p for p in pairs if p.prompt in held]


def resolve(cfg: Any) -> Inputs:
    """DPO's pairs resolution, plus the one combination an RM cannot save (checked before a
    run opens): a LoRA RM over a LoRA policy (its adapter would lose the policy's)."""
    if cfg["model.init"] and cfg["model.finetune"] == "lora":
        from rlvf.models.policy import spec_from_dir
        from rlvf.pipeline.inputs import resolve_init

        init = resolve_init(cfg["model.init"])
        if init is not None and spec_from_dir(init.directory).adapter:
            raise UserError(
                "rm: model.init is a LoRA policy; a LoRA reward model over it cannot be saved "
                "(use model.finetune=full: the policy's adapter is merged first)"
            )
    return dpo.resolve(cfg)


def build_data(ctx: Any) -> list[Pair]:
    """The pairs (given or built now, logged as the run's dataset), split by prompt; the
    held-out ones wait in ctx.state for `finish`."""
    cfg, run = ctx.cfg, ctx.run
    pairs = dpo.build_data(ctx)
    train, held = split_by_prompt(pairs, cfg["rm.heldout_fraction"], cfg["seed"])
    ctx.state["heldout"], ctx.state["train"] = held, train
    run.metrics(
        {
            "rm/train_pairs": len(train),
            "rm/heldout_pairs": len(held),
            "rm/train_prompts": len({p.prompt for p in train}),
            "rm/heldout_prompts": len({p.prompt for p in held}),
        }
    )
    run.log_jsonl("rm/heldout_pairs.jsonl", held)
    log(f"{len(held)} pairs from {len({p.prompt for p in held})} prompts held out for the RM's accuracy")
    return train


def load_model(spec: Any, *, trainable: bool = False):
    """The base (or model.init, a LoRA policy merged in) with a new one-output score head."""
    from rlvf.models.loader import load_sequence_classifier

    return load_sequence_classifier(spec, trainable=trainable, merge=True)


def config_class() -> type:
    from trl import RewardConfig

    return RewardConfig


def trainer_args(cfg: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        max_length=cfg["train.max_length"],
        center_rewards_coefficient=cfg["rm.center_rewards_coefficient"],
    )
    if cfg["rm.learning_rate"] is not None:
        args["learning_rate"] = cfg["rm.learning_rate"]
    return args


def pairs_dataset(pairs: Sequence[Pair]):
    from datasets import Dataset

    if not pairs:
        raise UserError("rm: no pairs left to train on after holding prompts out")
    return Dataset.from_dict(
        {
            "prompt": [p.prompt for p in pairs],
            "chosen": [p.chosen for p in pairs],
            "rejected": [p.rejected for p in pairs],
        }
    )


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    """TRL's RewardTrainer; a LoRA config becomes a sequence-classification one whose `score`
    head is trained and saved in full (a new head has nothing for LoRA to adapt)."""
    import dataclasses

    from trl import RewardTrainer

    if peft_config is not None:
        peft_config = dataclasses.replace(peft_config, task_type="SEQ_CLS", modules_to_save=["score"])
    return RewardTrainer(
        model=model,
        args=args,
        train_dataset=pairs_dataset(rows),
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def _accuracy_line(name: str, acc: dict[str, float]) -> str:
    return f"{name} pairwise accuracy {acc['accuracy']:.3f} over {acc['pairs']} pairs (mean margin {acc['margin']:+.3f})"


def finish(ctx: Any, trained: Any, result: StageResult) -> None:
    """Score the held-out and training pairs, log the RM as a model (the metrics attach to
    it), then register a version of `rlvf-rm-<base>` and move the alias (last)."""
    from rlvf.pipeline.base import policy_label
    from rlvf.rewards.reward_model import ARTIFACT, load_reward_dir, pairwise_accuracy, write_reward_info
    from rlvf.tracking import schema
    from rlvf.tracking.models import active_model, log_reward_model, register_policy, registered_model_name

    cfg, run = ctx.cfg, ctx.run
    # Logged as artifacts/reward_model (MLflow names it after the directory), never
    # artifacts/policy: model.init refuses an RM instead of loading it as a language model.
    rm_dir = trained.policy_dir.rename(trained.policy_dir.with_name(ARTIFACT))
    write_reward_info(
        rm_dir,
        max_length=cfg["train.max_length"],
        base_policy=cfg["model.policy"],
        config_hash=cfg.hash,
    )
    model_id = None
    if cfg["tracking.log_model"]:
        model_id = log_reward_model(
            run, rm_dir, tags={schema.TAG_METHOD: cfg.method, schema.TAG_CONFIG_HASH: cfg.hash}
        )
    t0 = time.perf_counter()
    rm = load_reward_dir(rm_dir, device=cfg["model.device"], batch_size=2 * cfg["train.batch_size"])
    held = pairwise_accuracy(rm, ctx.state.get("heldout", []))
    seen = pairwise_accuracy(rm, ctx.state.get("train", []))
    del rm
    metrics = {
        "rm/heldout_accuracy": held["accuracy"],
        "rm/heldout_margin": held["margin"],
        "rm/heldout_pairs": held["pairs"],
        "time/eval_s": time.perf_counter() - t0,
    }
    if seen["pairs"]:
        metrics.update({"rm/train_accuracy": seen["accuracy"], "rm/train_margin": seen["margin"]})
    metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
    with active_model(model_id):
        run.metrics(metrics)
        run.flush()
    result.metrics.update(metrics)
    if held["pairs"] >= MIN_FLAG_PAIRS and held["accuracy"] <= CHANCE_ACCURACY:
        run.add_health("rm_heldout_at_chance")
    result.summary.append(_accuracy_line("held-out", held))
    if seen["pairs"]:
        result.summary.append(_accuracy_line("training", seen))
    if model_id and cfg["registry.register"]:
        name = cfg["registry.name"] or registered_model_name(cfg["model.policy"], "rm")
        tags = {
            schema.TAG_METHOD: cfg.method,
            schema.TAG_CONFIG_HASH: cfg.hash,
            schema.TAG_INVARIANTS_HASH: run.invariants_hash,
            schema.TAG_BASE_MODEL: policy_label(cfg),
            "rlvf.run_id": run.run_id,
            "rlvf.heldout_accuracy": f"{held['accuracy']:.4f}",
            "rlvf.heldout_pairs": str(held["pairs"]),
        }
        version = register_policy(run, model_id, name=name, alias=cfg["registry.alias"], tags=tags)
        result.registered = (name, str(version.version))
        alias = f" (alias '{cfg['registry.alias']}')" if cfg["registry.alias"] else ""
        result.summary.append(
            f"registered {name} version {version.version}{alias}: use eval.select=rm:models:/{name}/{version.version}"
        )


METHOD = Method(
    name="rm",
    help="A reward model (TRL's RewardTrainer, a score head over the policy's base) on verified pairs (a file, "
    "a pairs run id, or built now); logs its pairwise accuracy on held-out prompts and registers it. "
    "The same as `mlflow run . -e rm --env-manager local`.",
    uses=("generate", "data", "verify"),
    section=SECTION,
    fields=dpo.FIELDS,
    shortcuts={"pairs": "data.pairs", "n_pairs": "data.n_pairs"},
    mlproject=("policy", "init", "pairs", "n_pairs", "learning_rate", "epochs", "seed"),
    scan=("data.n_pairs",),
    training=Training(
        title="reward model",
        noun="pairs",
        resolve=resolve,
        build_data=build_data,
        config_class=config_class,
        trainer_args=trainer_args,
        make_trainer=make_trainer,
        curves=("train/loss", "train/accuracy", "train/margin"),
        examples=dpo.examples,
        policy=False,
        load_model=load_model,
        finish=finish,
    ),
)
