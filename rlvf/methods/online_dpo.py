"""online_dpo: online DPO on the training prompts, pairs made each step from the current
policy's own completions and the sandboxed verifier (the loop: `rlvf.train.online_dpo`).

Each step samples `online_dpo.num_generations` completions per prompt, scores them with the
reward GRPO uses (`rlvf.rewards`), pairs each group's best against its worst when their
rewards differ (ties and unjudged completions are skipped and counted, never paired) and
takes a DPO step against the starting policy. The run keeps every completion (`rollouts/`)
and every pair (`data/online_pairs.jsonl`, with both rewards), logs per step the pairs made,
ties skipped, infra failures, reward means, the DPO loss and its implicit-reward margins, and
then goes through the one lifecycle: held-out eval, comparison with the base, a registered
version.

`online_dpo.learning_rate` and `online_dpo.max_steps` override the train section's when
set: like GRPO it runs for steps over prompts, not epochs over a dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlvf.config.fields import Field
from rlvf.methods.registry import Inputs, Method, Training
from rlvf.records import Task

SECTION: dict[str, Field] = {
    "num_generations": Field("int", "completions sampled per prompt each step (the group)", minimum=2),
    "max_completion_length": Field(
        "int", "most tokens per completion (code needs more than TRL's 64)", minimum=1
    ),
    "temperature": Field("float", "sampling temperature of the policy's completions", minimum=0.0),
    "beta": Field("float", "DPO beta: strength of the pull towards the reference", minimum=0.0),
    "loss_type": Field("list[str]", "losses, combined: sigmoid (DPO) and optionally sft (NLL of the chosen)"),
    "loss_weights": Field("list[float]", "one weight per loss type", nullable=True),
    "reward_mode": Field(
        "str", "fraction of tests passed, or 1/0 for all passed", choices=("fraction", "binary")
    ),
    "learning_rate": Field("float", "online DPO's learning rate (null: train.learning_rate)", nullable=True),
    "max_steps": Field(
        "int", "optimizer steps (null: train.epochs / train.max_steps over the prompts)", nullable=True
    ),
    "max_resample": Field("int", "most extra prompt draws for a step whose groups gave no pair", minimum=0),
    "max_infra_rate": Field(
        "float", "share of unjudged completions that stops the run", minimum=0.0, maximum=1.0
    ),
}


def settings(cfg: Any):
    """The `rlvf.train.online_dpo.OnlineDPOSettings` of cfg (a UserError when inconsistent)."""
    from rlvf.train.online_dpo import OnlineDPOSettings

    weights = cfg["online_dpo.loss_weights"]
    return OnlineDPOSettings(
        num_generations=cfg["online_dpo.num_generations"],
        max_completion_length=cfg["online_dpo.max_completion_length"],
        temperature=cfg["online_dpo.temperature"],
        beta=cfg["online_dpo.beta"],
        loss_type=tuple(cfg["online_dpo.loss_type"]),
        loss_weights=None if weights is None else tuple(weights),
        reward_mode=cfg["online_dpo.reward_mode"],
        max_resample=cfg["online_dpo.max_resample"],
        max_infra_rate=cfg["online_dpo.max_infra_rate"],
        max_length=cfg["train.max_length"],
        verify_timeout=cfg["verify.timeout"],
        verify_workers=cfg["verify.workers"],
        sample_batch_size=cfg["eval.batch_size"],
        seed=cfg["seed"],
    )


def resolve(cfg: Any) -> Inputs:
    """The settings are checked before a run opens (a bad loss setting leaves no run behind);
    under a launch of several ranks each takes an equal share of every batch of prompts."""
    from rlvf.errors import UserError
    from rlvf.train.dist import Group
    from rlvf.train.ranks import world_size

    settings(cfg)
    Group(world_size()).share(cfg["train.batch_size"], "online_dpo: train.batch_size")
    if cfg["online_dpo.max_steps"] is None and cfg["train.max_steps"] < 1 and cfg["train.epochs"] <= 0:
        raise UserError("online_dpo: set online_dpo.max_steps (or train.epochs / train.max_steps)")
    return Inputs()


def build_data(ctx: Any) -> list[Task]:
    """The training prompts (data.suite), logged as the run's dataset (as GRPO logs them)."""
    from rlvf.methods import grpo

    return grpo.prompts_data(ctx, "online-dpo-prompts")


def config_class() -> type:
    from transformers import TrainingArguments

    return TrainingArguments


def trainer_args(cfg: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(remove_unused_columns=False)  # the step needs the task_id column
    if cfg["online_dpo.learning_rate"] is not None:
        args["learning_rate"] = cfg["online_dpo.learning_rate"]
    if cfg["online_dpo.max_steps"] is not None:
        args["max_steps"] = cfg["online_dpo.max_steps"]
    return args


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    from rlvf.rl.rollouts import RolloutRecorder
    from rlvf.train.callback import TrackingCallback
    from rlvf.train.grpo import _recorder_callback
    from rlvf.train.online_dpo import prompts_dataset, trainer_class

    tasks = list(rows)
    tracking = next((c for c in callbacks if isinstance(c, TrackingCallback)), None)
    run = tracking.run if tracking is not None else None
    recorder = RolloutRecorder(
        run.run_id if run is not None else None,
        run.client if run is not None else None,
        local_dir=Path(args.output_dir).parent / "rollouts",
    )
    return trainer_class()(
        model=model,
        args=args,
        train_dataset=prompts_dataset(tasks),
        processing_class=tok,
        tasks=tasks,
        settings=settings(cfg),
        recorder=recorder,
        run=run,
        peft_config=peft_config,
        callbacks=[*callbacks, _recorder_callback(recorder)],
    )


def health(history: list[dict[str, float]]) -> list[str]:
    """No pair in the whole run (nothing was trained), and DPO's own check (chosen log-probs
    falling)."""
    from rlvf.methods.dpo import health as dpo_health

    flags = []
    pairs = [h["train/pairs"] for h in history if "train/pairs" in h]
    if pairs and not any(pairs):
        flags.append("no_pairs")
    return flags + dpo_health(history)


def examples(n: int) -> list[Task]:
    """Prompts whose completions differ in reward even from a tiny model (GRPO's examples:
    the first check only asks that the code runs), so a step makes pairs."""
    from rlvf.methods.grpo import examples as grpo_examples

    return grpo_examples(n)


METHOD = Method(
    name="online_dpo",
    revision=2,  # rollouts draw from per-row streams by inverse CDF (one process = N ranks)
    help="Online DPO: each step samples from the current policy, verifies in the sandbox, pairs the best "
    "against the worst completion of each prompt (ties skipped) and takes a DPO step; evaluates against "
    "the base, logs and registers the result. The same as `mlflow run . -e online_dpo --env-manager local`.",
    uses=("data", "verify"),
    section=SECTION,
    shortcuts={
        "num_generations": "online_dpo.num_generations",
        "beta": "online_dpo.beta",
        "reward_mode": "online_dpo.reward_mode",
        "max_steps": "online_dpo.max_steps",
    },
    mlproject=(
        "policy",
        "init",
        "suite",
        "max_steps",
        "learning_rate",
        "num_generations",
        "beta",
        "reward_mode",
        "seeds",
        "seed",
    ),
    scan=("online_dpo.max_steps",),
    training=Training(
        title="online DPO",
        noun="prompts",
        resolve=resolve,
        build_data=build_data,
        config_class=config_class,
        trainer_args=trainer_args,
        make_trainer=make_trainer,
        curves=("train/loss", "train/pairs", "train/reward_mean", "train/rewards_margins"),
        health=health,
        examples=examples,
        # several ranks under a launcher (accelerate launch, torchrun); not `train.processes`, whose
        # default of 2 would change what the recipes' online DPO runs train
        processes=False,
    ),
)
