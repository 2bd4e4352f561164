"""SFT with TRL's SFTTrainer on prompt/completion rows (verified samples or teacher traces).
The loss covers the completion only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvf.console import quiet_progress
from rlvf.errors import UserError
from rlvf.train.callback import TrackingCallback
from rlvf.train.common import (
    TrainResult,
    base_spec,
    device_of,
    drop_printer,
    lora_spec,
    quiet,
    save_policy,
    trainer_args,
)


def sft_dataset(rows: Sequence[Mapping[str, Any]]):
    from datasets import Dataset

    if not rows:
        raise UserError("sft: the training set is empty (0 rows): nothing to train on")
    return Dataset.from_dict(
        {"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows]}
    )


def _train_sft(
    cfg: Any,
    rows: Sequence[Mapping[str, Any]],
    out: Path,
    *,
    run: Any | None = None,
    init_dir: Path | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> TrainResult:
    from trl import SFTConfig, SFTTrainer

    from rlvf.models.loader import load_policy, peft_config

    dataset = sft_dataset(rows)
    spec = base_spec(cfg, init_dir)
    device = device_of(cfg)
    model, tok = load_policy(spec, trainable=True)
    tok.padding_side = "right"
    args = SFTConfig(
        **trainer_args(cfg, out / "trainer", device),
        completion_only_loss=True,
        packing=False,
    )
    callback = TrackingCallback(run)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft_config(lora_spec(cfg)) if spec.adapter is None else None,
        callbacks=[callback, *extra_callbacks],
    )
    drop_printer(trainer, cfg["tracking.progress"])
    quiet_progress(trainer, show=bool(cfg["tracking.progress"]))
    trainer.train()
    policy = save_policy(trainer, tok, out / "policy", cfg, spec)
    tok.padding_side = "left"
    return TrainResult(
        policy_dir=out / "policy",
        spec=policy,
        steps=callback.steps,
        wall_s=callback.wall_s,
        n_examples=len(dataset),
        history=callback.history,
    )


def train_sft(cfg: Any, *args: Any, **kwargs: Any) -> TrainResult:
    """See `_train_sft`; progress bars follow cfg.tracking.progress."""
    with quiet(cfg["tracking.progress"]):
        return _train_sft(cfg, *args, **kwargs)
