"""rlvf's own training-metrics callback: the trainer's logs into the run, batched.

transformers' MLflowCallback is never used (rlvf passes `report_to=[]`): it would log every
TrainingArguments field as an unprefixed param, and one clashing key drops a whole batch.
"""

from __future__ import annotations

import math
import resource
import time
from typing import Any

from transformers import TrainerCallback

# Trainer log key -> schema metric name; other numeric keys go to train/<key with '/' -> '_'>.
RENAME = {
    "loss": "train/loss",
    "rewards/chosen": "train/rewards_chosen",
    "rewards/rejected": "train/rewards_rejected",
    "rewards/margins": "train/rewards_margins",
    "rewards/accuracies": "train/rewards_accuracies",
    "logps/chosen": "train/logps_chosen",
    "logps/rejected": "train/logps_rejected",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
}
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


def metric_key(k: str) -> str:
    return RENAME.get(k) or "train/" + k.replace("/", "_")


class TrackingCallback(TrainerCallback):
    """Buffers every logged value as a stepped metric of `run` (an `rlvf.tracking.runs.Run`,
    or None to only keep the history) and writes the summary metrics when training ends."""

    def __init__(self, run: Any | None):
        self.run = run
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
            row[metric_key(k)] = float(v)
        if not row:
            return
        self.history.append({"step": state.global_step, **row})
        if self.run is not None:
            for k, v in row.items():
                if math.isfinite(v):
                    self.run.metric(k, v, step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.wall_s = time.perf_counter() - self.t0
        self.steps = state.global_step
        if self.run is None:
            return
        self.run.background(None)
        self.run.metrics(
            {"train/steps": self.steps, "train/wall_s": self.wall_s, "train/peak_mem_mb": peak_mem_mb()}
        )
        for flag in health_flags(self.history):
            self.run.add_health(flag)
        self.run.flush()


def health_flags(history: list[dict[str, float]]) -> list[str]:
    """Cheap warnings from the logged curve: NaN loss, diverging loss, chosen log-probs falling
    (the failure seen with plain sigmoid DPO on a tiny model: chosen fell with rejected)."""
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
    chosen = [h["train/logps_chosen"] for h in history if "train/logps_chosen" in h]
    if len(chosen) >= 4 and sum(chosen[-2:]) / 2 < sum(chosen[:2]) / 2 - 1.0:
        flags.append("chosen_logps_fell")
    return flags
