"""rlvf's own training-metrics callback: the trainer's logs into the run, batched.

transformers' MLflowCallback is never used (rlvf passes `report_to=[]`): it would log every
TrainingArguments field as an unprefixed param, and one clashing key drops a whole batch.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

from transformers import TrainerCallback

# Trainer log key -> schema metric name where the rule (train/<key with '/' -> '_'>) does not
# give it; a method adds its own (`Training.rename`).
RENAME: dict[str, str] = {}
SKIP = {
    "epoch",
    "total_flos",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "train_loss",
    "step",
}


def peak_mem_mb() -> float:
    """Peak memory of this process: GPU allocations when on CUDA, else the resident set."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
            return torch.cuda.max_memory_allocated() / 2**20
    except Exception:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def metric_key(k: str, rename: Mapping[str, str] | None = None) -> str:
    """The metric name of a trainer log key: `loss` -> `train/loss`, `rewards/chosen` ->
    `train/rewards_chosen`, unless `rename` (the method's) or RENAME says otherwise."""
    return (rename or {}).get(k) or RENAME.get(k) or "train/" + k.replace("/", "_")


class TrackingCallback(TrainerCallback):
    """Buffers every logged value as a stepped metric of `run` (an `rlvf.tracking.runs.Run`,
    or None to only keep the history) and writes the summary metrics when training ends."""

    def __init__(
        self,
        run: Any | None,
        rename: Mapping[str, str] | None = None,
        health: Callable[[list[dict[str, float]]], list[str]] | None = None,
        summary: bool = True,
    ):
        self.run = run
        self.summary = summary
        self.rename = dict(rename or {})
        self.health = health
        self.history: list[dict[str, float]] = []
        self.t0 = 0.0
        self.wall_s = 0.0
        self.steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()
        if self.run is not None:
            self.run.background(2.0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        row = {}
        for k, v in logs.items():
            if k in SKIP or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            row[metric_key(k, self.rename)] = float(v)
        if not row:
            return
        self.history.append({"step": state.global_step, **row})
        if self.run is not None:
            for k, v in row.items():
                if math.isfinite(v):
                    self.run.metric(k, v, step=state.global_step)
            if control.should_save:  # in the store before the checkpoint a resume starts after
                self.run.flush()

    def on_train_end(self, args, state, control, **kwargs):
        self.wall_s = time.perf_counter() - self.t0
        self.steps = state.global_step
        if self.run is None:
            return
        self.run.background(None)
        if self.summary:
            log_summary(self.run, self.history, self.steps, self.wall_s, peak_mem_mb(), self.health)
        self.run.flush()


def log_summary(
    run: Any,
    history: list[dict[str, float]],
    steps: int,
    wall_s: float,
    peak_mb: float,
    health: Callable[[list[dict[str, float]]], list[str]] | None = None,
) -> None:
    """What every training run records once training ends: steps, wall time, peak memory and
    the health flags of its history."""
    run.metrics({"train/steps": steps, "train/wall_s": wall_s, "train/peak_mem_mb": peak_mb})
    for flag in health_flags(history, health):
        run.add_health(flag)
    run.flush()


def health_flags(
    history: list[dict[str, float]],
    extra: Callable[[list[dict[str, float]]], list[str]] | None = None,
) -> list[str]:
    """Cheap warnings from the logged curve: NaN loss, diverging loss (every method), then the
    method's own checks (`extra`, e.g. DPO's chosen log-probs falling)."""
    flags = []
    losses = [h["train/loss"] for h in history if "train/loss" in h]
    if any(not math.isfinite(v) for v in losses):
        flags.append("loss_nan")
    finite = [v for v in losses if math.isfinite(v)]
    if len(finite) >= 4:
        head = sum(finite[:2]) / 2
        tail = sum(finite[-2:]) / 2
        if tail > 2 * head + 1e-6 and tail - head > 0.5:
            flags.append("loss_diverged")
    if extra is not None:
        flags.extend(f for f in extra(history) if f not in flags)
    return flags
