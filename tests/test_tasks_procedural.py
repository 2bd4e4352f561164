"""The procedural suite: every canonical solution passes the real verifier, every wrong one
fails exactly when it says it should, and the suite is varied, deterministic and keeps its
training and evaluation instances apart."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from rlvf.errors import UserError
from rlvf.records import Sample, Task
from rlvf.tasks import load_suite
from rlvf.tasks.procedural import DIFFICULTIES, EVAL_SEED, FAMILIES, TRAIN_SEED, TYPES, generate_task
from rlvf.tasks.procedural.core import fill
from rlvf.verify import verify_samples

SEED_003_TYPES = {
    "rpn",
    "arithmetic",
    "parentheses",
    "fizzbuzz",
    "reverse_string",
    "is_palindrome",
    "fibonacci",
    "binary_search",
    "two_sum",
    "max_subarray",
    "remove_duplicates",
}


@pytest.fixture(scope="module")
def eval_suite() -> list[Task]:
    return load_suite("procedural")


def _digest(tasks: list[Task]) -> str:
    text = json.dumps([t.to_dict() for t in tasks], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_constants_and_layout(eval_suite):
    assert set(TYPES) >= SEED_003_TYPES
    assert DIFFICULTIES == (1, 3, 5, 7, 10)
    assert (TRAIN_SEED, EVAL_SEED) == (42, 999)
    assert len(eval_suite) == len(TYPES) * len(DIFFICULTIES)
    cells = [(t.meta["type"], t.meta["difficulty"]) for t in eval_suite]
    assert cells == [(ty, d) for ty in TYPES for d in DIFFICULTIES]
    for t in eval_suite:
        ty, d = t.meta["type"], t.meta["difficulty"]
        assert t.meta == {"suite": "procedural", "type": ty, "difficulty": d, "seed": 999, "instance": 0}
        assert t.task_id == f"procedural/{ty}/d{d}/s999/0"


def test_per_cell_and_seed(eval_suite):
    three = load_suite("procedural", per_cell=3)
    assert len(three) == 3 * len(eval_suite)
    assert [t for t in three if t.meta["instance"] == 0] == eval_suite  # instances do not shift
    assert len({t.task_id for t in three}) == len(three)
    assert len({t.prompt + t.test for t in three}) == len(three)
    other = load_suite("procedural", seed=7)
    assert {t.meta["seed"] for t in other} == {7}
    assert all(a.test != b.test for a, b in zip(other, eval_suite, strict=True))
    assert load_suite("procedural:train")[0].meta["seed"] == 42


def _check_body(test: str) -> list[ast.stmt]:
    (fn,) = [n for n in ast.parse(test).body if isinstance(n, ast.FunctionDef)]
    assert fn.name == "check" and [a.arg for a in fn.args.args] == ["candidate"]
    return fn.body


def test_humaneval_format(eval_suite):
    for t in eval_suite:
        assert t.prompt.endswith('    """\n') and ">>> " in t.prompt, t.task_id
        module = ast.parse(t.prompt + t.canonical_solution)
        (fn,) = [n for n in module.body if isinstance(n, ast.FunctionDef)]
        assert fn.name == t.entry_point and ast.get_docstring(fn)
        assert t.canonical_solution.startswith("    ")
        if "List[" in t.prompt:
            assert t.prompt.startswith("from typing import List\n")
        asserts = []
        for stmt in _check_body(t.test):
            if isinstance(stmt, ast.Assert):
                asserts.append(stmt)
            else:  # only assignments that build large inputs
                assert isinstance(stmt, ast.Assign), (t.task_id, ast.unparse(stmt))
        assert len(asserts) == 5, t.task_id
        for a in asserts:
            cmp = a.test
            assert isinstance(cmp, ast.Compare) and isinstance(cmp.ops[0], ast.Eq) and len(cmp.ops) == 1
            assert isinstance(cmp.left, ast.Call) and ast.unparse(cmp.left.func) == "candidate"
        assert len(t.test) < 2500, (t.task_id, len(t.test))  # large inputs are built, not spelled out


def test_wrong_solutions_cover_every_type(eval_suite):
    kinds = defaultdict(set)
    for t in eval_suite:
        kinds[t.meta["type"]].update(w.kind for w in t.wrong_solutions)
        assert len({w.kind for w in t.wrong_solutions}) == len(t.wrong_solutions)
    for ty in TYPES:
        assert len(kinds[ty] - {"self_test"}) >= 2, ty
        assert "self_test" in kinds[ty]
    too_slow = {ty for ty, k in kinds.items() if "too_slow" in k}
    assert too_slow >= {"fibonacci", "two_sum", "max_subarray", "remove_duplicates"}
    for t in eval_suite:
        for w in t.wrong_solutions:
            if w.kind == "too_slow":
                assert w.should_fail == (t.meta["difficulty"] == 10), t.task_id
    named = {
        "rpn": "swapped_operands",
        "arithmetic": "no_precedence",
        "fizzbuzz": "wrong_condition_order",
        "is_palindrome": "ignores_punctuation",
        "two_sum": "same_element_twice",
        "max_subarray": "zero_init",
        "remove_duplicates": "order_lost",
    }
    for ty, kind in named.items():
        assert kind in kinds[ty], ty


def _stored_names(body: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse("def f():\n" + body)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef) and node.name != "f":
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def test_bodies_use_the_instance_parameter_names():
    """For every name choice: bodies read the chosen parameters and never rebind them."""
    for family in FAMILIES.values():
        for params in family.params:
            for fn in family.names:
                names = {**dict(zip(family.params[0], params, strict=True)), "fn": fn}
                for template in [family.canonical] + [w.body for w in family.wrongs]:
                    body = fill(template, names)
                    used = {n.id for n in ast.walk(ast.parse("def f():\n" + body)) if isinstance(n, ast.Name)}
                    assert set(params) <= used, (family.type, params, body)
                    assert not _stored_names(body) & {*params, fn}, (family.type, params, fn, body)


def test_surface_forms_vary():
    for ty in TYPES:
        tasks = [generate_task(ty, d, EVAL_SEED, i) for d in DIFFICULTIES for i in range(4)]
        docs = {t.prompt.split('"""')[1].split(">>>")[0] for t in tasks}
        params = {t.prompt.split("(", 1)[1].split(")")[0] for t in tasks}
        examples = {tuple(re.findall(r">>> .*", t.prompt)) for t in tasks}
        assert len({t.entry_point for t in tasks}) >= 3, ty
        assert len(docs) >= 6, ty  # templates x intros
        assert len(params) >= 3, ty
        assert len(examples) >= 10, ty
        assert len({t.test for t in tasks}) == len(tasks), ty


def test_difficulty_grows_the_inputs():
    for ty in TYPES:
        sizes = [len(generate_task(ty, d, EVAL_SEED).test) for d in DIFFICULTIES]
        assert sizes[-1] > sizes[0], (ty, sizes)


def test_same_seed_same_bytes_in_a_fresh_interpreter():
    tasks = load_suite("procedural", per_cell=2)
    assert _digest(tasks) == _digest(load_suite("procedural", per_cell=2))
    code = (
        "import hashlib, json; from rlvf.tasks import load_suite; "
        "t = load_suite('procedural', per_cell=2); "
        "print(hashlib.sha256(json.dumps([x.to_dict() for x in t], sort_keys=True, ensure_ascii=False)"
        ".encode()).hexdigest())"
    )
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == _digest(tasks)


def test_train_and_eval_never_share_an_instance():
    train = load_suite("procedural:train", per_cell=3)
    evals = load_suite("procedural", per_cell=3)
    assert {t.meta["seed"] for t in train} == {42} and {t.meta["seed"] for t in evals} == {999}
    assert not {t.prompt + t.test for t in train} & {t.prompt + t.test for t in evals}
    assert not {t.test for t in train} & {t.test for t in evals}
    with pytest.raises(UserError, match="procedural:train"):
        load_suite("procedural", seed=TRAIN_SEED)
    with pytest.raises(UserError, match="'procedural'"):
        load_suite("procedural:train", seed=EVAL_SEED)


def test_canonical_solutions_are_fast(eval_suite):
    """Our own bodies (trusted, so timed in-process): all five tests in under 0.3 s at every level."""
    for t in eval_suite:
        ns: dict = {}
        exec(compile(t.prompt + t.canonical_solution + t.test, t.task_id, "exec"), ns)
        start = time.process_time()  # CPU time: a loaded machine must not fail the test
        ns["check"](ns[t.entry_point])
        assert time.process_time() - start < 0.3, t.task_id


def test_verifier_passes_canonical_and_fails_wrong_exactly_as_declared(eval_suite):
    samples, expected = [], []
    for t in eval_suite:
        bodies = [("canonical", t.canonical_solution, False)]
        bodies += [(w.kind, w.completion, w.should_fail) for w in t.wrong_solutions]
        for i, (kind, body, should_fail) in enumerate(bodies):
            samples.append(Sample(task_id=t.task_id, index=i, completion=body))
            expected.append((kind, should_fail))
    outcomes = verify_samples(eval_suite, samples, timeout=3.0, progress=False)
    wrong = []
    for o, (kind, should_fail) in zip(outcomes, expected, strict=True):
        if o.passed == should_fail:
            wrong.append(f"{o.task_id} {kind}: should_fail={should_fail} got {o.category} {o.detail[:120]}")
        if kind == "canonical":
            assert o.tests_total == 5 and o.tests_passed == 5 and not o.flags, (o.task_id, o)
        if kind == "too_slow" and should_fail and o.category != "timeout":
            wrong.append(f"{o.task_id} too_slow failed by {o.category}, not by timing out")
    assert not wrong, "\n".join(wrong)


def test_tasks_without_tests_are_the_same_tasks():
    """The embedded model's corpus skips the test expectations; nothing else may change."""
    from rlvf.tasks import procedural

    full = procedural.generate(42, 1)
    bare = procedural.generate(42, 1, with_tests=False)
    assert [t.test for t in bare] == [""] * len(full)
    strip = [dataclasses.replace(t, test="") for t in full]
    assert bare == strip
