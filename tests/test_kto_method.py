"""KTO as a registered method: its data builder labels exactly the verified samples as
desirable (checked against the sandbox's verdicts on real samples), the class-balance
weights stay inside the KTO paper's range, a run on embedded:small reads back from a real
sqlite MLflow store (config, data, weights, metrics, eval, a registered version), and a
batch size of 1 is refused in one line before a run opens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stores import seed_store, sqlite_store

from rlvf.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("kto_method")) as root:
        yield root


@pytest.fixture(scope="module")
def client(store):
    from mlflow import MlflowClient

    return MlflowClient()


def _real_verified(cfg):
    """The base policy's own samples on the small recipe's prompts (the path KTO's data takes),
    plus each task's reference and first wrong solution as further samples, all judged by the
    sandbox: both verdicts are present whatever the tiny model manages."""
    from rlvf.pipeline.sampling import training_tasks, verified_samples
    from rlvf.records import Sample
    from rlvf.verify import verify_samples

    tasks = training_tasks(cfg)
    samples, outcomes = verified_samples(cfg, None, tasks, "base")
    extra = []
    for t in tasks[:4]:
        extra.append(Sample(task_id=t.task_id, index=100, completion=t.canonical_solution, policy="base"))
        if t.wrong_solutions:
            extra.append(
                Sample(
                    task_id=t.task_id, index=101, completion=t.wrong_solutions[0].completion, policy="base"
                )
            )
    judged = verify_samples(tasks, extra, timeout=cfg["verify.timeout"], progress=False)
    return tasks, [*samples, *extra], [*outcomes, *judged]


def test_kto_rows_label_exactly_the_verified_samples_as_desirable(tiny_policy):
    from rlvf.datasets.unpaired import unpaired_from_samples

    cfg = load_config("kto", "small")
    tasks, samples, outcomes = _real_verified(cfg)
    verdict = {(o.task_id, o.index): o.passed for o in outcomes}
    assert any(verdict.values()) and not all(verdict.values())  # the sandbox said both
    # without filters every sample is a row, desirable exactly when it passed
    rows, stats = unpaired_from_samples(tasks, samples, outcomes, dedupe=False)
    assert len(rows) == len(samples)
    assert {(r["task_id"], r["index"]) for r in rows if r["label"]} == {k for k, v in verdict.items() if v}
    assert {(r["task_id"], r["index"]) for r in rows if not r["label"]} == {
        k for k, v in verdict.items() if not v
    }
    assert stats["desirable"] == sum(verdict.values())
    # with the recipe's filters (dedupe): fewer rows, each still labelled by its own verdict
    kept, kept_stats = unpaired_from_samples(tasks, samples, outcomes, seed=cfg["seed"])
    assert all(r["label"] == verdict[(r["task_id"], r["index"])] for r in kept)
    assert kept_stats["desirable"] == sum(r["label"] for r in kept)
    assert len(kept) == len(samples) - kept_stats["dropped_duplicate"] - kept_stats["dropped_conflict"]
    by_key = {(s.task_id, s.index): s.completion for s in samples}
    assert all(r["completion"] == by_key[(r["task_id"], r["index"])] for r in kept)
    # seeded order, mixed across prompts (TRL's in-batch KL estimate needs neighbours of other prompts)
    again, _ = unpaired_from_samples(tasks, samples, outcomes, seed=cfg["seed"])
    assert again == kept
    assert [r["task_id"] for r in kept] != sorted(r["task_id"] for r in kept)


@pytest.mark.parametrize("n_d,n_u", [(2, 43), (43, 2), (10, 10), (12, 10), (1, 1000)])
def test_class_balance_weights_stay_in_the_papers_range(n_d, n_u):
    from rlvf.datasets.unpaired import kto_weights

    w_d, w_u = kto_weights(n_d, n_u, 1.15)
    assert min(w_d, w_u) == 1.0
    assert (w_d * n_d) / (w_u * n_u) == pytest.approx(1.15)


def test_one_class_only_is_a_user_error():
    from rlvf.datasets.unpaired import kto_weights
    from rlvf.errors import UserError

    with pytest.raises(UserError, match="KTO needs both"):
        kto_weights(0, 12)
    with pytest.raises(UserError, match="KTO needs both"):
        kto_weights(12, 0)


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_kto_run_reads_back_from_the_store(client, store):
    from rlvf.pipeline.lifecycle import STAGES
    from rlvf.records import read_jsonl

    cfg = load_config("kto", "small", ["tracking.label=kto-test"])
    res = STAGES["kto"](cfg)
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.tags["rlvf.method"] == "kto"
    for key in cfg.flat():
        if key.startswith("kto."):
            assert f"cfg.{key}" in r.data.params, key
    # the data: the logged rows, their class counts and the weights they set
    local = client.download_artifacts(r.info.run_id, "data/kto.jsonl", str(store / "down"))
    rows = [obj for _, obj in read_jsonl(local)]
    n_d = sum(row["label"] for row in rows)
    assert r.data.metrics["data/desirable"] == n_d and r.data.metrics["data/undesirable"] == len(rows) - n_d
    assert res.n_examples == len(rows)
    m = r.data.metrics
    assert m["kto/desirable_ratio"] == pytest.approx(n_d / (len(rows) - n_d))
    assert m["kto/weighted_ratio"] == pytest.approx(cfg["kto.weight_ratio"])
    assert float(r.data.params["kto.desirable_weight"]) == pytest.approx(m["kto/desirable_weight"], rel=1e-5)
    assert float(r.data.params["kto.undesirable_weight"]) == pytest.approx(
        m["kto/undesirable_weight"], rel=1e-5
    )
    # training curves: TRL's KTO loss and KL estimate per step
    loss = _history(client, r.info.run_id, "train/loss")
    assert [s for s, _ in loss] == list(range(1, cfg["train.max_steps"] + 1))
    assert _history(client, r.info.run_id, "train/kl")
    # the lifecycle: an eval over the recipe's seeds, the comparison with the base, a version
    for seed in cfg["eval.seeds"]:
        assert f"eval/procedural/seed_{seed}/pass_at_1" in m
    assert "base_eval/procedural/pass_at_1" in m and "compare/procedural/delta_pass_at_1" in m
    mv = client.get_model_version(
        r.data.tags["rlvf.registered_model"], r.data.tags["rlvf.registered_version"]
    )
    assert mv.run_id == r.info.run_id
    assert json.loads(json.dumps(res.registered)) is not None


def test_batch_size_one_is_refused_in_one_line(tmp_path, tiny_policy):
    env = {**os.environ, "MLFLOW_TRACKING_URI": seed_store(tmp_path / "mlflow.db"), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run(
        [sys.executable, "-m", "rlvf.pipeline", "kto", "--recipe", "small", "--set", "train.batch_size=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: kto: train.batch_size must be at least 2"), (
        proc.stderr
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    # refused before a run opened: the store holds no run
    from mlflow import MlflowClient

    if (tmp_path / "mlflow.db").exists():
        c = MlflowClient(seed_store(tmp_path / "mlflow.db"))
        assert not c.search_runs([e.experiment_id for e in c.search_experiments()])
