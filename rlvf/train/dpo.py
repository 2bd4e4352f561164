"""DPO's training call for older imports; the method itself is `rlvf.methods.dpo`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlvf.methods.dpo import pairs_dataset
from rlvf.records import Pair
from rlvf.train.common import TrainResult

__all__ = ["pairs_dataset", "train_dpo"]


def train_dpo(
    cfg: Any,
    pairs: Sequence[Pair],
    out: Path,
    *,
    run: Any | None = None,
    init_dir: Path | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train `cfg`'s policy on `pairs` with DPO; the result is saved to out/policy."""
    from rlvf.methods import get
    from rlvf.train.common import train_policy

    return train_policy(
        get("dpo"), cfg, pairs, out, run=run, init_dir=init_dir, extra_callbacks=extra_callbacks
    )
