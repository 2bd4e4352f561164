"""GRPO as a registered method: the one training lifecycle on embedded:small with the small
recipe, read back from a real sqlite MLflow store (config params, reward / KL / hacking-rate
metrics, the rollouts artifact with its row count, the held-out check, an eval, a registered
version), its health checks, and a bad setting refused before a run opens."""

from __future__ import annotations

import pytest
from stores import sqlite_store

from rlvf.config import load_config
from rlvf.methods import get

RATES = ("tampering", "forbidden_side_effect", "timeout", "format_failure", "infra_failure")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("grpo_method")) as root:
        yield root


@pytest.fixture(scope="module")
def client(store):
    from mlflow import MlflowClient

    return MlflowClient()


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_grpo_run_reads_back_from_the_store(client, store):
    from rlvf.pipeline.lifecycle import STAGES
    from rlvf.pipeline.sampling import training_tasks
    from rlvf.rl.rollouts import ARTIFACT_DIR, read_rollouts

    cfg = load_config("grpo", "small", ["tracking.label=grpo-test"])
    res = STAGES["grpo"](cfg)
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.tags["rlvf.method"] == "grpo"
    # config: every grpo key as a param, as the recipe set it
    for key in cfg.flat():
        if key.startswith("grpo."):
            assert f"cfg.{key}" in r.data.params, key
    assert r.data.params["cfg.grpo.num_generations"] == "4"
    assert r.data.params["cfg.grpo.loss_type"] == cfg["grpo.loss_type"]
    # per-step metrics: reward, KL, the verifier's hacking rates, dynamic sampling
    steps = cfg["grpo.max_steps"]
    per_generation = cfg["grpo.generation_batch_size"] // cfg["train.batch_size"]  # steps served by one
    generation_steps = list(range(1, steps + 1, per_generation))
    assert [s for s, _ in _history(client, r.info.run_id, "train/reward_mean")] == generation_steps
    for key in ("train/reward_std", "train/kl", "train/entropy", "train/loss"):
        assert _history(client, r.info.run_id, key), key
    for rate in RATES:
        values = [v for _, v in _history(client, r.info.run_id, f"train/verifier_{rate}_rate")]
        assert values and all(0.0 <= v <= 1.0 for v in values), rate
    before = _history(client, r.info.run_id, "train/dynamic_sampling_zero_variance_before")
    after = _history(client, r.info.run_id, "train/dynamic_sampling_zero_variance_after")
    assert before and after and all(a <= b for (_, a), (_, b) in zip(after, before, strict=True))
    # the held-out check at the start and every eval_every steps
    held = _history(client, r.info.run_id, "train/heldout_pass1")
    assert [s for s, _ in held] == list(range(0, steps + 1, cfg["grpo.eval_every"]))
    # every rollout kept: one generation of generation_batch_size completions per
    # steps_per_generation steps, plus the groups dynamic sampling drew
    gen = cfg["grpo.generation_batch_size"]
    generations = len(generation_steps)
    assert [s for s, _ in before] == generation_steps
    drawn = sum(v for _, v in _history(client, r.info.run_id, "train/dynamic_sampling_groups_drawn"))
    expected = generations * gen + int(drawn) * cfg["grpo.num_generations"]
    rows = read_rollouts(client.download_artifacts(r.info.run_id, ARTIFACT_DIR, str(store / "down")))
    assert len(rows) == expected
    assert sum(row["kept"] for row in rows) == generations * gen
    assert {"step", "prompt", "task_id", "completion", "reward", "category", "advantage", "length"} <= set(
        rows[0]
    )
    assert {row["task_id"] for row in rows} <= {t.task_id for t in training_tasks(cfg)}
    assert all(row["reward"] is None or 0.0 <= row["reward"] <= 1.0 for row in rows)
    # the lifecycle: an eval over the recipe's seeds, the comparison with the base, a version
    for seed in cfg["eval.seeds"]:
        assert f"eval/procedural/seed_{seed}/pass_at_1" in r.data.metrics
    assert "base_eval/procedural/pass_at_1" in r.data.metrics
    assert "compare/procedural/delta_pass_at_1" in r.data.metrics
    version = r.data.tags["rlvf.registered_version"]
    mv = client.get_model_version(r.data.tags["rlvf.registered_model"], version)
    assert mv.run_id == r.info.run_id
    assert res.registered is not None


def test_a_bad_batch_shape_is_refused_before_a_run_opens(client, store):
    from rlvf.errors import UserError
    from rlvf.pipeline.lifecycle import STAGES

    n_runs = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    with pytest.raises(UserError, match="multiple of num_generations"):
        STAGES["grpo"](load_config("grpo", "small", ["grpo.generation_batch_size=6"]))
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == n_runs


def _rows(**series):
    n = max(len(v) for v in series.values())
    out = []
    for i in range(n):
        row = {"step": i + 1}
        for key, values in series.items():
            if i < len(values):
                row[f"train/{key}"] = values[i]
        out.append(row)
    return out


def test_health_flags():
    from rlvf.train.callback import health_flags

    health = get("grpo").training.health
    steady = _rows(
        kl=[0.0, 0.01, 0.02, 0.02], entropy=[1.0, 0.9, 0.9, 0.85], reward_mean=[0.2, 0.3, 0.3, 0.4]
    )
    assert health(steady) == []
    assert health(_rows(kl=[0.0, 0.1, 0.8, 1.5])) == ["kl_runaway"]
    assert health(_rows(entropy=[1.2, 1.0, 0.2, 0.1])) == ["entropy_collapse"]
    hacking = _rows(reward_mean=[0.2, 0.3, 0.6, 0.8], heldout_pass1=[0.5, 0.4, 0.3])
    assert health(hacking) == ["reward_up_heldout_down"]
    learning = _rows(reward_mean=[0.2, 0.3, 0.6, 0.8], heldout_pass1=[0.5, 0.55, 0.6])
    assert health(learning) == []
    # through the shared checks, as the tracking callback applies them
    assert health_flags(_rows(loss=[0.1, 0.1, 0.1, 0.1], kl=[0.0, 0.1, 0.8, 1.5]), health) == ["kl_runaway"]
