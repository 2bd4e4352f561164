"""Online RL rewarded by the verifier: the wiring GRPO and RLOO share.

Both methods sample from the current policy, score each completion with the one shared
`rlvf.rewards.VerifierReward` (a score, the lowest reward, or None when the sandbox could
not judge), keep every rollout in the run (`rlvf.rl.rollouts`), measure a cheap held-out
pass@1 during training, and raise the same health flags. Only the TRL trainer they extend
and its own knobs differ, so a method section (`grpo.*`, `rloo.*`) names the same keys:
reward_mode, max_infra_rate, eval_every, eval_limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlvf.errors import UserError
from rlvf.records import Task

# Per-token KL (nats) past which the policy has left its reference behind.
KL_LIMIT = 0.5
# Entropy below this share of its starting value: the policy stopped exploring.
ENTROPY_FLOOR = 0.25
# A held-out pass@1 drop (absolute) that counts as falling while the reward rises.
HELDOUT_DROP = 0.05


def verifier_reward(cfg: Any, section: str, tasks: Sequence[Task]):
    """The shared verifier reward for `tasks`, as `<section>.reward_mode` and `verify.*` set it."""
    from rlvf.rewards import VerifierReward

    return VerifierReward(
        list(tasks),
        mode=cfg[f"{section}.reward_mode"],
        timeout=cfg["verify.timeout"],
        workers=cfg["verify.workers"],
        max_infra_rate=cfg[f"{section}.max_infra_rate"],
    )


def check_batch_shape(
    section: str, cfg: Any, num_generations: int, generation_batch_size: int | None, world: int = 1
) -> None:
    """A generation must hold whole groups and whole optimizer batches (else TRL fails mid-run),
    and with `world` training processes each one's share of it whole groups (rlvf samples,
    judges and filters a group on the rank that holds it)."""
    step = cfg["train.batch_size"] * cfg["train.grad_accum"]
    gen = generation_batch_size or step
    if world > 1 and gen % (num_generations * world):
        raise UserError(
            f"{section}: the generation batch ({gen} completions) must split into whole groups of "
            f"{num_generations} over {world} training processes"
        )
    if gen % num_generations:
        raise UserError(
            f"{section}: the generation batch ({gen} completions) must be a multiple of num_generations "
            f"({num_generations})"
        )
    if gen % step:
        raise UserError(
            f"{section}: the generation batch ({gen}) must be a multiple of train.batch_size x train.grad_accum "
            f"({step})"
        )


def tracking_of(callbacks: Sequence[Any]) -> Any:
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


def heldout_callback(cfg: Any, section: str, tok: Any, tracking: Any):
    """Held-out pass@1 at the start and every `<section>.eval_every` steps, as
    `train/heldout_pass1` (a run metric at its step, and a row of the history the health
    checks read). With several training processes only rank 0 measures (the others wait for
    it at the next step's collectives): the check is one seed's pass@1, the same on any rank."""
    from transformers import TrainerCallback

    from rlvf.evaluate import load_tasks

    every = cfg[f"{section}.eval_every"]
    limit = cfg[f"{section}.eval_limit"] or cfg["eval.limit"]

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
            if every and state.is_world_process_zero:
                self._measure(model, state.global_step)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and state.is_world_process_zero and state.global_step % every == 0:
                self._measure(model, state.global_step)

    return HeldOut()


_TRAINERS: dict[type, type] = {}


def trainer_class(base: type | None = None) -> type:
    """rlvf's version of TRL trainer `base` (GRPOTrainer by default): every rollout kept
    (dynamic sampling where the settings ask for it), whose `train` always flushes the
    rollouts and turns a failing sandbox into one line."""
    from rlvf.rewards.verifier import InfraFailureError
    from rlvf.train.grpo import _make_trainer_class

    key = base or type(None)
    if key not in _TRAINERS:

        class Trainer(_make_trainer_class(base)):
            def train(self, *args: Any, **kwargs: Any):
                try:
                    return super().train(*args, **kwargs)
                except InfraFailureError as e:
                    raise UserError(str(e)) from None
                finally:
                    self.rlvf_recorder.close()

        _TRAINERS[key] = Trainer
    return _TRAINERS[key]


def make_online_trainer(
    cfg: Any,
    section: str,
    *,
    cls: type,
    settings: Any,
    model: Any,
    tok: Any,
    tasks: Sequence[Task],
    args: Any,
    peft_config: Any,
    callbacks: Sequence[Any],
    **trainer_kwargs: Any,
):
    """`cls` (from `trainer_class`) wired to the shared reward, the rollout recorder (into the
    tracking callback's run) and the held-out check; `settings` carries the sampling and
    dynamic-sampling knobs (`rlvf.train.grpo.GRPOSettings` or alike)."""
    import os

    from rlvf.rl.rollouts import RolloutRecorder
    from rlvf.train.grpo import _recorder_callback, grpo_dataset

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is "experimental" in TRL 1.16
    tasks = list(tasks)
    tok.padding_side = "left"  # rlvf's sampler pads prompts on the left; TRL pads explicitly
    reward = verifier_reward(cfg, section, tasks)
    tracking = tracking_of(callbacks)
    run = tracking.run if tracking is not None else None
    recorder = RolloutRecorder(
        run.run_id if run is not None else None,
        run.client if run is not None else None,
        local_dir=Path(args.output_dir).parent / "rollouts",
    )
    dataset = grpo_dataset(tasks)
    trainer = cls(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=[heldout_callback(cfg, section, tok, tracking), *callbacks, _recorder_callback(recorder)],
        **trainer_kwargs,
    )
    trainer.setup_rlvf(reward, recorder, settings, dataset)
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
