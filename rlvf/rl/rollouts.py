"""Every rollout of a run, kept: one artifact per logging interval in the MLflow run.

TRL sends its completion tables only to W&B / trackio and its local parquet keeps only the
last generation batch; reward hacking is found by reading what the policy actually wrote,
so rlvf keeps all of it. Each interval's rows go to ``rollouts/step_<first>-<last>.parquet``
(JSONL when pyarrow is missing); reading every file under ``rollouts/`` gives the run.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ARTIFACT_DIR = "rollouts"


@dataclass(frozen=True)
class Rollout:
    """One completion of one step and how it was judged."""

    step: int
    task_id: str
    prompt: str
    completion: str  # after clean-up: what the verifier ran
    reward: float | None  # None: the sandbox could not judge it
    category: str
    flags: list[str] = field(default_factory=list)
    tests_passed: int = 0
    tests_total: int = 0
    advantage: float | None = None
    length: int = 0  # completion tokens
    truncated: bool = False  # hit the token limit before the function ended
    kept: bool = True  # reached the loss (dynamic sampling drops zero-variance groups)


def rollouts_from_scored(
    step: int,
    prompts: Sequence[str],
    scored: Sequence[Any],
    *,
    advantages: Sequence[float] | None = None,
    lengths: Sequence[int] | None = None,
    truncated: Sequence[bool] | None = None,
    kept: Sequence[bool] | None = None,
) -> list[Rollout]:
    """Rows for one batch of `rlvf.rewards.Scored` results (in the same order as `prompts`)."""
    n = len(scored)
    return [
        Rollout(
            step=step,
            task_id=s.task_id,
            prompt=prompts[i],
            completion=s.completion,
            reward=s.reward,
            category=s.outcome.category,
            flags=list(s.outcome.flags),
            tests_passed=s.outcome.tests_passed,
            tests_total=s.outcome.tests_total,
            advantage=None if advantages is None else float(advantages[i]),
            length=0 if lengths is None else int(lengths[i]),
            truncated=False if truncated is None else bool(truncated[i]),
            kept=True if kept is None else bool(kept[i]),
        )
        for i, s in zip(range(n), scored, strict=True)
    ]


def _have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


class RolloutRecorder:
    """Buffers rollouts and writes them to the run every `every` steps (and at `close`).

    `client` is an `mlflow.MlflowClient` (default: one for the current tracking URI) and
    `run_id` the run to write to; with no run the files stay in `local_dir`.
    """

    def __init__(
        self,
        run_id: str | None,
        client: Any | None = None,
        *,
        every: int = 1,
        fmt: str = "auto",
        local_dir: str | Path | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"rollouts: the logging interval must be at least 1 step (got {every})")
        if fmt == "auto":
            fmt = "parquet" if _have_pyarrow() else "jsonl"
        if fmt not in ("parquet", "jsonl"):
            raise ValueError(f"rollouts: format '{fmt}' is not parquet or jsonl")
        self.run_id = run_id
        self.fmt = fmt
        self.every = every
        if run_id is not None and client is None:
            from mlflow import MlflowClient

            client = MlflowClient()
        self.client = client
        self.local_dir = Path(local_dir or tempfile.mkdtemp(prefix="rlvf-rollouts-"))
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self._rows: list[Rollout] = []
        self.rows_written = 0
        self.files: list[Path] = []

    def add(self, rows: Iterable[Rollout]) -> None:
        self._rows.extend(rows)

    def step_done(self, step: int) -> Path | None:
        """Called after each optimizer step; writes the buffer at each interval's end."""
        if step % self.every == 0:
            return self.flush()
        return None

    def flush(self) -> Path | None:
        """Write the buffered rows as one file and log it to the run; None when there were none."""
        if not self._rows:
            return None
        rows, self._rows = self._rows, []
        first, last = min(r.step for r in rows), max(r.step for r in rows)
        path = self.local_dir / f"step_{first:06d}-{last:06d}.{self.fmt}"
        dicts = [asdict(r) for r in rows]
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(dicts), path)
        else:
            with path.open("w", encoding="utf-8") as fh:
                for d in dicts:
                    fh.write(json.dumps(d, ensure_ascii=False) + "\n")
        if self.client is not None and self.run_id is not None:
            self.client.log_artifact(self.run_id, str(path), ARTIFACT_DIR)
        self.rows_written += len(rows)
        self.files.append(path)
        return path

    def close(self) -> None:
        self.flush()


def read_rollouts(path: str | Path) -> list[dict[str, Any]]:
    """Every row of every rollouts file under `path` (a downloaded ``rollouts/`` directory)."""
    out: list[dict[str, Any]] = []
    for f in sorted(Path(path).iterdir()):
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            out.extend(pq.read_table(f).to_pylist())
        elif f.suffix == ".jsonl":
            out.extend(
                json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()
            )
    return out
