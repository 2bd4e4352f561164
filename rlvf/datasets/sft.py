"""SFT data: a policy's own passed samples (verified), or a teacher-trace JSONL."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvf.datasets.pairs import _task_map, join_outcomes, normalise
from rlvf.errors import UserError
from rlvf.records import Outcome, RecordError, Sample, Task, read_jsonl, require_fields


def sft_from_samples(
    tasks: Mapping[str, Task] | Iterable[Task],
    samples: Sequence[Sample],
    outcomes: Sequence[Outcome],
    *,
    max_per_prompt: int = 2,
    dedupe: bool = True,
    min_chars: int = 1,
    max_chars: int = 4000,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows {prompt, completion, task_id, index, policy} from passed samples only.

    At most `max_per_prompt` per prompt (the lowest sample indices, after dedupe and the
    length filter), so one easy prompt does not dominate.
    """
    by_id = _task_map(tasks)
    grouped: dict[str, list[tuple[Sample, Outcome]]] = defaultdict(list)
    for s, o in join_outcomes(samples, outcomes):
        grouped[s.task_id].append((s, o))
    rows: list[dict[str, Any]] = []
    stats = {
        "prompts": 0,
        "samples": 0,
        "passed": 0,
        "dropped_length": 0,
        "dropped_duplicate": 0,
        "prompts_with_pass": 0,
        "rows": 0,
    }
    for task_id in sorted(grouped):
        task = by_id.get(task_id)
        if task is None:
            raise RecordError(f"sft: sample for unknown task '{task_id}'")
        stats["prompts"] += 1
        seen: set[str] = set()
        kept = 0
        for s, o in sorted(grouped[task_id], key=lambda so: so[0].index):
            stats["samples"] += 1
            if not o.passed:
                continue
            stats["passed"] += 1
            n = len(s.completion.strip())
            if n < min_chars or n > max_chars:
                stats["dropped_length"] += 1
                continue
            key = normalise(s.completion)
            if dedupe and key in seen:
                stats["dropped_duplicate"] += 1
                continue
            seen.add(key)
            if kept < max_per_prompt:
                rows.append(
                    {
                        "prompt": task.prompt,
                        "completion": s.completion,
                        "task_id": task_id,
                        "index": s.index,
                        "policy": s.policy,
                    }
                )
                kept += 1
        stats["prompts_with_pass"] += kept > 0
    stats["rows"] = len(rows)
    return rows, stats


def load_traces(path: str | Path, *, min_chars: int = 1, max_chars: int = 100_000) -> list[dict[str, Any]]:
    """Teacher traces: one JSON object per line with string fields `prompt` and `completion`
    (optional `task_id`). Lines outside the length filter are skipped."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"traces file {path} does not exist")
    rows = []
    for lineno, obj in read_jsonl(path):
        require_fields(obj, ("prompt", "completion"), f"{path}:{lineno}")
        n = len(obj["completion"].strip())
        if n < min_chars or n > max_chars:
            continue
        rows.append(
            {
                "prompt": obj["prompt"],
                "completion": obj["completion"],
                "task_id": str(obj.get("task_id", f"line-{lineno}")),
            }
        )
    return rows
