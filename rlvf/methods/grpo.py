"""grpo: GRPO (TRL's GRPOTrainer) rewarded by the sandboxed verifier, on the training prompts.

The trainer, the reward, dynamic sampling and the rollout recorder live in
`rlvf.train.grpo`, `rlvf.rewards` and `rlvf.rl`; this module wires them into the one
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

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlvf.config.fields import Field
from rlvf.errors import UserError
from rlvf.methods.registry import Inputs, Method, Training
from rlvf.records import Task

# Per-token KL (nats) past which the policy has left its reference behind.
KL_LIMIT = 0.5
# Entropy below this share of its starting value: the policy stopped exploring.
ENTROPY_FLOOR = 0.25
# A held-out pass@1 drop (absolute) that counts as falling while the reward rises.
HELDOUT_DROP = 0.05

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
    "rollouts": Field("str", "rollout engine: rlvf's sampler or TRL's generate", choices=("rlvf", "trl")),
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
    )


def _lr(cfg: Any) -> float:
    lr = cfg["grpo.learning_rate"]
    return cfg["train.learning_rate"] if lr is None else lr


def resolve(cfg: Any) -> Inputs:
    """The settings are checked before a run opens (a bad batch shape leaves no run behind)."""
    s = settings(cfg)
    gen = s.generation_batch_size or s.batch_size * s.grad_accum
    if gen % (s.batch_size * s.grad_accum):
        raise UserError(
            f"grpo: the generation batch ({gen}) must be a multiple of train.batch_size x train.grad_accum "
            f"({s.batch_size * s.grad_accum})"
        )
    if cfg["grpo.max_steps"] is None and cfg["train.max_steps"] < 1 and cfg["train.epochs"] <= 0:
        raise UserError("grpo: set grpo.max_steps (or train.epochs / train.max_steps)")
    return Inputs()


def build_data(ctx: Any) -> list[Task]:
    """The training prompts (data.suite), logged as the run's dataset."""
    from rlvf.pipeline.sampling import training_tasks
    from rlvf.tracking.inputs import log_dataset

    cfg, run = ctx.cfg, ctx.run
    tasks = training_tasks(cfg)
    run.metrics({"data/tasks": len(tasks)})
    log_dataset(
        run,
        [{"task_id": t.task_id, "prompt": t.prompt} for t in tasks],
        name="grpo-prompts",
        artifact_path="data/prompts.jsonl",
        lineage={
            "suite": cfg["data.suite"],
            "per_cell": cfg["data.per_cell"],
            "limit": cfg["data.limit"],
            "policy": ctx.policy_name,
            "verifier": f"rlvf.verify timeout={cfg['verify.timeout']}",
        },
    )
    return tasks


def config_class() -> type:
    from trl import GRPOConfig

    return GRPOConfig


def trainer_args(cfg: Any) -> dict[str, Any]:
    from rlvf.rl.advantages import scale_for_loss

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
    return args


# --------------------------------------------------------------------------- the trainer


def _tracking(callbacks: Sequence[Any]) -> Any:
    from rlvf.train.callback import TrackingCallback

    return next((c for c in callbacks if isinstance(c, TrackingCallback)), None)


def heldout_pass1(cfg: Any, model: Any, tok: Any, tasks: Sequence[Task]) -> float:
    """pass@1 of one sample per held-out task at the eval temperature, on the first eval seed,
    judged by the same clean-up and verifier as the reward (all-pass only)."""
    from rlvf.generate.engine import HFBackend, SamplingSettings
    from rlvf.rewards.verifier import score_completions
    from rlvf.train.grpo import merged_adapter
    from rlvf.verify.categories import PASS

    sampling = SamplingSettings(
        temperature=cfg["eval.temperature"],
        top_p=cfg["eval.top_p"],
        max_new_tokens=cfg["eval.max_new_tokens"],
        seed=cfg["eval.seeds"][0],
    )
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        with merged_adapter(model):
            raws = HFBackend(model, tok, cfg["eval.batch_size"]).run(
                [t.prompt for t in tasks], [t.entry_point or None for t in tasks], sampling
            )
    finally:
        tok.padding_side = side
    scored = score_completions(
        {t.task_id: t for t in tasks},
        [t.task_id for t in tasks],
        [r.text for r in raws],
        mode="binary",
        timeout=cfg["verify.timeout"],
        workers=cfg["verify.workers"],
    )
    return sum(s.outcome.category == PASS for s in scored) / max(len(scored), 1)


def _heldout_callback(cfg: Any, tok: Any, tracking: Any):
    """Held-out pass@1 at the start and every `grpo.eval_every` steps, as `train/heldout_pass1`
    (a run metric at its step, and a row of the history the health checks read)."""
    from transformers import TrainerCallback

    from rlvf.evaluate import load_tasks

    every = cfg["grpo.eval_every"]
    limit = cfg["grpo.eval_limit"] or cfg["eval.limit"]

    class HeldOut(TrainerCallback):
        tasks: list[Task] | None = None

        def _measure(self, model: Any, step: int) -> None:
            if self.tasks is None:
                self.tasks = load_tasks(cfg["eval.suites"][0], cfg["eval.per_cell"], limit)
            value = heldout_pass1(cfg, model, tok, self.tasks)
            if tracking is not None:
                tracking.history.append({"step": step, "train/heldout_pass1": value})
                if tracking.run is not None:
                    tracking.run.metric("train/heldout_pass1", value, step=step)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if every:
                self._measure(model, state.global_step)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and state.global_step % every == 0:
                self._measure(model, state.global_step)

    return HeldOut()


_TRAINER: type | None = None


def _trainer_class() -> type:
    """rlvf's GRPOTrainer (dynamic sampling, rollouts kept) whose `train` always flushes the
    rollouts and turns a failing sandbox into one line."""
    global _TRAINER
    if _TRAINER is None:
        from rlvf.rewards.verifier import InfraFailureError
        from rlvf.train.grpo import _make_trainer_class

        class Trainer(_make_trainer_class()):
            def train(self, *args: Any, **kwargs: Any):
                try:
                    return super().train(*args, **kwargs)
                except InfraFailureError as e:
                    raise UserError(str(e)) from None
                finally:
                    self.rlvf_recorder.close()

        _TRAINER = Trainer
    return _TRAINER


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    import os

    from rlvf.rewards import VerifierReward
    from rlvf.rl.rollouts import RolloutRecorder
    from rlvf.train.grpo import _recorder_callback, grpo_dataset, rlvf_rollout_func

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is "experimental" in TRL 1.16
    s = settings(cfg)
    tasks = list(rows)
    tok.padding_side = "left"  # rlvf's sampler pads prompts on the left; TRL pads explicitly
    reward = VerifierReward(
        tasks,
        mode=s.reward_mode,
        timeout=s.verify_timeout,
        workers=s.verify_workers,
        max_infra_rate=s.max_infra_rate,
    )
    tracking = _tracking(callbacks)
    run = tracking.run if tracking is not None else None
    recorder = RolloutRecorder(
        run.run_id if run is not None else None,
        run.client if run is not None else None,
        local_dir=Path(args.output_dir).parent / "rollouts",
    )
    dataset = grpo_dataset(tasks)
    trainer = _trainer_class()(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=[_heldout_callback(cfg, tok, tracking), *callbacks, _recorder_callback(recorder)],
        rollout_func=rlvf_rollout_func(tok, tasks, s, cfg["eval.batch_size"])
        if s.rollouts == "rlvf"
        else None,
    )
    trainer.setup_rlvf(reward, recorder, s, dataset)
    return trainer


# --------------------------------------------------------------------------- health


def _series(history: list[dict[str, float]], key: str) -> list[float]:
    return [h[key] for h in history if key in h and math.isfinite(h[key])]


def _ends(values: list[float]) -> tuple[float, float]:
    """Means of the first and the last quarter (at least 2 values each)."""
    k = max(2, len(values) // 4)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def health(history: list[dict[str, float]]) -> list[str]:
    """KL running away, entropy collapse, and reward rising while held-out pass@1 falls."""
    flags = []
    kl = _series(history, "train/kl")
    if len(kl) >= 4 and _ends(kl)[1] > KL_LIMIT:
        flags.append("kl_runaway")
    ent = _series(history, "train/entropy")
    if len(ent) >= 4:
        head, tail = _ends(ent)
        if head > 0 and tail < ENTROPY_FLOOR * head:
            flags.append("entropy_collapse")
    reward = _series(history, "train/reward_mean")
    held = _series(history, "train/heldout_pass1")
    if len(reward) >= 4 and len(held) >= 2:
        head, tail = _ends(reward)
        if tail > head and held[-1] < held[0] - HELDOUT_DROP:
            flags.append("reward_up_heldout_down")
    return flags


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
        processes=False,  # rollouts and rewards run inside the loop
    ),
)
