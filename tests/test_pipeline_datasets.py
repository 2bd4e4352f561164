"""Training data from verified samples: pairs (pipeline parity, per-prompt cap, dedupe, length
filters, nested subsets) and SFT rows. Plain records, no model."""

from __future__ import annotations

import pytest

from rlvf.datasets.pairs import build_pairs, load_pairs, nested_subset
from rlvf.datasets.sft import load_traces, sft_from_samples
from rlvf.errors import UserError
from rlvf.records import Outcome, Pair, RecordError, Sample, Task, write_jsonl


def _task(tid: str) -> Task:
    return Task(tid, f"def {tid}():\n", tid, "def check(c):\n    pass\n", "    return 1\n")


def _data(spec: dict[str, list[tuple[str, bool]]], policy: str = "p"):
    """{task: [(completion, passed), ...]} -> tasks, samples, outcomes."""
    tasks, samples, outcomes = [], [], []
    for tid, rows in spec.items():
        tasks.append(_task(tid))
        for i, (text, ok) in enumerate(rows):
            samples.append(Sample(tid, i, text, policy=policy))
            outcomes.append(Outcome(tid, i, ok, "pass" if ok else "assertion_error"))
    return tasks, samples, outcomes


def test_pairs_are_passed_vs_failed_of_the_same_prompt():
    tasks, samples, outcomes = _data(
        {
            "a": [("    return 1\n", True), ("    return 2\n", False), ("    return 3\n", False)],
            "b": [("    return 1\n", True), ("    return 1  \n", True)],  # only passes: no pair
            "c": [("    x\n", False)],  # only fails: no pair
        }
    )
    pairs, stats = build_pairs(tasks, samples, outcomes, pairs_per_prompt=4)
    assert {(p.task_id, p.chosen_index, p.rejected_index) for p in pairs} == {("a", 0, 1), ("a", 0, 2)}
    for p in pairs:
        assert p.prompt == "def a():\n" and p.policy == "p" and p.rejected_category == "assertion_error"
    assert stats.prompts == 3 and stats.prompts_paired == 1
    assert stats.prompts_all_pass == 1 and stats.prompts_all_fail == 1
    assert stats.dropped_duplicate == 1  # "return 1" and "return 1  " are the same text


def test_pairs_per_prompt_cap_spreads_samples():
    rows = [(f"    return {i}\n", i < 3) for i in range(9)]  # 3 passed x 6 failed = 18 combinations
    tasks, samples, outcomes = _data({"a": rows})
    pairs, _ = build_pairs(tasks, samples, outcomes, pairs_per_prompt=6, seed=1)
    assert len(pairs) == 6 and len({(p.chosen_index, p.rejected_index) for p in pairs}) == 6
    chosen = [p.chosen_index for p in pairs]
    assert sorted(chosen.count(i) for i in range(3)) == [2, 2, 2]  # each passed sample used evenly
    assert len({p.rejected_index for p in pairs}) == 6
    again, _ = build_pairs(tasks, samples, outcomes, pairs_per_prompt=6, seed=1)
    assert again == pairs  # seeded


def test_length_filter_and_flaky_conflicts():
    tasks, samples, outcomes = _data(
        {
            "a": [
                ("    return 1\n", True),
                ("    return 1\n", False),
                ("  \n", False),
                ("    return 2\n", False),
            ]
        }
    )
    pairs, stats = build_pairs(tasks, samples, outcomes, min_chars=3, dedupe=True)
    assert stats.dropped_length == 1
    assert stats.dropped_conflict == 2  # the same text passed once and failed once: neither side
    assert pairs == []


def test_parity_mixed_policies_is_refused():
    tasks, samples, outcomes = _data({"a": [("    return 1\n", True)]})
    samples.append(Sample("a", 1, "    return 2\n", policy="other"))
    outcomes.append(Outcome("a", 1, False, "assertion_error"))
    with pytest.raises(UserError, match="several policies"):
        build_pairs(tasks, samples, outcomes)


def test_sample_without_outcome_is_an_error():
    tasks, samples, outcomes = _data({"a": [("    return 1\n", True), ("    return 2\n", False)]})
    with pytest.raises(RecordError, match="has no outcome"):
        build_pairs(tasks, samples, outcomes[:1])


def test_nested_subsets():
    pool = [Pair("p", f"c{i}", f"r{i}", f"t{i % 7}", i, i + 100) for i in range(50)]
    s10, s20, s40 = (nested_subset(pool, n, seed=3) for n in (10, 20, 40))
    assert len(s10) == 10 and set(s10) <= set(s20) <= set(s40)
    assert nested_subset(pool, None) == pool
    # a pair's rank depends on its identity only: a bigger pool keeps the small subset's members
    bigger = pool + [Pair("p", f"c{i}", f"r{i}", "t-new", i, i + 100) for i in range(50, 60)]
    assert set(nested_subset(bigger, 60, seed=3)) >= set(s40)
    with pytest.raises(UserError, match="only 50 are available"):
        nested_subset(pool, 51)


def test_load_pairs_validates(tmp_path):
    good = tmp_path / "p.jsonl"
    write_jsonl(good, [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    (p,) = load_pairs(good)
    assert p.task_id == "line-1" and p.chosen == "b"
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"prompt": "a", "chosen": "b"}])
    with pytest.raises(RecordError, match="missing field 'rejected'"):
        load_pairs(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_pairs(tmp_path / "none.jsonl")


def test_sft_rows_from_passed_samples_only():
    tasks, samples, outcomes = _data(
        {
            "a": [
                ("    return 1\n", True),
                ("    return 1\n", True),
                ("    return 2\n", False),
                ("    return 3\n", True),
            ]
        }
    )
    rows, stats = sft_from_samples(tasks, samples, outcomes, max_per_prompt=5)
    assert [r["index"] for r in rows] == [0, 3]  # duplicate dropped, failure never used
    assert stats["passed"] == 3 and stats["dropped_duplicate"] == 1
    capped, _ = sft_from_samples(tasks, samples, outcomes, max_per_prompt=1)
    assert len(capped) == 1


def test_traces(tmp_path):
    f = tmp_path / "t.jsonl"
    write_jsonl(
        f, [{"prompt": "def f():\n", "completion": "    return 1\n"}, {"prompt": "x", "completion": ""}]
    )
    rows = load_traces(f)
    assert rows == [{"prompt": "def f():\n", "completion": "    return 1\n", "task_id": "line-1"}]
    write_jsonl(f, [{"prompt": 1, "completion": "x"}])
    with pytest.raises(RecordError, match="must be a string"):
        load_traces(f)
