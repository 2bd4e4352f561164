"""What a stage returns, and the one way stages talk to the console."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class StageResult:
    """What a stage returns to its caller (tests, the CLI's closing summary)."""

    run_id: str
    method: str
    config_hash: str
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    registered: tuple[str, str] | None = None  # (name, version)
    n_examples: int = 0  # training rows (pairs for DPO and the pairs stage)
    summary: list[str] = field(default_factory=list)

    @property
    def n_pairs(self) -> int:
        """Older name of n_examples (pairs runs and DPO count pairs)."""
        return self.n_examples


def log(msg: str) -> None:
    print(f"[rlvf] {msg}", file=sys.stderr, flush=True)
