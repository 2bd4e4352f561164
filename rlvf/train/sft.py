"""SFT's training call for older imports; the method itself is `rlvf.methods.sft`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvf.methods.sft import sft_dataset
from rlvf.train.common import TrainResult

__all__ = ["sft_dataset", "train_sft"]


def train_sft(
    cfg: Any,
    rows: Sequence[Mapping[str, Any]],
    out: Path,
    *,
    run: Any | None = None,
    init_dir: Path | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train `cfg`'s policy on `rows` with SFT; the result is saved to out/policy."""
    from rlvf.methods import get
    from rlvf.train.common import train_policy

    return train_policy(
        get("sft"), cfg, rows, out, run=run, init_dir=init_dir, extra_callbacks=extra_callbacks
    )
