"""Sampling and judging at once (`rlvf.verify.stream`) on the real embedded:small model and the
real sandbox: exactly the samples and verdicts of `generate` then `verify_samples`."""

from __future__ import annotations

import dataclasses

from rlvf.generate import SamplingSettings, generate
from rlvf.tasks import load_suite
from rlvf.verify import verify_samples
from rlvf.verify.stream import sample_and_judge


def _verdicts(outcomes):
    # everything but the wall-clock duration, which differs between any two runs
    return [dataclasses.replace(o, duration=0.0) for o in outcomes]


def test_streamed_judging_gives_the_batch_path_samples_and_verdicts(tiny_model):
    tasks = load_suite("procedural")[::9][:6]
    settings = SamplingSettings(n=3, temperature=0.9, max_new_tokens=48, seed=5)
    kw = dict(batch_size=8, policy_name="tiny")
    samples, _ = generate(tiny_model, tasks, settings, backend="hf", progress=False, **kw)
    outcomes = verify_samples(tasks, samples, timeout=3.0, progress=False)
    got, judged = sample_and_judge(tiny_model, tasks, settings, timeout=3.0, progress=False, **kw)
    assert got == samples
    assert _verdicts(judged) == _verdicts(outcomes)
    # rows stopped early and rows cut at the limit both reach the judges
    assert {s.finish for s in got} >= {"length"} and len({s.finish for s in got}) > 1
    # one rank's share of the batches: that share of the rows, judged the same
    mine, mine_judged = sample_and_judge(
        tiny_model, tasks, settings, timeout=3.0, progress=False, shard=(1, 2), **kw
    )
    rows = {(s.task_id, s.index): (s, o) for s, o in zip(samples, outcomes, strict=True)}
    assert 0 < len(mine) < len(samples)
    assert [rows[(s.task_id, s.index)][0] for s in mine] == mine
    assert _verdicts(mine_judged) == _verdicts([rows[(s.task_id, s.index)][1] for s in mine])
