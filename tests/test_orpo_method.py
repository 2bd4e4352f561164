"""ORPO as a registered method: verified pairs built from the policy's own samples on
embedded:small, trained without a reference model, read back from a real sqlite MLflow store
(config, the pairs dataset, ORPO's loss terms, eval, a registered version)."""

from __future__ import annotations

import pytest
from stores import sqlite_store

from rlvf.config import load_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("orpo_method")) as root:
        yield root


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_orpo_run_reads_back_from_the_store(store):
    from mlflow import MlflowClient

    from rlvf.pipeline.lifecycle import STAGES
    from rlvf.records import Pair, read_jsonl

    client = MlflowClient()
    cfg = load_config("orpo", "small", ["tracking.label=orpo-test", "orpo.beta=0.2"])
    res = STAGES["orpo"](cfg)
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.tags["rlvf.method"] == "orpo"
    assert r.data.params["cfg.orpo.beta"] == "0.2"
    assert "cfg.data.pairs_per_prompt" in r.data.params
    # the pairs: built now from the base's verified samples, logged as the run's dataset
    local = client.download_artifacts(r.info.run_id, "data/pairs.jsonl", str(store / "down"))
    pairs = [Pair.from_dict(obj) for _, obj in read_jsonl(local)]
    assert pairs and r.data.metrics["data/pairs"] == len(pairs) == res.n_examples
    assert all(p.chosen != p.rejected and p.rejected_category != "pass" for p in pairs)
    # ORPO's loss terms per step: NLL on the chosen side and the odds-ratio term, no reference
    steps = list(range(1, cfg["train.max_steps"] + 1))
    for key in ("train/loss", "train/nll_loss", "train/log_odds_ratio", "train/rewards_margins"):
        assert [s for s, _ in _history(client, r.info.run_id, key)] == steps, key
    assert not any(k.startswith("train/ref") for k in r.data.metrics)
    m = r.data.metrics
    for seed in cfg["eval.seeds"]:
        assert f"eval/procedural/seed_{seed}/pass_at_1" in m
    assert "base_eval/procedural/pass_at_1" in m and "compare/procedural/delta_pass_at_1" in m
    mv = client.get_model_version(
        r.data.tags["rlvf.registered_model"], r.data.tags["rlvf.registered_version"]
    )
    assert mv.run_id == r.info.run_id
