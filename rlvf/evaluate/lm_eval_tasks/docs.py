"""The documents of rlvf's local lm-eval tasks, read from the shipped JSONL files (no hub, no
datasets cache: lm-eval calls these through `custom_dataset` in the task YAMLs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


def _split(name: str) -> dict[str, Any]:
    import datasets

    with open(DATA / f"{name}.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {"test": datasets.Dataset.from_list(rows)}


def doctest(**_: Any) -> dict[str, Any]:
    return _split("doctest")


def solution_mc(**_: Any) -> dict[str, Any]:
    return _split("solution_mc")
