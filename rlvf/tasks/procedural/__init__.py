"""The procedural suite: seeded algorithmic problems at five difficulty levels.

Each (type, difficulty) cell holds `per_cell` instances in HumanEval format. The task stays
the same across difficulties; the test inputs grow (size, nesting, magnitude, edge cases).
Every instance draws its surface form (function and parameter names, docstring wording,
examples) and its test inputs from its own RNG, seeded from (seed, type, difficulty,
instance), so a suite is identical byte for byte for a given seed, whatever PYTHONHASHSEED.

Training uses TRAIN_SEED and evaluation EVAL_SEED; `rlvf.tasks.load_suite` refuses to swap
them, so evaluation never runs on training instances.
"""

from __future__ import annotations

from rlvf.records import Task
from rlvf.tasks.procedural.arrays import BINARY_SEARCH, MAX_SUBARRAY, REMOVE_DUPLICATES, TWO_SUM
from rlvf.tasks.procedural.core import Family, instance_rng, render
from rlvf.tasks.procedural.expressions import ARITHMETIC, PARENTHESES, RPN
from rlvf.tasks.procedural.sequences import FIBONACCI, FIZZBUZZ
from rlvf.tasks.procedural.strings import IS_PALINDROME, REVERSE_STRING

FAMILIES: dict[str, Family] = {
    f.type: f
    for f in (
        RPN,
        ARITHMETIC,
        PARENTHESES,
        FIZZBUZZ,
        REVERSE_STRING,
        IS_PALINDROME,
        FIBONACCI,
        BINARY_SEARCH,
        TWO_SUM,
        MAX_SUBARRAY,
        REMOVE_DUPLICATES,
    )
}
TYPES: tuple[str, ...] = tuple(FAMILIES)
DIFFICULTIES: tuple[int, ...] = (1, 3, 5, 7, 10)
TRAIN_SEED = 42
EVAL_SEED = 999


def generate_task(type_: str, difficulty: int, seed: int, instance: int = 0, with_test: bool = True) -> Task:
    """One instance; the same arguments always give the same Task (`with_test`: see `render`)."""
    if type_ not in FAMILIES:
        raise ValueError(f"unknown procedural type {type_!r}; known: {', '.join(TYPES)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; known: {DIFFICULTIES}")
    rng = instance_rng(seed, type_, difficulty, instance)
    return render(
        FAMILIES[type_], rng, seed=seed, difficulty=difficulty, instance=instance, with_test=with_test
    )


def generate(
    seed: int, per_cell: int = 1, types: tuple[str, ...] = TYPES, with_tests: bool = True
) -> list[Task]:
    """`per_cell` instances of every (type, difficulty) cell, in type, difficulty, instance order."""
    return [
        generate_task(t, d, seed, i, with_test=with_tests)
        for t in types
        for d in DIFFICULTIES
        for i in range(per_cell)
    ]


__all__ = ["DIFFICULTIES", "EVAL_SEED", "FAMILIES", "TRAIN_SEED", "TYPES", "generate", "generate_task"]
