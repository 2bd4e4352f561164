"""Evaluation split across two processes gives exactly the numbers of one process."""

from __future__ import annotations

from rlvf.evaluate import EvalSettings, evaluate
from rlvf.evaluate.core import eval_processes
from rlvf.models import PolicySpec


def test_seeds_split_across_processes_give_the_same_results(tiny_policy, monkeypatch):
    spec = PolicySpec(base=str(tiny_policy), device="cpu")
    settings = EvalSettings(seeds=(0, 1, 2), n_samples=2, per_cell=1, limit=8, max_new_tokens=64)
    monkeypatch.setenv("RLVF_EVAL_PROCESSES", "1")
    assert eval_processes(spec, settings) == 1
    one = evaluate(spec, settings, policy_name="p", progress=False)["procedural"]
    monkeypatch.setenv("RLVF_EVAL_PROCESSES", "2")
    two = evaluate(spec, settings, policy_name="p", progress=False)["procedural"]
    assert one.result.to_dict() == two.result.to_dict()
    assert [s.completion for s in one.samples] == [s.completion for s in two.samples]
    assert [o["passed"] for o in one.outcomes] == [o["passed"] for o in two.outcomes]
    assert [o["seed"] for o in two.outcomes] == sorted(o["seed"] for o in two.outcomes)


def test_in_memory_models_and_single_seeds_stay_in_one_process(tiny_model, tiny_policy, monkeypatch):
    monkeypatch.delenv("RLVF_EVAL_PROCESSES", raising=False)
    spec = PolicySpec(base=str(tiny_policy), device="cpu")
    assert eval_processes(tiny_model, EvalSettings(seeds=(0, 1))) == 1
    assert eval_processes(spec, EvalSettings(seeds=(0,))) == 1


def test_a_small_evaluation_is_not_worth_a_second_process(tiny_policy, monkeypatch):
    """A second process costs an interpreter, torch and the model: the tests' evaluations (a
    dozen tasks) stay in one; the default recipe's (110 tasks x 3 samples x 3 seeds) split."""
    monkeypatch.delenv("RLVF_EVAL_PROCESSES", raising=False)
    spec = PolicySpec(base=str(tiny_policy), device="cpu")
    assert eval_processes(spec, EvalSettings(seeds=(0, 1), n_samples=2), n_tasks=12) == 1
    assert eval_processes(spec, EvalSettings(seeds=(0, 1, 2), n_samples=3), n_tasks=110) == 2
