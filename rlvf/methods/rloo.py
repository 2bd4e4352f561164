"""rloo: RLOO (TRL's RLOOTrainer) rewarded by the sandboxed verifier, on the training prompts.

REINFORCE with a leave-one-out baseline: each completion's advantage is its reward minus the
mean reward of the other completions for the same prompt (TRL computes it over the scorable
siblings only, so a completion the sandbox could not judge, reward None, is left out of the
baseline and gets no advantage). The KL towards the starting policy is a per-sequence
penalty on the reward (`rloo.beta`), as in the RLOO paper, not a loss term as in GRPO.

Everything else is GRPO's, through the same code (`rlvf.train.online`): the one verifier
reward (`rlvf.rewards.VerifierReward`: a score, the lowest reward, or None), every rollout
kept under `rollouts/` in the run, the held-out pass@1 every `rloo.eval_every` steps, the
health flags (KL running away, entropy collapse, reward up while held-out pass@1 falls), a
failing sandbox ending the run in one line, and rollouts through rlvf's sampler by default
(`rloo.rollouts: rlvf`; `trl` uses TRL's generate). Dynamic sampling is GRPO's only: RLOO's
batches carry sequence-level log-probs that the group merge does not handle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlvf.config.fields import Field
from rlvf.errors import UserError
from rlvf.methods import grpo
from rlvf.methods.registry import Inputs, Method, Training

_SHARED = (
    "num_generations",
    "generation_batch_size",
    "max_completion_length",
    "temperature",
    "beta",
    "epsilon",
    "epsilon_high",
    "num_iterations",
    "reward_mode",
    "learning_rate",
    "max_steps",
    "max_infra_rate",
    "rollouts",
    "eval_every",
    "eval_limit",
)

# GRPO's keys with the same meaning, and RLOO's own.
SECTION: dict[str, Field] = {
    **{k: grpo.SECTION[k] for k in _SHARED},
    "beta": Field("float", "KL penalty on the reward, per sequence (0: no reference model)", minimum=0.0),
    "normalize_advantages": Field("bool", "normalise advantages over each generation batch (mean 0, std 1)"),
}


@dataclass(frozen=True)
class RLOOSettings:
    """What the rollout function and rlvf's trainer read (GRPOSettings' names)."""

    temperature: float
    max_completion_length: int
    seed: int
    top_p: float = 1.0
    dynamic_sampling: bool = False
    max_resample: int = 0


def settings(cfg: Any) -> RLOOSettings:
    return RLOOSettings(
        temperature=cfg["rloo.temperature"],
        max_completion_length=cfg["rloo.max_completion_length"],
        seed=cfg["seed"],
    )


def _lr(cfg: Any) -> float:
    lr = cfg["rloo.learning_rate"]
    return cfg["train.learning_rate"] if lr is None else lr


def resolve(cfg: Any) -> Inputs:
    """The batch shape is checked before a run opens (a bad one leaves no run behind)."""
    from rlvf.train.online import check_batch_shape
    from rlvf.train.ranks import planned

    check_batch_shape(
        "rloo", cfg, cfg["rloo.num_generations"], cfg["rloo.generation_batch_size"], planned(METHOD, cfg)
    )
    if cfg["rloo.max_steps"] is None and cfg["train.max_steps"] < 1 and cfg["train.epochs"] <= 0:
        raise UserError("rloo: set rloo.max_steps (or train.epochs / train.max_steps)")
    return Inputs()


def build_data(ctx: Any):
    """The training prompts (data.suite), logged as the run's dataset (as GRPO logs them)."""
    return grpo.prompts_data(ctx, "rloo-prompts")


def config_class() -> type:
    from trl import RLOOConfig

    return RLOOConfig


def trainer_args(cfg: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        learning_rate=_lr(cfg),
        num_generations=cfg["rloo.num_generations"],
        generation_batch_size=cfg["rloo.generation_batch_size"],
        max_completion_length=cfg["rloo.max_completion_length"],
        temperature=cfg["rloo.temperature"],
        beta=cfg["rloo.beta"],
        epsilon=cfg["rloo.epsilon"],
        epsilon_high=cfg["rloo.epsilon_high"],
        num_iterations=cfg["rloo.num_iterations"],
        normalize_advantages=cfg["rloo.normalize_advantages"],
        remove_unused_columns=False,  # the reward needs the task_id column
        log_completions=False,  # every rollout goes to the run's rollouts/ artifact instead
    )
    if cfg["rloo.max_steps"] is not None:
        args["max_steps"] = cfg["rloo.max_steps"]
    return args


_TRAINER: type | None = None


def _trainer_class() -> type:
    """rlvf's RLOOTrainer (rollouts kept, one-line sandbox failures) sampling through rlvf's
    engine when given a rollout function: TRL's RLOOTrainer has no `rollout_func`, so the
    completions of `_generate_single_turn` come from it instead of `model.generate`."""
    global _TRAINER
    if _TRAINER is None:
        from trl import RLOOTrainer

        from rlvf.train.online import trainer_class

        class Trainer(trainer_class(RLOOTrainer)):
            rlvf_rollout: Any = None

            def _generate(self, prompts: list):
                self._rlvf_prompts = prompts
                return super()._generate(prompts)

            def _generate_single_turn(self, prompt_ids, images, multimodal_fields):
                if self.rlvf_rollout is None or images is not None or not self.model.training:
                    return super()._generate_single_turn(prompt_ids, images, multimodal_fields)
                return self.rlvf_rollout(self._rlvf_prompts, self)["completion_ids"]

        _TRAINER = Trainer
    return _TRAINER


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    from rlvf.train.grpo import rlvf_rollout_func
    from rlvf.train.online import make_online_trainer

    s = settings(cfg)
    tasks = list(rows)
    trainer = make_online_trainer(
        cfg,
        "rloo",
        cls=_trainer_class(),
        settings=s,
        model=model,
        tok=tok,
        tasks=tasks,
        args=args,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    if cfg["rloo.rollouts"] == "rlvf":
        trainer.rlvf_rollout = rlvf_rollout_func(tok, tasks, s, cfg["eval.batch_size"])
    return trainer


METHOD = Method(
    name="rloo",
    # 2: rollouts draw from per-row streams by inverse CDF (one process = N ranks);
    # 3: on a CPU, log-probs of the completion tokens only (rlvf.rl.logprobs), not TRL's fused head
    revision=3,
    help="RLOO (TRL, leave-one-out baseline) with the sandboxed verifier's reward on the training prompts "
    "(every rollout kept); evaluates against the base, logs and registers the result. The same as "
    "`mlflow run . -e rloo --env-manager local`.",
    uses=("data", "verify"),
    section=SECTION,
    shortcuts={"rloo_generations": "rloo.num_generations", "rloo_max_steps": "rloo.max_steps"},
    mlproject=(
        "policy",
        "init",
        "suite",
        "rloo_max_steps",
        "learning_rate",
        "rloo_generations",
        "seeds",
        "seed",
    ),
    scan=("rloo.max_steps",),
    training=Training(
        title="RLOO",
        noun="prompts",
        resolve=resolve,
        build_data=build_data,
        config_class=config_class,
        trainer_args=trainer_args,
        make_trainer=make_trainer,
        rename={"reward": "train/reward_mean"},
        curves=("train/loss", "train/reward_mean", "train/kl", "train/heldout_pass1"),
        health=grpo.health,
        examples=grpo.examples,
        processes=True,  # each rank samples and judges its share of whole groups (as GRPO)
    ),
)
