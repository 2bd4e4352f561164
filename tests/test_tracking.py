"""Tracking without a model: run lifecycle, params/tags/artifacts, failure states, datasets,
model registration order. A real sqlite store in a temp dir (one per module: creating the
schema takes seconds)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from stores import sqlite_store

from rlvf.config import load_config
from rlvf.errors import UserError
from rlvf.records import Pair
from rlvf.tracking import schema


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("mlflow")) as root:
        yield root


@pytest.fixture
def client(store):
    from mlflow import MlflowClient

    return MlflowClient()


def test_run_layout(client):
    from rlvf.tracking.runs import start_run

    cfg = load_config("dpo", "small", ["tracking.label=dpo-test"])
    with start_run(cfg, "train") as run:
        run.metric("train/loss", 1.0, step=1)
        run.metric("train/loss", 0.5, step=2)
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    # every config key as a cfg.-prefixed param
    assert {k for k in r.data.params if k.startswith("cfg.")} == {f"cfg.{k}" for k in cfg.flat()}
    assert r.data.params["cfg.train.learning_rate"] == json.dumps(cfg["train.learning_rate"])
    assert r.data.params["cfg.dpo.loss_type"] == '["sigmoid", "sft"]'
    assert r.data.params["cfg.model.policy"] == "embedded:small"
    t = r.data.tags
    assert t[schema.TAG_METHOD] == "dpo" and t[schema.TAG_KIND] == "train"
    assert t[schema.TAG_CONFIG_HASH] == cfg.hash
    assert t[schema.TAG_INVARIANTS_HASH] == cfg.invariants_hash
    assert json.loads(t[schema.TAG_INVARIANTS]) == cfg.invariants()
    assert t[schema.TAG_BASE_MODEL] == "embedded:small"
    assert t[schema.TAG_LABEL] == "dpo-test"
    assert schema.TAG_GIT_COMMIT in t
    hist = client.get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in hist] == [(1, 1.0), (2, 0.5)]
    text = client.download_artifacts(run.run_id, schema.CONFIG_ARTIFACT)
    import yaml

    from rlvf.config import config_from_dict

    assert config_from_dict(yaml.safe_load(Path(text).read_text())).hash == cfg.hash


def test_failure_is_recorded(client):
    from rlvf.tracking.runs import TAG_ERROR, start_run

    cfg = load_config("eval", "small")
    with pytest.raises(UserError), start_run(cfg, "eval") as run:
        raise UserError("pairs file x.jsonl does not exist")
    r = client.get_run(run.run_id)
    assert r.info.status == "FAILED"
    assert r.data.tags[TAG_ERROR] == "pairs file x.jsonl does not exist"

    with pytest.raises(ZeroDivisionError), start_run(cfg, "eval") as run2:
        1 / 0  # noqa: B018
    r2 = client.get_run(run2.run_id)
    assert r2.info.status == "FAILED"
    assert r2.data.tags[TAG_ERROR].startswith("ZeroDivisionError")
    assert "Traceback" in Path(client.download_artifacts(run2.run_id, "error.txt")).read_text()


def test_interrupt_and_sigterm_leave_the_run_killed(client):
    from rlvf.tracking.runs import TAG_ERROR, RunKilled, start_run

    cfg = load_config("eval", "small")
    with pytest.raises(KeyboardInterrupt), start_run(cfg, "eval") as run:
        raise KeyboardInterrupt
    assert client.get_run(run.run_id).info.status == "KILLED"
    assert client.get_run(run.run_id).data.tags[TAG_ERROR] == "interrupted"

    with pytest.raises(RunKilled), start_run(cfg, "eval") as run2:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert client.get_run(run2.run_id).info.status == "KILLED"


def test_attaches_to_mlflow_run_id(client, monkeypatch):
    """`mlflow run` creates the run and exports MLFLOW_RUN_ID: the entry point must log into it."""
    from rlvf.tracking.runs import start_run

    exp = client.get_experiment_by_name("Default").experiment_id
    outer = client.create_run(exp)
    monkeypatch.setenv("MLFLOW_RUN_ID", outer.info.run_id)
    cfg = load_config("eval", "small")
    with start_run(cfg, "eval") as run:
        assert run.run_id == outer.info.run_id
    r = client.get_run(outer.info.run_id)
    assert r.data.tags[schema.TAG_CONFIG_HASH] == cfg.hash
    assert r.info.status == "FINISHED"
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)
    with pytest.raises(UserError, match="no MLflow run '0000"), start_run(cfg, "eval"):
        pass


def test_metrics_are_batched(client, monkeypatch):
    """Buffered metrics go out in a couple of log_batch calls, never one log_metric per value
    (the real client methods run; the wrappers only count)."""
    from mlflow import MlflowClient

    from rlvf.tracking.runs import start_run

    calls = {"log_batch": 0, "log_metric": 0}
    for name in calls:
        real = getattr(MlflowClient, name)

        def counting(self, *a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(MlflowClient, name, counting)
    cfg = load_config("eval", "small")
    with start_run(cfg, "eval") as run:
        before = calls["log_batch"]
        for step in range(300):
            run.metric("train/loss", 1.0 / (step + 1), step=step)
        run.flush()
        assert calls["log_batch"] - before <= 2
    assert calls["log_metric"] == 0
    assert len(client.get_metric_history(run.run_id, "train/loss")) == 300


def test_dataset_input_with_digest_and_lineage(client):
    from rlvf.tracking.inputs import log_dataset
    from rlvf.tracking.runs import start_run

    pairs = [
        Pair("def f():\n", "    return 1\n", "    return 2\n", "t1", 0, 1, "assertion", "embedded:small")
    ]
    cfg = load_config("pairs", "small")
    with start_run(cfg, "pairs") as run:
        digest = log_dataset(
            run,
            pairs,
            name="pairs",
            artifact_path="data/pairs.jsonl",
            lineage={"policy": "embedded:small", "seed": 42},
        )
    r = client.get_run(run.run_id)
    (inp,) = r.inputs.dataset_inputs
    assert inp.dataset.name == "pairs" and inp.dataset.digest == digest
    tags = {t.key: t.value for t in inp.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["rlvf.policy"] == "embedded:small" and tags["rlvf.seed"] == "42"
    assert "data/pairs.jsonl" in json.loads(inp.dataset.source)["uri"]
    local = client.download_artifacts(run.run_id, "data/pairs.jsonl")
    assert Pair.from_dict(json.loads(Path(local).read_text().splitlines()[0])) == pairs[0]


def test_registration_order(client, tmp_path):
    """The version is created after the metrics attach to the logged model, and carries tags + alias."""
    from rlvf.records import EvalResult
    from rlvf.tracking.evallog import log_eval_result
    from rlvf.tracking.models import active_model, log_policy_model, register_policy, registered_model_name
    from rlvf.tracking.runs import start_run

    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    cfg = load_config("dpo", "small")
    name = registered_model_name(cfg["model.policy"])
    assert name == "rlvf-embedded-small"
    result = EvalResult(
        "procedural",
        "p",
        [0, 1],
        1,
        ["a", "b"],
        {"0": [1, 0], "1": [1, 1]},
        {"0": [["passed"], ["assertion"]], "1": [["passed"], ["passed"]]},
    )
    with start_run(cfg, "train") as run:
        model_id = log_policy_model(run, policy)
        with active_model(model_id):
            log_eval_result(run.run_id, result, client=run.client)
        assert not client.search_model_versions(f"name='{name}'")
        version = register_policy(
            run,
            model_id,
            name=name,
            alias="candidate",
            tags={schema.TAG_METHOD: "dpo", schema.TAG_CONFIG_HASH: cfg.hash},
        )
    mv = client.get_model_version_by_alias(name, "candidate")
    assert mv.version == version.version
    assert mv.tags[schema.TAG_CONFIG_HASH] == cfg.hash and mv.run_id == run.run_id
    logged = client.get_logged_model(mv.source.split("/")[-1])
    keys = {m.key for m in logged.metrics}
    assert "eval/procedural/pass_at_1" in keys
    assert client.get_run(run.run_id).data.metrics["eval/procedural/pass_at_1"] == pytest.approx(0.75)


def test_git_commit_is_a_string():
    from rlvf.tracking.runs import git_commit

    assert isinstance(git_commit(), str)
