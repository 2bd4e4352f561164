"""The training layer every method shares: the policy to start from, trainer arguments, one
train-and-save loop (`train_policy`) around the method's own TRL trainer."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvf.console import quiet_progress
from rlvf.models.policy import POLICY_FILE, save_policy, spec_from_dir  # noqa: F401  (re-exported)
from rlvf.runtime import cpu_threads  # noqa: F401  (re-exported: older imports)


@dataclass
class TrainResult:
    """A trained policy on disk and how training went."""

    policy_dir: Path
    spec: Any  # rlvf.models.loader.PolicySpec that loads the trained policy
    steps: int = 0
    wall_s: float = 0.0
    n_examples: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def device_of(cfg: Any) -> str:
    from rlvf.models.loader import resolve_device

    return resolve_device(cfg["model.device"])


def base_spec(cfg: Any, init_dir: Path | None = None):
    """The PolicySpec training starts from: the base, or a trained policy (model.init)."""
    from rlvf.models.loader import PolicySpec

    kw = dict(
        revision=cfg["model.revision"],
        dtype=cfg["model.dtype"],
        device=cfg["model.device"],
        load_in_4bit=cfg["model.quantization"] == "nf4",
        gradient_checkpointing=cfg.get("train.gradient_checkpointing", False),
    )
    if init_dir is None:
        return PolicySpec(base=cfg["model.policy"], **kw)
    return spec_from_dir(init_dir, **kw)


def lora_spec(cfg: Any):
    from rlvf.models.loader import LoraSpec

    if cfg["model.finetune"] != "lora":
        return None
    return LoraSpec(
        r=cfg["lora.r"],
        alpha=cfg["lora.alpha"],
        dropout=cfg["lora.dropout"],
        targets=tuple(cfg["lora.targets"]),
    )


def output_dir(cfg: Any, run_id: str | None) -> Path:
    """The run's own folder (checkpoints, the trained policy): tracking.output_dir/<run id>, by
    default under $RLVF_HOME/runs. Stable per run, so `--resume RUN_ID` finds it after a crash."""
    if run_id is None:
        return Path(tempfile.mkdtemp(prefix=f"rlvf-{cfg.method}-"))
    from rlvf.tracking.spool import run_folder

    p = run_folder(cfg, run_id)
    p.mkdir(parents=True, exist_ok=True)
    return p


def last_checkpoint(trainer_dir: Path) -> Path | None:
    """The newest complete TRL/transformers checkpoint under `trainer_dir` (None: none).

    transformers writes `trainer_state.json` last, so a checkpoint without it was cut short
    by the crash; such folders are removed (the trainer writes that step again)."""
    best: tuple[int, Path] | None = None
    for d in Path(trainer_dir).glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        if not (d.is_dir() and step.isdigit()):
            continue
        if not (d / "trainer_state.json").is_file():
            shutil.rmtree(d, ignore_errors=True)
        elif best is None or int(step) > best[0]:
            best = (int(step), d)
    return best[1] if best else None


def shared_trainer_args(cfg: Any, out: Path, device: str) -> dict[str, Any]:
    """TrainingArguments fields every method shares (TRL's own defaults do not suit a tiny
    model: lr 1e-6 and gradient checkpointing on; bf16 on by default is wrong on CPU).
    Sequence lengths and column handling are per method (`Training.trainer_args`)."""
    from rlvf.runtime import trains_in_bf16

    cuda = device.startswith("cuda")
    bf16 = trains_in_bf16(device)
    return dict(
        output_dir=str(out),
        num_train_epochs=cfg["train.epochs"],
        max_steps=cfg["train.max_steps"],
        learning_rate=cfg["train.learning_rate"],
        lr_scheduler_type=cfg["train.lr_scheduler"],
        warmup_steps=cfg["train.warmup_ratio"],  # transformers 5: a float < 1 is a ratio
        weight_decay=cfg["train.weight_decay"],
        per_device_train_batch_size=per_device_batch(cfg["train.batch_size"]),
        gradient_accumulation_steps=cfg["train.grad_accum"],
        gradient_checkpointing=cfg["train.gradient_checkpointing"],
        # every trainable weight gets a gradient in every step; searching for unused ones costs
        # a graph walk per step and prints a warning on every rank
        ddp_find_unused_parameters=False,
        logging_steps=cfg["train.logging_steps"],
        logging_first_step=True,
        seed=cfg["seed"],
        data_seed=cfg["seed"],
        report_to=[],
        # checkpoints (optimizer and RNG state too) are what `--resume` continues from
        save_strategy="steps" if cfg.get("train.save_steps") else "no",
        save_steps=cfg.get("train.save_steps") or 500,
        save_total_limit=cfg.get("train.save_total_limit") or 2,
        bf16=bf16,
        fp16=False,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        disable_tqdm=not cfg["tracking.progress"],
    )


def per_device_batch(batch_size: int) -> int:
    """`train.batch_size` is the global batch: each of the data-parallel ranks takes its share,
    so one process and several train on the same batches."""
    from rlvf.errors import UserError
    from rlvf.train.ranks import world_size

    world = world_size()
    if batch_size % world:
        raise UserError(
            f"train.batch_size {batch_size} does not split evenly over {world} training processes"
        )
    return batch_size // world


def trainer_args(cfg: Any, out: Path, device: str, training: Any | None = None) -> dict[str, Any]:
    """The arguments of `training`'s TRL config: the shared ones its config class takes, then
    the method's own (`Training.trainer_args`), which must all be fields of that class."""
    args = shared_trainer_args(cfg, out, device)
    if training is None:
        return args
    accepted = {f.name for f in dataclasses.fields(training.config_class())}
    own = training.trainer_args(cfg)
    unknown = sorted(set(own) - accepted)
    if unknown:
        raise TypeError(f"{training.config_class().__name__} takes no argument(s) {', '.join(unknown)}")
    return {**{k: v for k, v in args.items() if k in accepted}, **own}


def train_policy(
    method: Any,
    cfg: Any,
    rows: Sequence[Any],
    out: Path,
    *,
    run: Any | None = None,
    init_dir: Path | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train `cfg`'s policy with `method` (an `rlvf.methods.Method`) on `rows`; the result
    (weights or adapter) is saved to out/policy. Progress bars follow cfg.tracking.progress.
    On CPU, with `train.processes` > 1, training runs in that many processes (`rlvf.train.ranks`)."""
    from rlvf.train import launch
    from rlvf.train.ranks import train_in_processes, wanted

    world = wanted(method, cfg, device_of(cfg)) if not extra_callbacks else 1
    if world > 1:
        return train_in_processes(method, cfg, rows, out, run=run, init_dir=init_dir, world=world)
    if launch.external():  # rank 0 of `accelerate launch` / `torchrun`: the other ranks join here
        return _lead_training(method, cfg, rows, out, run=run, init_dir=init_dir)
    with quiet(cfg["tracking.progress"]):
        return _train_policy(
            method, cfg, rows, out, run=run, init_dir=init_dir, extra_callbacks=extra_callbacks
        )[0]


def _lead_training(
    method: Any, cfg: Any, rows: Sequence[Any], out: Path, *, run: Any, init_dir: Any
) -> TrainResult:
    """Train as rank 0 of an external launch: publish the job the waiting ranks train on
    (`rlvf.train.launch`), train beside them, and check they all ended with the same weights."""
    from rlvf.train import launch
    from rlvf.train.ranks import share_datasets_cache, weights_digest

    work = launch.publish(
        {
            "method": method.name,
            "flat": dict(cfg._flat),
            "recipe": cfg.recipe,
            "rows": list(rows),
            "out": str(out),
            "init_dir": str(init_dir) if init_dir else None,
        }
    )
    share_datasets_cache(work / "datasets-cache")  # TRL's reference-log-prob cache, as the ranks see it
    with quiet(cfg["tracking.progress"]):
        result, model = _train_policy(
            method, cfg, rows, out, run=run, init_dir=init_dir, extra_callbacks=(), keep_model=True
        )
    digest = weights_digest(model)
    (work / "weights-rank0.sha256").write_text(digest)  # beside the other ranks' (for a reader)
    launch.check_digests(work, digest)
    return result


def _train_policy(
    method: Any,
    cfg: Any,
    rows: Sequence[Any],
    out: Path,
    *,
    run: Any | None,
    init_dir: Path | None,
    extra_callbacks: Sequence[Any],
    summary: bool = True,
    save: bool = True,
    keep_model: bool = False,
) -> tuple[TrainResult, Any]:
    """Train in this process; `summary` off leaves the summary metrics to the caller (ranks),
    `save` off skips writing the policy (ranks other than 0). Returns the result and, with
    `keep_model`, the trained model."""
    from rlvf.models.loader import load_policy, peft_config
    from rlvf.train.callback import TrackingCallback

    training = method.training
    spec = base_spec(cfg, init_dir)
    device = device_of(cfg)
    model, tok = (training.load_model or load_policy)(spec, trainable=True)
    tok.padding_side = "right"  # training pads on the right; generation (left) reloads the tokenizer
    args = training.config_class()(**trainer_args(cfg, out / "trainer", device, training))
    callback = TrackingCallback(run, rename=training.rename, health=training.health, summary=summary)
    trainer = training.make_trainer(
        cfg,
        model=model,
        tok=tok,
        rows=rows,
        args=args,
        peft_config=peft_config(lora_spec(cfg)) if spec.adapter is None else None,
        callbacks=[callback, *extra_callbacks],
    )
    quiet_progress(trainer, show=bool(cfg["tracking.progress"]))
    ckpt = _resume_from(out / "trainer")
    trainer.train(**({"resume_from_checkpoint": ckpt} if ckpt else {}))
    policy = save_policy(trainer, tok, out / "policy", cfg, spec) if save else None
    tok.padding_side = "left"
    result = TrainResult(
        policy_dir=out / "policy",
        spec=policy,
        steps=callback.steps,
        wall_s=callback.wall_s,
        n_examples=len(rows),
        history=callback.history,
    )
    return result, (trainer.model if keep_model else None)


def _resume_from(trainer_dir: Path) -> str | None:
    """The checkpoint a resumed run continues from; a new run's folder has none."""
    ckpt = last_checkpoint(trainer_dir) if trainer_dir.is_dir() else None
    return str(ckpt) if ckpt else None


@contextlib.contextmanager
def quiet(progress: bool):
    """Without progress: no datasets / transformers progress bars (restored afterwards)."""
    if progress:
        yield
        return
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    ds_was = datasets.utils.logging.is_progress_bar_enabled()
    hf_was = hf_logging.is_progress_bar_enabled()
    tqdm_was = os.environ.get("TQDM_DISABLE")
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"  # TRL's reference log-prob pass reads this
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            yield
    finally:
        if tqdm_was is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_was
        if ds_was:
            datasets.enable_progress_bars()
        if hf_was:
            hf_logging.enable_progress_bar()
