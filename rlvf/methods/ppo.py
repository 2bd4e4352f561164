"""ppo: rlvf's own PPO (policy + value head + frozen reference) on the training prompts,
rewarded by the sandboxed verifier, a registered reward model, or both.

The algorithm lives in `rlvf.train.ppo` (the trainer) and `rlvf.rl` (GAE, losses, KL
control, pure and unit-tested); the reward in `rlvf.rewards` (the verifier every RL method
shares, and `rlvf.rewards.combine` for a reward model). This module wires PPO into the one
training lifecycle (base bootstrap, eval over the recipe's seeds, comparison with the base,
a registered version) and adds what only a run needs:

- per-iteration metrics: policy / value loss, KL to the reference (per token, `train/kl`;
  per completion, `train/kl_seq`; the coefficient `train/kl_coef` when adaptive), entropy,
  clip fractions, approximate KL, explained variance, reward mean/std, the verifier's
  hacking rates (`train/verifier_<rate>_rate`, as GRPO logs them), and seconds per phase;
  every rollout under `rollouts/` in the run;
- a held-out pass@1 (the eval suite, first eval seed, one sample per task) at the start and
  every `ppo.eval_every` iterations, and health flags: KL running away, the value loss
  diverging, reward rising while held-out pass@1 falls;
- a sandbox that cannot judge ends the run FAILED with one line, the rollouts so far kept.

`ppo.learning_rate` / `ppo.iterations` override train.learning_rate / train.max_steps when set.

A reward model (`ppo.reward: rm:<ref>` or `verifier+rm:<ref>`) is loaded before the run opens
through `rlvf.rewards.reward_model.load_reward_model(ref)` (the `rm` method's module), whose
object's `.score(prompts, completions) -> list[float]` gets the task prompts and the cleaned
completions (what the verifier ran); `rlvf.rewards.combine` says how it meets the verifier.

Acceptance: `mlflow run . -e ppo --env-manager local -P set="ppo.reward=verifier"`; run on
embedded:small (`-P recipe=small`) only so far, not yet measured on the embedded default.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlvf.config.fields import Field
from rlvf.errors import UserError
from rlvf.methods.registry import Inputs, Method, Training
from rlvf.records import Task

# Per-token KL (nats) past which the policy has left its reference behind (as GRPO).
KL_LIMIT = 0.5
# The value loss's last quarter this many times its first quarter (and above VALUE_FLOOR).
VALUE_BLOWUP = 4.0
VALUE_FLOOR = 0.05
HELDOUT_DROP = 0.05

SECTION: dict[str, Field] = {
    "reward": Field(
        "str",
        "verifier | rm[:<run id or models:/ URI>] | verifier+rm[:<...>] (the RM only orders "
        "completions the verifier scores equally)",
    ),
    "reward_model": Field(
        "str", "the reward model for a bare rm / verifier+rm (run id or models:/ URI)", nullable=True
    ),
    "reward_mode": Field(
        "str",
        "verifier score: fraction of tests passed, or 1/0 for all passed",
        choices=("fraction", "binary"),
    ),
    "kl_estimator": Field("str", "per-token KL estimator towards the reference", choices=("k1", "k3")),
    "kl_coef": Field("float", "KL penalty coefficient (the start value when adaptive)", minimum=0.0),
    "target_kl": Field(
        "float", "per-token KL the adaptive coefficient steers to (null: fixed coefficient)", nullable=True
    ),
    "kl_horizon": Field("int", "adaptive KL horizon in completions (larger: slower moves)", minimum=1),
    "gamma": Field("float", "discount over completion tokens", minimum=0.0, maximum=1.0),
    "lam": Field("float", "GAE lambda", minimum=0.0, maximum=1.0),
    "whiten_advantages": Field("bool", "normalise advantages over each rollout batch"),
    "cliprange": Field("float", "policy ratio clip range", minimum=0.0),
    "cliprange_value": Field("float", "value clip range around the rollout's values", minimum=0.0),
    "vf_coef": Field("float", "value loss weight", minimum=0.0),
    "ppo_epochs": Field("int", "optimisation passes over each rollout batch", minimum=1),
    "minibatch_size": Field("int", "completions per optimizer step", minimum=1),
    "rollout_batch_size": Field("int", "completions (one per prompt) per iteration", minimum=1),
    "max_completion_length": Field("int", "most tokens per completion", minimum=1),
    "temperature": Field("float", "sampling temperature of the rollouts (> 0)", minimum=0.0),
    "max_grad_norm": Field("float", "gradient clipping norm", minimum=0.0),
    "iterations": Field("int", "PPO iterations (null: train.max_steps)", nullable=True, minimum=1),
    "learning_rate": Field("float", "PPO's learning rate (null: train.learning_rate)", nullable=True),
    "max_infra_rate": Field(
        "float", "share of unjudged completions that stops the run", minimum=0.0, maximum=1.0
    ),
    "eval_every": Field(
        "int", "held-out pass@1 (first eval seed) every N iterations, and at the start (0: off)", minimum=0
    ),
    "eval_limit": Field("int", "held-out tasks for that check (null: eval.limit)", nullable=True, minimum=1),
}


def _lr(cfg: Any) -> float:
    lr = cfg["ppo.learning_rate"]
    return cfg["train.learning_rate"] if lr is None else lr


def _iterations(cfg: Any) -> int:
    n = cfg["ppo.iterations"]
    if n is None:
        n = cfg["train.max_steps"]
    if n is None or n < 1:
        raise UserError("ppo: set ppo.iterations (or train.max_steps)")
    return int(n)


def settings(cfg: Any):
    """The `rlvf.train.ppo.PPOSettings` of cfg (checks the combination: a UserError if wrong)."""
    from rlvf.train.ppo import PPOSettings

    return PPOSettings(
        reward=cfg["ppo.reward"],
        reward_model=cfg["ppo.reward_model"],
        reward_mode=cfg["ppo.reward_mode"],
        kl_estimator=cfg["ppo.kl_estimator"],
        kl_coef=cfg["ppo.kl_coef"],
        target_kl=cfg["ppo.target_kl"],
        kl_horizon=cfg["ppo.kl_horizon"],
        gamma=cfg["ppo.gamma"],
        lam=cfg["ppo.lam"],
        whiten_advantages=cfg["ppo.whiten_advantages"],
        cliprange=cfg["ppo.cliprange"],
        cliprange_value=cfg["ppo.cliprange_value"],
        vf_coef=cfg["ppo.vf_coef"],
        ppo_epochs=cfg["ppo.ppo_epochs"],
        minibatch_size=cfg["ppo.minibatch_size"],
        rollout_batch_size=cfg["ppo.rollout_batch_size"],
        max_completion_length=cfg["ppo.max_completion_length"],
        temperature=cfg["ppo.temperature"],
        max_grad_norm=cfg["ppo.max_grad_norm"],
        iterations=_iterations(cfg),
        learning_rate=_lr(cfg),
        weight_decay=cfg["train.weight_decay"],
        seed=cfg["seed"],
        max_infra_rate=cfg["ppo.max_infra_rate"],
        verify_timeout=cfg["verify.timeout"],
        verify_workers=cfg["verify.workers"],
        sample_batch_size=cfg["eval.batch_size"],
        eval_every=cfg["ppo.eval_every"],
    )


# Reward models loaded in `resolve`, by reference, for `make_trainer` (loaded once per process).
_SCORERS: dict[str, Any] = {}


def scorer_for(ref: str | None) -> Any:
    if ref is None:
        return None
    if ref not in _SCORERS:
        from rlvf.rewards.combine import load_scorer

        _SCORERS[ref] = load_scorer(ref)
    return _SCORERS[ref]


def resolve(cfg: Any) -> Inputs:
    """Settings checked, and a reward model loaded, before a run opens (a typo leaves no run).
    Under a launch of several ranks each takes an equal share of every rollout batch."""
    from rlvf.train.dist import Group
    from rlvf.train.ranks import world_size

    s = settings(cfg)
    Group(world_size()).share(s.rollout_batch_size, "ppo: rollout_batch_size")
    scorer_for(s.reward_spec.rm)
    return Inputs()


def build_data(ctx: Any) -> list[Task]:
    """The training prompts (data.suite), logged as the run's dataset (as GRPO logs them)."""
    from rlvf.methods import grpo

    return grpo.prompts_data(ctx, "ppo-prompts", {"reward": ctx.cfg["ppo.reward"]})


def config_class() -> type:
    from rlvf.train.ppo import PPOArgs

    return PPOArgs


def trainer_args(cfg: Any) -> dict[str, Any]:
    return {"learning_rate": _lr(cfg), "max_grad_norm": cfg["ppo.max_grad_norm"]}


def _tracking(callbacks: Any) -> Any:
    from rlvf.train.callback import TrackingCallback

    return next((c for c in callbacks if isinstance(c, TrackingCallback)), None)


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    from rlvf.evaluate import load_tasks
    from rlvf.rl.rollouts import RolloutRecorder
    from rlvf.train.online import heldout_pass1
    from rlvf.train.ppo import PPOTrainer

    s = settings(cfg)
    tasks = list(rows)
    tok.padding_side = "left"
    tracking = _tracking(callbacks)
    run = tracking.run if tracking is not None else None
    recorder = RolloutRecorder(
        run.run_id if run is not None else None,
        run.client if run is not None else None,
        local_dir=Path(args.output_dir).parent / "rollouts",
    )
    limit = cfg["ppo.eval_limit"] or cfg["eval.limit"]
    held: list[Task] = []

    def heldout(model: Any) -> float:
        if not held:
            held.extend(load_tasks(cfg["eval.suites"][0], cfg["eval.per_cell"], limit))
        return heldout_pass1(cfg, model, tok, held)

    return PPOTrainer(
        model,
        tok,
        tasks,
        s,
        args,
        callbacks=callbacks,
        peft_config=peft_config,
        recorder=recorder,
        scorer=scorer_for(s.reward_spec.rm),
        heldout=heldout if s.eval_every else None,
    )


# --------------------------------------------------------------------------- health


def _series(history: list[dict[str, float]], key: str) -> list[float]:
    return [h[key] for h in history if key in h and math.isfinite(h[key])]


def _ends(values: list[float]) -> tuple[float, float]:
    k = max(2, len(values) // 4)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def health(history: list[dict[str, float]]) -> list[str]:
    """KL running away, the value loss diverging (or NaN), reward up while held-out pass@1 falls."""
    flags = []
    kl = _series(history, "train/kl")
    if len(kl) >= 4 and _ends(kl)[1] > KL_LIMIT:
        flags.append("kl_runaway")
    raw_vl = [h["train/value_loss"] for h in history if "train/value_loss" in h]
    vl = [v for v in raw_vl if math.isfinite(v)]
    if len(vl) < len(raw_vl):
        flags.append("value_loss_diverged")
    elif len(vl) >= 4:
        head, tail = _ends(vl)
        if tail > VALUE_BLOWUP * head and tail > VALUE_FLOOR:
            flags.append("value_loss_diverged")
    reward = _series(history, "train/reward_mean")
    held = _series(history, "train/heldout_pass1")
    if len(reward) >= 4 and len(held) >= 2:
        head, tail = _ends(reward)
        if tail > head and held[-1] < held[0] - HELDOUT_DROP:
            flags.append("reward_up_heldout_down")
    return flags


def examples(n: int) -> list[Task]:
    """Training prompts that need no model (GRPO's: their first check only asks the code to run,
    so a tiny model's completions differ in reward)."""
    from rlvf.methods.grpo import examples as grpo_examples

    return grpo_examples(n)


METHOD = Method(
    name="ppo",
    revision=2,  # rollouts draw from per-row streams by inverse CDF (one process = N ranks)
    help="PPO (rlvf's own: value head, frozen reference, per-token KL, GAE) rewarded by the sandboxed "
    "verifier and/or a registered reward model on the training prompts (every rollout kept); evaluates "
    "against the base, logs and registers the result. The same as `mlflow run . -e ppo --env-manager local`.",
    uses=("data", "verify"),
    section=SECTION,
    shortcuts={
        "reward": "ppo.reward",
        "iterations": "ppo.iterations",
        "kl_coef": "ppo.kl_coef",
        "target_kl": "ppo.target_kl",
        "ppo_epochs": "ppo.ppo_epochs",
    },
    mlproject=(
        "policy",
        "init",
        "suite",
        "iterations",
        "reward",
        "kl_coef",
        "target_kl",
        "seeds",
        "seed",
    ),
    scan=("ppo.iterations",),
    training=Training(
        title="PPO",
        noun="prompts",
        resolve=resolve,
        build_data=build_data,
        config_class=config_class,
        trainer_args=trainer_args,
        make_trainer=make_trainer,
        curves=(
            "train/loss",
            "train/reward_mean",
            "train/kl",
            "train/value_loss",
            "train/explained_variance",
            "train/heldout_pass1",
        ),
        health=health,
        examples=examples,
        # several ranks under a launcher (accelerate launch, torchrun); not `train.processes`, whose
        # default of 2 would change what the recipes' PPO runs train
        processes=False,
    ),
)
