"""grpo: GRPO (TRL's GRPOTrainer) rewarded by the sandboxed verifier, on the training prompts.

The trainer, the reward, dynamic sampling and the rollout recorder live in
`rlvf.train.grpo`, `rlvf.rewards` and `rlvf.rl`, and the wiring GRPO shares with RLOO (reward,
recorder, held-out check, health flags) in `rlvf.train.online`; this module wires them into the one
training lifecycle (base bootstrap, eval over the recipe's seeds, comparison with the base,
a registered version) and adds what only a run needs:

- per-step metrics: reward mean/std, KL, entropy, the verifier's hacking rates
  (`train/verifier_<tampering|forbidden_side_effect|timeout|format_failure|infra_failure>_rate`),
  the zero-variance group share before/after dynamic sampling; every rollout under
  `rollouts/` in the run;
- a cheap held-out pass@1 (the eval suite on the first eval seed, one sample per task)
  every `grpo.eval_every` steps, so the run can flag reward rising while held-out pass@1
  falls (reward hacking or overfitting), next to KL running away and entropy collapse;
- a sandbox that cannot judge (`InfraFailureError`) ends the run FAILED with one line, the
  rollouts so far flushed.

`grpo.learning_rate` and `grpo.max_steps` override the train section's when set: GRPO runs
for steps over prompts, not epochs over a dataset, and wants its own step size.

Measured on the embedded default (procedural eval: 110 tasks x 3 samples x 3 seeds, T 0.8;
full fine-tuning, dapo loss, beta 0.02, 8 optimizer steps of 8 completions per generation,
dynamic sampling on; 2 CPU cores, AVX2; `rlvf compare` verdicts, 2xSE + McNemar):

    start   steps  reward    lr     G   pass@1 (mean +- std over seeds)   verdict
    base    40     fraction  5e-4   8   0.540 +- 0.003 (base 0.442)         +9.8pp, significant
    SFT     40     fraction  5e-4   8   0.746 +- 0.023 (SFT 0.753)          -0.6pp, not significant
    SFT     160    binary    5e-4   8   0.754 +- 0.011                      +0.1pp, not significant
    SFT     160    fraction  1e-3   8   0.638 +- 0.021                      -11.4pp, regression
    SFT     160    binary    2e-4   16  0.763 +- 0.013                      +1.0pp, not significant

From the SFT policy GRPO does not (yet) beat SFT by two standard errors: the failures left
are tasks no sample of a group solves (arithmetic: 0 of 8), so those groups carry no signal.
"""

from __future__ import annotations

from typing import Any

from rlvf.config.fields import Field
from rlvf.errors import UserError
from rlvf.methods.registry import Inputs, Method, Training
from rlvf.records import Task

SECTION: dict[str, Field] = {
    "num_generations": Field("int", "completions per prompt (the group)", minimum=2),
    "generation_batch_size": Field(
        "int",
        "completions per generation (a multiple of num_generations and of train.batch_size x grad_accum; "
        "null: train.batch_size x grad_accum)",
        nullable=True,
        minimum=2,
    ),
    "max_completion_length": Field("int", "most tokens per completion", minimum=1),
    "temperature": Field("float", "sampling temperature of the rollouts", minimum=0.0),
    "beta": Field("float", "KL coefficient towards the starting policy (0: no reference model)", minimum=0.0),
    "epsilon": Field("float", "clip range (lower; upper too unless epsilon_high)", minimum=0.0),
    "epsilon_high": Field("float", "upper clip range (DAPO's clip-higher); null: epsilon", nullable=True),
    "loss_type": Field("str", "loss normalisation", choices=("grpo", "dr_grpo", "dapo", "bnpo")),
    "scale_rewards": Field(
        "str",
        "advantage std scaling (null: what loss_type implies: none for dr_grpo, else group)",
        nullable=True,
        choices=("group", "batch", "none"),
    ),
    "num_iterations": Field("int", "optimisation passes per generation (TRL's mu)", minimum=1),
    "reward_mode": Field(
        "str", "fraction of tests passed, or 1/0 for all passed", choices=("fraction", "binary")
    ),
    "learning_rate": Field("float", "GRPO's learning rate (null: train.learning_rate)", nullable=True),
    "max_steps": Field(
        "int", "optimizer steps (null: train.epochs / train.max_steps over the prompts)", nullable=True
    ),
    "dynamic_sampling": Field("bool", "replace zero-variance groups by groups for further prompts"),
    "max_resample": Field("int", "most extra draws per generation for dynamic sampling", minimum=0),
    "max_infra_rate": Field(
        "float", "share of unjudged completions that stops the run", minimum=0.0, maximum=1.0
    ),
    "rollouts": Field(
        "str",
        "rollout engine: rlvf's sampler, TRL's generate, or vLLM through TRL (GPU only)",
        choices=("rlvf", "trl", "vllm-colocate", "vllm-server"),
    ),
    "eval_every": Field(
        "int", "held-out pass@1 (first eval seed) every N steps, and at the start (0: off)", minimum=0
    ),
    "eval_limit": Field("int", "held-out tasks for that check (null: eval.limit)", nullable=True, minimum=1),
}


def settings(cfg: Any):
    """The `rlvf.train.grpo.GRPOSettings` of cfg (checks the combination: a UserError if wrong)."""
    from rlvf.train.grpo import GRPOSettings

    return GRPOSettings(
        num_generations=cfg["grpo.num_generations"],
        batch_size=cfg["train.batch_size"],
        grad_accum=cfg["train.grad_accum"],
        generation_batch_size=cfg["grpo.generation_batch_size"],
        max_completion_length=cfg["grpo.max_completion_length"],
        temperature=cfg["grpo.temperature"],
        beta=cfg["grpo.beta"],
        epsilon=cfg["grpo.epsilon"],
        epsilon_high=cfg["grpo.epsilon_high"],
        loss_type=cfg["grpo.loss_type"],
        scale_rewards=cfg["grpo.scale_rewards"],
        num_iterations=cfg["grpo.num_iterations"],
        reward_mode=cfg["grpo.reward_mode"],
        learning_rate=_lr(cfg),
        max_steps=cfg["grpo.max_steps"] or 1,
        seed=cfg["seed"],
        rollouts=cfg["grpo.rollouts"],
        dynamic_sampling=cfg["grpo.dynamic_sampling"],
        max_resample=cfg["grpo.max_resample"],
        max_infra_rate=cfg["grpo.max_infra_rate"],
        verify_timeout=cfg["verify.timeout"],
        verify_workers=cfg["verify.workers"],
        progress=bool(cfg["tracking.progress"]),
        gradient_checkpointing=bool(cfg["train.gradient_checkpointing"]),
    )


def _lr(cfg: Any) -> float:
    lr = cfg["grpo.learning_rate"]
    return cfg["train.learning_rate"] if lr is None else lr


def resolve(cfg: Any) -> Inputs:
    """The settings are checked before a run opens (a bad batch shape leaves no run behind)."""
    from rlvf.train.online import check_batch_shape
    from rlvf.train.ranks import planned

    s = settings(cfg)
    check_batch_shape("grpo", cfg, s.num_generations, s.generation_batch_size, planned(METHOD, cfg))
    if cfg["grpo.max_steps"] is None and cfg["train.max_steps"] < 1 and cfg["train.epochs"] <= 0:
        raise UserError("grpo: set grpo.max_steps (or train.epochs / train.max_steps)")
    return Inputs()


def build_data(ctx: Any) -> list[Task]:
    """The training prompts (data.suite), logged as the run's dataset."""
    return prompts_data(ctx, "grpo-prompts")


def prompts_data(ctx: Any, name: str, lineage: dict[str, Any] | None = None) -> list[Task]:
    """The training prompts (data.suite), logged as the run's dataset `name` (GRPO, RLOO, PPO,
    online DPO); `lineage` adds what else decides the rewards (PPO's reward spec)."""
    from rlvf.pipeline.sampling import training_tasks
    from rlvf.tracking.inputs import log_dataset

    cfg, run = ctx.cfg, ctx.run
    tasks = training_tasks(cfg)
    run.metrics({"data/tasks": len(tasks)})
    log_dataset(
        run,
        [{"task_id": t.task_id, "prompt": t.prompt} for t in tasks],
        name=name,
        artifact_path="data/prompts.jsonl",
        lineage={
            "suite": cfg["data.suite"],
            "per_cell": cfg["data.per_cell"],
            "limit": cfg["data.limit"],
            "policy": ctx.policy_name,
            **(lineage or {}),
            "verifier": f"rlvf.verify timeout={cfg['verify.timeout']}",
        },
    )
    return tasks


def config_class() -> type:
    from trl import GRPOConfig

    return GRPOConfig


def trainer_args(cfg: Any) -> dict[str, Any]:
    from rlvf.rl.advantages import scale_for_loss
    from rlvf.train.grpo import vllm_args

    args: dict[str, Any] = dict(
        learning_rate=_lr(cfg),
        num_generations=cfg["grpo.num_generations"],
        generation_batch_size=cfg["grpo.generation_batch_size"],
        max_completion_length=cfg["grpo.max_completion_length"],
        temperature=cfg["grpo.temperature"],
        beta=cfg["grpo.beta"],
        epsilon=cfg["grpo.epsilon"],
        epsilon_high=cfg["grpo.epsilon_high"],
        loss_type=cfg["grpo.loss_type"],
        scale_rewards=scale_for_loss(cfg["grpo.loss_type"], cfg["grpo.scale_rewards"]),
        num_iterations=cfg["grpo.num_iterations"],
        remove_unused_columns=False,  # the reward needs the task_id column
        log_completions=False,  # every rollout goes to the run's rollouts/ artifact instead
    )
    if cfg["grpo.max_steps"] is not None:
        args["max_steps"] = cfg["grpo.max_steps"]
    args.update(vllm_args(cfg["grpo.rollouts"]))
    return args


# --------------------------------------------------------------------------- the trainer


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    """GRPO wired to the shared verifier reward, rollout recorder and held-out check
    (`rlvf.train.online`), with rlvf's sampler as the rollout function by default."""
    from rlvf.train.grpo import rlvf_rollout_func
    from rlvf.train.online import make_online_trainer, trainer_class

    s = settings(cfg)
    tasks = list(rows)
    return make_online_trainer(
        cfg,
        "grpo",
        cls=trainer_class(),
        settings=s,
        model=model,
        tok=tok,
        tasks=tasks,
        args=args,
        peft_config=peft_config,
        callbacks=callbacks,
        rollout_func=rlvf_rollout_func(tok, tasks, s, cfg["eval.batch_size"])
        if s.rollouts == "rlvf"
        else None,
    )


def health(history: list[dict[str, float]]) -> list[str]:
    """KL running away, entropy collapse, reward up while held-out pass@1 falls (shared with RLOO)."""
    from rlvf.train import online

    return online.health(history)


def examples(n: int) -> list[Task]:
    """Training prompts that need no model: procedural training tasks whose check first asserts
    only that the candidate runs on the first input, so under `reward_mode: fraction` a tiny
    model's completions differ in reward and every group-relative step has a signal."""
    import dataclasses
    import re

    from rlvf.tasks import load_suite

    out = []
    for t in load_suite("procedural:train"):
        call = re.search(r"assert (candidate\(.*?\)) ==", t.test)
        if call and "def check(candidate):\n" in t.test:
            runs = f"def check(candidate):\n    assert [{call.group(1)}]\n"
            out.append(dataclasses.replace(t, test=t.test.replace("def check(candidate):\n", runs, 1)))
    return [out[(i * len(out)) // n] for i in range(min(n, len(out)))]  # spread over the task types


METHOD = Method(
    name="grpo",
    # 2: rollouts draw from per-row streams by inverse CDF (one process = N ranks);
    # 3: on a CPU, log-probs of the completion tokens only (rlvf.rl.logprobs), not TRL's fused head
    revision=3,
    help="GRPO (TRL) with the sandboxed verifier's reward on the training prompts (dynamic sampling, "
    "every rollout kept); evaluates against the base, logs and registers the result. The same as "
    "`mlflow run . -e grpo --env-manager local`.",
    uses=("data", "verify"),
    section=SECTION,
    shortcuts={
        "num_generations": "grpo.num_generations",
        "loss_type": "grpo.loss_type",
        "kl_beta": "grpo.beta",
        "reward_mode": "grpo.reward_mode",
        "max_steps": "grpo.max_steps",
    },
    mlproject=(
        "policy",
        "init",
        "suite",
        "max_steps",
        "learning_rate",
        "num_generations",
        "loss_type",
        "kl_beta",
        "reward_mode",
        "seeds",
        "seed",
    ),
    scan=("grpo.max_steps",),
    training=Training(
        title="GRPO",
        noun="prompts",
        resolve=resolve,
        build_data=build_data,
        config_class=config_class,
        trainer_args=trainer_args,
        make_trainer=make_trainer,
        rename={"reward": "train/reward_mean"},
        curves=("train/loss", "train/reward_mean", "train/kl", "train/heldout_pass1"),
        health=health,
        examples=examples,
        # each rank samples, judges and filters its share of whole groups (rlvf.train.grpo)
        processes=True,
    ),
)
