"""Iterative DPO (`dpo.rounds`) on embedded:small with the small recipe, read back from a real
sqlite MLflow store: one parent run, one nested run per round with its own data and eval,
round 2's pairs sampled from round 1's policy, the parent's per-round pass@1 curve, and
exactly one registered version (the parent's)."""

from __future__ import annotations

import os

import pytest
from stores import sqlite_store

from rlvf.config import load_config
from rlvf.tracking import schema


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("iterative_dpo")) as root:
        yield root


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_two_rounds_nested_runs_curve_and_one_version(store):
    from mlflow import MlflowClient

    from rlvf.pipeline.lifecycle import STAGES
    from rlvf.pipeline.rounds import KIND_ROUND, TAG_ROUND, round_metric

    client = MlflowClient()
    # Short rounds (a round's eval is its cost): 2 steps, one seed, one sample of 8 tasks.
    short = ["train.max_steps=2", "eval.seeds=[0]", "eval.n_samples=1", "eval.limit=8"]
    cfg = load_config("dpo", "small", ["dpo.rounds=2", "dpo.keep_pairs=true", *short])
    assert cfg.hash != load_config("dpo", "small").hash  # rounds > 1 is another experiment
    res = STAGES["dpo"](cfg)
    parent = client.get_run(res.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[schema.TAG_METHOD] == "dpo" and parent.data.tags[schema.TAG_KIND] == "train"
    assert parent.data.params["cfg.dpo.rounds"] == "2" and parent.data.params["cfg.dpo.keep_pairs"] == "true"

    children = sorted(
        client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"),
        key=lambda r: int(r.data.tags[TAG_ROUND]),
    )
    assert [c.data.tags[TAG_ROUND] for c in children] == ["1", "2"]
    rows = []
    for child in children:
        m = child.data.metrics
        assert child.info.status == "FINISHED" and child.data.tags[schema.TAG_KIND] == KIND_ROUND
        assert child.data.tags[schema.TAG_CONFIG_HASH] == cfg.hash
        # its own data, training and eval (over the recipe's seeds), compared with the base
        assert m["data/pairs"] > 0 and _history(client, child.info.run_id, "train/loss")
        for seed in cfg["eval.seeds"]:
            assert f"eval/procedural/seed_{seed}/pass_at_1" in m
        assert "compare/procedural/delta_pass_at_1" in m
        assert "rlvf.registered_version" not in child.data.tags
        rows.append(m["data/train_rows"])
        (inp,) = child.inputs.dataset_inputs
        child.policy = {t.key: t.value for t in inp.tags}["rlvf.policy"]
    # round 2 sampled from round 1's policy, and (keep_pairs) trained on both rounds' pairs
    assert children[1].policy == f"init:{children[0].info.run_id}"
    assert rows[1] == rows[0] + children[1].data.metrics["data/pairs"]

    # the parent's curve: the base at step 0, then each round's pass@1
    curve = _history(client, res.run_id, round_metric("procedural"))
    assert [s for s, _ in curve] == [0, 1, 2]
    assert curve[0][1] == parent.data.metrics["base_eval/procedural/pass_at_1"]
    assert [v for _, v in curve[1:]] == [c.data.metrics["eval/procedural/pass_at_1"] for c in children]
    # the rounds' training curves end to end, and the final policy's eval on the parent
    loss_steps = [s for s, _ in _history(client, res.run_id, "train/loss")]
    assert max(loss_steps) == parent.data.metrics["train/steps"] == 2 * cfg["train.max_steps"]
    assert (
        parent.data.metrics["eval/procedural/pass_at_1"]
        == children[1].data.metrics["eval/procedural/pass_at_1"]
    )

    # exactly one registered version: the parent's
    (version,) = client.search_model_versions()
    assert version.run_id == res.run_id and res.registered == (version.name, str(version.version))
    assert version.tags[schema.TAG_METHOD] == "dpo"


def test_a_round_under_mlflow_run_is_a_new_nested_run(store, monkeypatch):
    """Under `mlflow run` (MLFLOW_RUN_ID set) the parent attaches to that run, and a round
    opens a new run nested under it rather than attaching to it too."""
    from mlflow import MlflowClient

    from rlvf.pipeline.rounds import KIND_ROUND
    from rlvf.tracking.runs import start_run

    client = MlflowClient()
    cfg = load_config("dpo", "small", ["dpo.rounds=2"])
    made = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", made)
    with start_run(cfg, "train") as parent:
        assert parent.run_id == made
        with start_run(cfg, KIND_ROUND, child_of=parent.run_id) as child:
            assert child.run_id != made
        assert os.environ["MLFLOW_RUN_ID"] == made
    got = client.get_run(child.run_id)
    assert got.data.tags["mlflow.parentRunId"] == made and got.info.status == "FINISHED"
    assert got.data.tags[schema.TAG_KIND] == KIND_ROUND
    assert client.get_run(made).info.status == "FINISHED"
