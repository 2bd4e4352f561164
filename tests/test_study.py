"""The study workflow (`rlvf study` / `mlflow run . -e study`) on embedded:small, read back from
a real sqlite MLflow store: a parent run in a named experiment with the steps' runs nested
under it and named by what they are; a failing step reported while the others finish and
the step that needs it skipped; a rerun that reuses every finished step (no new runs); the
scaling scan's runs trained on nested subsets of one pairs run; and the MLflow entry point,
whose empty options are not logged and whose run in "Default" gives way to the study's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from stores import sqlite_store

from rlvf.tracking import schema

ROOT = Path(__file__).resolve().parents[1]
# A short study: 2 training steps, one eval seed, one sample of 8 tasks, nothing registered.
SHORT = "train.max_steps=2;eval.seeds=[0];eval.n_samples=1;eval.limit=8;registry.register=false"
STEPS = "base,sft,rm,ppo_rm,scan"
BROKEN = "rm:data.pairs=/nonexistent/pairs.jsonl"  # the rm step fails before its run opens


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("study")) as root:
        yield root


def _study(*extra: str):
    from rlvf.cli import main

    args = ["study", "-r", "small", "--runner", "inprocess", "--steps", STEPS, "--scan", "2,4"]
    return CliRunner().invoke(main, [*args, "-s", SHORT, "-s", BROKEN, *extra])


def _runs(client, exp_id):
    return client.search_runs([exp_id], "", max_results=1000)


@pytest.mark.slow
def test_study_nests_names_reports_failures_and_reuses(store):
    from mlflow import MlflowClient

    client = MlflowClient()
    res = _study()
    out = res.output
    assert res.exit_code == 1, out  # a step failed
    assert (
        "error: study step rm failed: data.pairs: pairs file /nonexistent/pairs.jsonl does not exist" in out
    )

    exp = client.get_experiment_by_name("rlvf-study-small")
    assert exp is not None
    runs = _runs(client, exp.experiment_id)
    parents = [r for r in runs if r.data.tags.get(schema.TAG_KIND) == "study"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FAILED" and parent.data.tags["rlvf.study.failed"] == "rm"
    assert parent.data.params["recipe"] == "small"
    children = {
        r.data.tags["rlvf.label"]: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    # every step that could run ran, nested under the parent, named by what it is
    assert set(children) == {"base", "sft", "scan_pairs", "dpo_n2", "dpo_n4"}
    for label, r in children.items():
        assert r.info.status == "FINISHED", label
        cfg_hash = r.data.tags[schema.TAG_CONFIG_HASH]
        assert r.info.run_name.endswith(f"#{cfg_hash[:6]}") and "@small" in r.info.run_name, r.info.run_name
        assert r.data.metrics["time/wall_s"] > 0
    assert children["base"].info.run_name.startswith("eval base ")
    assert children["sft"].info.run_name.startswith("sft ")
    assert children["dpo_n2"].info.run_name.startswith("dpo n_pairs=2 ")
    # the headline: in the description and first among the metrics
    sft = children["sft"]
    mean = sft.data.metrics["eval/procedural/pass_at_1"]
    assert sft.data.metrics["_headline/pass_at_1"] == mean
    assert sorted(sft.data.metrics)[0].startswith("_headline/")
    assert sft.data.tags["mlflow.note.content"].startswith(f"procedural pass@1 {mean:.3f} ± ")
    assert "(± = std over 1 eval seed)" in sft.data.tags["rlvf.headline"]
    # the scan: both sizes from the one pairs run, nested subsets
    pairs_id = children["scan_pairs"].info.run_id
    sets = {}
    for n in (2, 4):
        r = children[f"dpo_n{n}"]
        assert r.data.params["cfg.data.pairs"] == pairs_id and r.data.params["cfg.data.n_pairs"] == str(n)
        local = client.download_artifacts(r.info.run_id, "data/pairs.jsonl", str(store / f"n{n}"))
        sets[n] = {
            json.dumps(json.loads(line), sort_keys=True) for line in Path(local).read_text().splitlines()
        }
        assert len(sets[n]) == n
    assert sets[2] < sets[4]
    # the summary: one row per step, the failure and the skip with their reasons
    local = client.download_artifacts(parent.info.run_id, "study/summary.json", str(store))
    summary = {o["step"]: o for o in json.loads(Path(local).read_text())}
    assert summary["rm"]["status"] == "failed" and "does not exist" in summary["rm"]["reason"]
    assert summary["ppo_rm"]["status"] == "skipped" and "needs rm" in summary["ppo_rm"]["reason"]
    assert "| rm | rm | failed |" in parent.data.tags["mlflow.note.content"]
    assert parent.data.metrics["study/ran"] == 5 and parent.data.metrics["study/failed"] == 1

    # a rerun reuses every finished step: no new step runs, only a new parent
    before = {r.info.run_id for r in runs}
    res2 = _study()
    assert res2.exit_code == 1
    new = [r for r in _runs(client, exp.experiment_id) if r.info.run_id not in before]
    assert [r.data.tags.get(schema.TAG_KIND) for r in new] == ["study"]
    assert new[0].data.metrics["study/reused"] == 5 and new[0].data.metrics["study/ran"] == 0
    assert "Default" not in {r.info.experiment_id for r in new}


@pytest.mark.slow
def test_mlflow_entry_point_runs_a_step_and_drops_empty_options(store):
    """`mlflow run . -e study`: its run in MLflow's Default gives way to the study's parent in
    the named experiment; a step runs as `mlflow run -e eval`, nested, with only real params."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_EXPERIMENT")}  # set_experiment's
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "study", "--env-manager", "local"]
    cmd += ["-P", "recipe=small", "-P", "steps=base", "-P", f"set={SHORT};eval.seeds=[1]"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    client = MlflowClient()
    exp = client.get_experiment_by_name("rlvf-study-small")
    parent = client.search_runs(
        [exp.experiment_id],
        "tags.`rlvf.kind` = 'study' and params.steps = 'base'",
        order_by=["attributes.start_time DESC"],
    )[0]
    assert parent.info.status == "FINISHED"
    (step,) = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert step.data.tags["mlflow.project.entryPoint"] == "eval"
    assert step.info.run_name.startswith("eval base seeds=1 ")
    assert step.data.params["recipe"] == "small" and step.data.params["eval.seeds"] == "1"
    assert "" not in step.data.params.values()  # no empty MLproject options next to the real values
    # the run `mlflow run` made in Default is deleted once it exits
    deadline = time.monotonic() + 60  # a detached process deletes it after `mlflow run` exits
    while True:
        default = client.search_runs(["0"], "", run_view_type=ViewType.ALL)
        if (
            default and all(r.info.lifecycle_stage == "deleted" for r in default)
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert default and all(r.info.lifecycle_stage == "deleted" for r in default)


def test_cost_headline_and_step_selection_without_a_model():
    """The pure parts: cost metrics from the recipe's optional keys, the headline line, the
    steps a subset needs, per-step overrides."""
    from rlvf.config import load_config
    from rlvf.errors import UserError
    from rlvf.pipeline.study import select_steps, split_overrides, study_steps
    from rlvf.tracking.runinfo import cost_metrics, headline

    cfg = load_config("dpo", "small", ["model.device=cpu"])
    metrics, tags = cost_metrics(cfg, 1800.0)
    assert metrics == {"time/wall_s": 1800.0} and tags == {}  # CPU, no GPU type, no price
    priced = load_config("dpo", "small", ["cost.gpu_type=H100", "cost.gpus=2", "cost.usd_per_hour=3.5"])
    assert priced.hash == load_config("dpo", "small").hash  # cost keys never move config_hash
    metrics, tags = cost_metrics(priced, 1800.0)
    assert metrics["cost/gpu_hours"] == 1.0 and metrics["cost/usd"] == 1.75 == metrics["train/cost_usd"]
    assert tags == {"rlvf.gpu_type": "H100"}

    line, head = headline(
        cfg,
        {
            "eval/procedural/pass_at_1": 0.698,
            "eval/procedural/pass_at_1_std": 0.034,
            "base_eval/procedural/pass_at_1": 0.442,
            "compare/procedural/delta_pass_at_1": 0.256,
            "compare/procedural/delta_stderr": 0.048,
        },
    )
    assert line == (
        "procedural pass@1 0.698 ± 0.034 (± = std over 2 eval seeds); "
        "base 0.442, delta +0.256 ± 0.096 (2×SE over tasks)"
    )
    assert head == {"_headline/pass_at_1": 0.698, "_headline/pass_at_1_std": 0.034}

    steps = study_steps((120, 250))
    assert [s.name for s in select_steps(steps, "grpo_sft,ppo_rm")] == ["sft", "rm", "ppo_rm", "grpo_sft"]
    assert [s.name for s in select_steps(steps, "scan")] == ["scan_pairs", "dpo_n120", "dpo_n250"]
    common, per = split_overrides(["seed=7;rm:data.pairs=x", "ppo_rm:ppo.reward=verifier+rm:abc"], steps)
    assert common == ["seed=7"] and per == {"rm": ["data.pairs=x"], "ppo_rm": ["ppo.reward=verifier+rm:abc"]}
    with pytest.raises(UserError, match="unknown step 'nope'"):
        select_steps(steps, "nope")
    with pytest.raises(UserError, match=r"did you mean 'train\.learning_rate'"):
        split_overrides(["trian.learning_rate=1e-4"], steps)
    assert split_overrides(["dpo.beta=0.2"], select_steps(steps, "base")) == (["dpo.beta=0.2"], {})
