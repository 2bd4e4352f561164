"""Unit tests of the report's statistics, metrics, registry format and result-file parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from rlvf.errors import UserError
from rlvf.importers import build_eval_result, parse_assignments, read_results_file
from rlvf.metrics import flat_metrics, summarize
from rlvf.records import EvalResult
from rlvf.report import registry, stats


@pytest.mark.parametrize("b,c", [(0, 0), (6, 4), (10, 1), (0, 7), (3, 3), (25, 9)])
def test_mcnemar_exact_matches_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_two_stderr_rule():
    se, beyond = stats.two_stderr(0.03, 0.01, 0.01)
    assert se == pytest.approx(0.0141421356) and beyond
    assert not stats.two_stderr(0.02, 0.01, 0.01)[1]


def test_paired_bootstrap_is_deterministic_and_centred():
    rng = np.random.default_rng(0)
    diff = (rng.random((164, 3)) < 0.1).astype(float)  # the run solves ~10% more task-seeds
    a, b = stats.paired_bootstrap(diff), stats.paired_bootstrap(diff)
    assert a == b
    lo, hi, p = a
    assert lo < diff.mean() < hi and lo > 0 and p < 0.05
    assert stats.paired_bootstrap(np.zeros((20, 3))) == (0.0, 0.0, 1.0)


def test_verdict_needs_both_tests():
    assert stats.verdict(0.1, True, 0.01) == "significant improvement"
    assert stats.verdict(-0.1, True, 0.01) == "significant regression"
    assert stats.verdict(0.1, True, 0.2).startswith("not significant")
    assert stats.verdict(0.1, False, 0.01).startswith("not significant")


def _result(**kw) -> EvalResult:
    d = dict(
        suite="s",
        policy="p",
        seeds=[0, 1],
        n_samples=2,
        task_ids=["a", "b", "c"],
        correct={"0": [2, 1, 0], "1": [2, 0, 0]},
        categories={
            "0": [["pass", "pass"], ["pass", "name_error"], ["timeout", "timeout"]],
            "1": [["pass", "pass"], ["name_error", "name_error"], ["timeout", "assertion_error"]],
        },
        flags={"0": [["", ""], ["", "self_test+test_file"], ["", ""]], "1": [["", ""], ["", ""], ["", ""]]},
        task_meta={
            "a": {"type": "x", "difficulty": 1},
            "b": {"type": "x", "difficulty": 10},
            "c": {"type": "y", "difficulty": 2},
        },
    )
    d.update(kw)
    return EvalResult(**d)


def test_summarize_pass_at_k_and_failure_counts():
    s = summarize(_result())
    # seed 0: (1 + 0.5 + 0)/3 = 0.5 ; seed 1: (1 + 0 + 0)/3
    assert s["pass_at_1"]["per_seed"] == {"0": pytest.approx(0.5), "1": pytest.approx(1 / 3)}
    assert s["pass_at_1"]["mean"] == pytest.approx(5 / 12)
    assert s["pass_at_1"]["std"] == pytest.approx(np.std([0.5, 1 / 3], ddof=1))
    rates = [1.0, 0.25, 0.0]  # per task over seeds and samples
    assert s["pass_at_1"]["stderr"] == pytest.approx(np.std(rates, ddof=1) / np.sqrt(3))
    assert list(s["pass_at_k"]) == ["1"]  # pass@5 needs 5 samples per task
    five = summarize(_result(n_samples=5, correct={"0": [5, 1, 0], "1": [0, 0, 0]}, categories={}, flags={}))
    assert five["pass_at_k"]["5"]["per_seed"] == {"0": pytest.approx(2 / 3), "1": 0.0}
    assert set(s["categories"]) == {"name_error", "timeout", "assertion_error"}  # "pass" is not a failure
    assert s["categories"]["name_error"]["per_seed"] == {"0": 1.0, "1": 2.0}
    assert s["flags"]["self_test"]["per_seed"] == {"0": 1.0, "1": 0.0}
    assert list(s["breakdowns"]["difficulty"]) == ["1", "2", "10"]  # numeric order
    assert s["breakdowns"]["type"]["x"]["mean"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    flat = flat_metrics(_result())
    assert flat["category/timeout"] == 1.5 and flat["seed_1/pass_at_1"] == pytest.approx(1 / 3)
    assert flat["difficulty/10/pass_at_1"] == pytest.approx(0.25)


def test_summarize_rejects_inconsistent_vectors():
    with pytest.raises(ValueError, match="seed 1 has 2 outcomes"):
        summarize(_result(correct={"0": [2, 1, 0], "1": [2, 0]}))


def test_registry_json_is_deterministic_and_readable():
    obj = {"b": [1, 2.1234567891, float("nan")], "a": {"z": [[1, 2], ["x"]], "y": [{"k": 1}]}}
    text = registry.dumps(registry.normalise(obj))
    assert text == registry.dumps(registry.normalise(json.loads(json.dumps(obj))))
    assert '"b": [1, 2.123457, null]' in text and '"z": [[1, 2], ["x"]]' in text
    assert text.index('"a"') < text.index('"b"')


def _lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_humaneval_results_maps_categories(tmp_path):
    f = _lines(
        tmp_path / "x_results.jsonl",
        [
            {"task_id": "HumanEval/1", "completion": "", "passed": True, "result": "passed"},
            {"task_id": "HumanEval/1", "completion": "", "passed": False, "result": "failed: "},
            {"task_id": "HumanEval/0", "completion": "", "passed": False, "result": "timed out"},
            {
                "task_id": "HumanEval/0",
                "completion": "",
                "passed": False,
                "result": "failed: name 're' is not defined",
            },
        ],
    )
    res = build_eval_result([f], None, "humaneval", "p")
    assert res.task_ids == ["HumanEval/0", "HumanEval/1"] and res.n_samples == 2
    assert res.correct == {"0": [0, 1]}
    assert res.categories == {"0": [["timeout", "name_error"], ["pass", "assertion_error"]]}


def test_plain_json_and_csv(tmp_path):
    j = tmp_path / "a.json"
    j.write_text(json.dumps({"t/2": True, "t/10": 0, "t/1": "fail"}))
    c = tmp_path / "b.csv"
    c.write_text("task_id,passed\nt/1,yes\nt/2,false\nt/10,1\n")
    res = build_eval_result([j, c], [42, 7], "humaneval", "p")
    assert res.task_ids == ["t/1", "t/2", "t/10"]
    assert res.correct == {"42": [0, 1, 0], "7": [1, 0, 1]}
    assert res.categories == {}  # pass/fail only: no failure taxonomy invented


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("r.jsonl", '{"task_id": "a", "passed": true}\nnot json\n', "r.jsonl:2: not valid JSON"),
        ("r.jsonl", '{"task_id": "a"}\n', "expected 'task_id' and 'passed'"),
        ("r.json", '{"a": "maybe"}', "'passed' must be true/false"),
        ("r.json", "[1, 2]", "item 0: expected an object"),
        ("r.json", "{broken", "not valid JSON"),
        ("r.csv", "id,ok\na,1\n", "must name 'task_id' and 'passed'"),
        ("r.txt", "a 1", "unknown format"),
        ("r.json", "{}", "no results in file"),
    ],
)
def test_malformed_result_files_are_user_errors(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(UserError, match=message):
        read_results_file(f)


def test_mismatched_task_sets_and_seed_counts(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"t1": True, "t2": False}))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"t1": True, "t3": False}))
    with pytest.raises(
        UserError, match=r"mismatched task sets.*only in the first: t2.*only in the second: t3"
    ):
        build_eval_result([a, b], None, "s", "p")
    with pytest.raises(UserError, match="1 --seed value"):
        build_eval_result([a, a], [1], "s", "p")
    with pytest.raises(UserError, match="must differ"):
        build_eval_result([a, a], [1, 1], "s", "p")
    uneven = _lines(
        tmp_path / "u.jsonl",
        [
            {"task_id": "t1", "passed": True},
            {"task_id": "t1", "passed": True},
            {"task_id": "t2", "passed": False},
        ],
    )
    with pytest.raises(UserError, match="same number of samples"):
        build_eval_result([uneven], None, "s", "p")


def test_parse_assignments():
    assert parse_assignments(["n_pairs=500", "lr=1e-5", "quant=nf4"], "--param") == {
        "n_pairs": 500,
        "lr": 1e-5,
        "quant": "nf4",
    }
    with pytest.raises(UserError, match="key=value"):
        parse_assignments(["oops"], "--param")


def test_json_report_with_results_key(tmp_path):
    f = tmp_path / "base_eval.json"
    f.write_text(
        json.dumps(
            {"pass@1": 0.5, "results": [{"task_id": "t/1", "passed": True}, {"task_id": "t/0", "passed": 0}]}
        )
    )
    res = build_eval_result([f], [3], "humaneval", "p")
    assert res.task_ids == ["t/0", "t/1"] and res.correct == {"3": [0, 1]}
