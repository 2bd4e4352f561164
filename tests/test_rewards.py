"""The shared verifier reward through the real sandbox: scores, lowest rewards, and None."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time

import pytest
from canary import canary_dir, untouched
from test_verify_hostile import CASES, PROBLEM

from rlvf.generate.cleanup import clean_completion
from rlvf.records import Outcome, Task
from rlvf.rewards import (
    InfraFailureError,
    VerifierReward,
    batch_rates,
    check_infra_rate,
    reward_of,
    score_completions,
)
from rlvf.verify.sandbox import ForkServer

ADD = Task(
    task_id="t/add3",
    prompt='def add3(a, b):\n    """Return a + b + 3."""\n',
    entry_point="add3",
    test=textwrap.dedent(
        """
        def check(candidate):
            assert candidate(1, 2) == 6
            assert candidate(0, 0) == 3
            assert candidate(-3, 0) == 0
            assert candidate(5, 5) == 13
        """
    ),
    canonical_solution="    return a + b + 3\n",
)
HOSTILE = Task(**{k: PROBLEM[k] for k in ("task_id", "prompt", "entry_point", "test", "canonical_solution")})


def _outcome(category: str, passed: int = 0, total: int = 4) -> Outcome:
    return Outcome("t", 0, category == "pass", category, tests_passed=passed, tests_total=total)


def test_reward_of_every_kind_of_verdict() -> None:
    assert reward_of(_outcome("pass", 4), "fraction") == 1.0
    assert reward_of(_outcome("pass", 4), "binary") == 1.0
    # A wrong answer that got 3 of 4 tests right: partial credit only in fraction mode.
    assert reward_of(_outcome("assertion_error", 3), "fraction") == 0.75
    assert reward_of(_outcome("assertion_error", 3), "binary") == 0.0
    assert reward_of(_outcome("assertion_error", 0), "fraction", lowest=-1.0) == -1.0
    # Cheating, hanging and format failures earn the lowest reward whatever passed before.
    for category in (
        "tampering",
        "forbidden_side_effect",
        "timeout",
        "format_error",
        "no_code",
        "output_limit",
    ):
        assert reward_of(_outcome(category, 3), "fraction", lowest=-1.0) == -1.0
    # No verdict is not a wrong answer.
    assert reward_of(_outcome("infra_error", 0), "fraction") is None
    with pytest.raises(ValueError, match="reward mode"):
        reward_of(_outcome("pass", 4), "best")


def test_rates_and_infra_guard() -> None:
    assert check_infra_rate(1, 10, 0.1) is None
    with pytest.raises(InfraFailureError, match="could not judge 2 of 10"):
        check_infra_rate(2, 10, 0.1)


def test_completions_are_cleaned_as_eval_cleans_them_and_scored() -> None:
    completions = [
        "    return a + b + 3\n\nprint(add3(1, 2))\nassert False\n",  # self-test cut off by clean-up
        "```python\ndef add3(a, b):\n    return a + b + 3\n```\nHope this helps!",  # fenced
        "    return 3 if a + b == 0 else a + b\n",  # 1 of 4 tests right
        "    import sys\n    sys.exit(0)\n",  # tampering
        "\n\n",  # no code at all: a format failure
        "    while True:\n        pass\n",  # timeout
    ]
    scored = score_completions({ADD.task_id: ADD}, [ADD.task_id] * len(completions), completions, timeout=1.0)
    for s, raw in zip(scored, completions, strict=True):
        assert s.completion == clean_completion(ADD.prompt, raw, ADD.entry_point).completion
    assert [s.reward for s in scored] == [1.0, 1.0, 0.25, 0.0, 0.0, 0.0]
    assert [s.outcome.category for s in scored[3:]] == ["tampering", "no_code", "timeout"]
    rates = batch_rates(scored)
    assert rates["tampering"] == pytest.approx(1 / 6)
    assert rates["timeout"] == pytest.approx(1 / 6)
    assert rates["format_failure"] == pytest.approx(1 / 6)
    assert rates["infra_failure"] == 0.0
    binary = score_completions({ADD.task_id: ADD}, [ADD.task_id], [completions[2]], mode="binary")
    assert binary[0].reward == 0.0


def test_as_trl_reward_function_with_dataset_columns() -> None:
    metrics: dict[str, float] = {}
    fn = VerifierReward([ADD], mode="binary")
    rewards = fn(
        prompts=[ADD.prompt, ADD.prompt],
        completions=["    return a + b + 3\n", [{"role": "assistant", "content": "    return a - b\n"}]],
        completion_ids=[[1], [2]],
        task_id=[ADD.task_id, ADD.task_id],
        trainer_state=None,
        log_extra=lambda *a: None,
        log_metric=lambda name, value: metrics.__setitem__(name, value),
    )
    assert rewards == [1.0, 0.0]
    assert fn.__name__ == "verifier"
    assert metrics["verifier/infra_failure_rate"] == 0.0
    assert set(metrics) == {
        f"verifier/{n}_rate"
        for n in ("tampering", "forbidden_side_effect", "timeout", "format_failure", "infra_failure")
    }
    with pytest.raises(ValueError, match="task_id"):
        fn(prompts=[ADD.prompt], completions=["x"])


def test_prefetched_verdicts_are_the_verdicts_of_a_batch_call() -> None:
    """Completions handed over one by one while a batch samples (rlvf's GRPO rollouts) score
    exactly as when judged with the batch: the same clean-up, categories and rewards, each
    prefetched verdict taken once (duplicates each their own), the rest judged in the call."""
    batch = [
        "    return a + b + 3\n",
        "    return 3 if a + b == 0 else a + b\n",
        "    import sys\n    sys.exit(0)\n",
        "    while True:\n        pass\n",
        "    return a + b + 3\n",  # a duplicate: judged twice, as in a batch
        "\n\n",
        "    return a - b\n",  # never prefetched
    ]
    ids = [ADD.task_id] * len(batch)
    plain = VerifierReward([ADD], timeout=1.0)
    want = plain(completions=batch, task_id=ids)
    early = VerifierReward([ADD], timeout=1.0)
    assert early.can_prefetch
    early.prefetch(ADD.task_id, "    return 0\n")  # asked for by no call: forgotten below
    early.forget_prefetched()
    for raw in batch[:-1]:
        early.prefetch(ADD.task_id, raw)
    early.prefetch("no/such-task", batch[0])  # unknown task: ignored
    assert early(completions=batch, task_id=ids) == want == [1.0, 0.25, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert early.prefetch_hits == len(batch) - 1
    assert [(s.completion, s.outcome.category, s.outcome.index) for s in early.last] == [
        (s.completion, s.outcome.category, s.outcome.index) for s in plain.last
    ]
    # nothing left over: the same batch again is judged in the call
    assert early(completions=batch, task_id=ids) == want and early.prefetch_hits == len(batch) - 1


def test_killing_the_fork_server_mid_batch_gives_none_not_zero() -> None:
    """Correct but slow solutions; the fork server is killed while some are being judged.
    Those get None (excluded), the rest are still judged correct, none is scored 0."""
    server = ForkServer()
    try:
        slow = "    import time\n    time.sleep(0.4)\n    return a + b + 3\n"
        fn = VerifierReward([ADD], timeout=3.0, workers=4, server=server, max_infra_rate=1.0)
        killed: list[int] = []

        def kill_once_busy() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (server.starts < 1 or server._proc is None):
                time.sleep(0.02)
            time.sleep(0.6)  # the first samples are inside their children by now
            proc = server._proc
            if proc is not None:
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)

        killer = threading.Thread(target=kill_once_busy)
        killer.start()
        n = 16
        rewards = fn(completions=[slow] * n, task_id=[ADD.task_id] * n)
        killer.join()
        assert killed, "the fork server was never killed"
        assert server.starts >= 2  # it was restarted for the rest of the batch
        assert 0.0 not in rewards, rewards
        assert None in rewards, rewards
        assert 1.0 in rewards, rewards  # samples after the restart are judged normally
        assert all(r in (None, 1.0) for r in rewards)
        assert fn.n_infra == rewards.count(None)
        assert [s.outcome.category for s in fn.last].count("infra_error") == rewards.count(None)
        # Over the run's threshold, the next batch stops training with a clear error.
        fn.max_infra_rate = 0.0
        with pytest.raises(InfraFailureError, match=f"could not judge {fn.n_infra} of {n + 1} completions"):
            fn(completions=[ADD.canonical_solution], task_id=[ADD.task_id])
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["fraction", "binary"])
def test_whole_hostile_corpus_earns_the_lowest_reward(mode: str, tmp_path) -> None:
    canary = canary_dir(tmp_path)
    completions = [c.replace("CANARY", repr(str(canary))) for _, c, _ in CASES]
    fn = VerifierReward([HOSTILE], mode=mode, lowest=-1.0, timeout=2.0, workers=4, max_infra_rate=0.0)
    rewards = fn(completions=completions, task_id=[HOSTILE.task_id] * len(CASES))
    wrong = {
        name: (r, s.outcome.category)
        for (name, _, _), r, s in zip(CASES, rewards, fn.last, strict=True)
        if r != -1.0
    }
    assert not wrong, wrong
    assert untouched(canary)
