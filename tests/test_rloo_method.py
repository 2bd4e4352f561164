"""RLOO as a registered method: the shared verifier reward and the leave-one-out baseline on
embedded:small with the small recipe, read back from a real sqlite MLflow store (config,
reward / KL / hacking-rate metrics, every rollout with the advantage TRL gave it, the held-out
check, an eval, a registered version), and a bad batch shape refused before a run opens."""

from __future__ import annotations

from collections import defaultdict

import pytest
from stores import sqlite_store

from rlvf.config import load_config

RATES = ("tampering", "forbidden_side_effect", "timeout", "format_failure", "infra_failure")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("rloo_method")) as root:
        yield root


@pytest.fixture(scope="module")
def client(store):
    from mlflow import MlflowClient

    return MlflowClient()


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_rloo_run_reads_back_from_the_store(client, store):
    from rlvf.pipeline.lifecycle import STAGES
    from rlvf.pipeline.sampling import training_tasks
    from rlvf.rl.rollouts import ARTIFACT_DIR, read_rollouts

    # beta 0: the advantage is the reward minus the leave-one-out mean, checkable from the rollouts
    cfg = load_config("rloo", "small", ["tracking.label=rloo-test", "rloo.beta=0"])
    res = STAGES["rloo"](cfg)
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.tags["rlvf.method"] == "rloo"
    for key in cfg.flat():
        if key.startswith("rloo."):
            assert f"cfg.{key}" in r.data.params, key
    # per-generation metrics from the shared verifier reward
    steps = cfg["rloo.max_steps"]
    per_generation = cfg["rloo.generation_batch_size"] // cfg["train.batch_size"]
    generation_steps = list(range(1, steps + 1, per_generation))
    assert [s for s, _ in _history(client, r.info.run_id, "train/reward_mean")] == generation_steps
    assert _history(client, r.info.run_id, "train/loss")
    for rate in RATES:
        values = [v for _, v in _history(client, r.info.run_id, f"train/verifier_{rate}_rate")]
        assert values and all(0.0 <= v <= 1.0 for v in values), rate
    held = _history(client, r.info.run_id, "train/heldout_pass1")
    assert [s for s, _ in held] == list(range(0, steps + 1, cfg["rloo.eval_every"]))
    # every rollout kept, grouped by prompt within a generation; the leave-one-out baseline
    rows = read_rollouts(client.download_artifacts(r.info.run_id, ARTIFACT_DIR, str(store / "down")))
    assert len(rows) == len(generation_steps) * cfg["rloo.generation_batch_size"]
    assert {row["task_id"] for row in rows} <= {t.task_id for t in training_tasks(cfg)}
    assert all(row["reward"] is None or 0.0 <= row["reward"] <= 1.0 for row in rows)
    # seeded sampling: on the small recipe some group mixes a pass with failures (else the check is empty)
    assert any(abs(row["advantage"]) > 0 for row in rows)
    g = cfg["rloo.num_generations"]
    groups = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row["step"], i // g)].append(row)
    for group in groups.values():
        assert len({row["task_id"] for row in group}) == 1
        judged = [row for row in group if row["reward"] is not None]
        for row in judged:
            others = [o["reward"] for o in judged if o is not row]
            want = row["reward"] - sum(others) / len(others) if others else 0.0
            assert row["advantage"] == pytest.approx(want, abs=1e-5)
    # the lifecycle: an eval over the recipe's seeds, the comparison with the base, a version
    m = r.data.metrics
    for seed in cfg["eval.seeds"]:
        assert f"eval/procedural/seed_{seed}/pass_at_1" in m
    assert "base_eval/procedural/pass_at_1" in m and "compare/procedural/delta_pass_at_1" in m
    mv = client.get_model_version(
        r.data.tags["rlvf.registered_model"], r.data.tags["rlvf.registered_version"]
    )
    assert mv.run_id == r.info.run_id


def test_a_bad_batch_shape_is_refused_before_a_run_opens(client, store):
    from rlvf.errors import UserError
    from rlvf.pipeline.lifecycle import STAGES

    def n_runs():
        return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))

    before = n_runs()
    with pytest.raises(UserError, match="multiple of num_generations"):
        STAGES["rloo"](load_config("rloo", "small", ["rloo.generation_batch_size=6"]))
    with pytest.raises(UserError, match=r"multiple of train\.batch_size"):
        STAGES["rloo"](
            load_config("rloo", "small", ["rloo.generation_batch_size=2", "rloo.num_generations=2"])
        )
    assert n_runs() == before
