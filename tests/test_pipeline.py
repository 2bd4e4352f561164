"""The entry points end to end on the small embedded model and a real sqlite store in a temp
dir, read back through MlflowClient: params, tags, metrics, artifacts, the dataset input and
the registered version, and their consistency. Same config_hash -> the same metrics (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stores import sqlite_store

from rlvf.config import load_config
from rlvf.records import Pair, write_jsonl
from rlvf.tracking import schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("pipeline"), eval_cache=True) as root:
        yield root


@pytest.fixture(scope="module")
def client(store):
    from mlflow import MlflowClient

    return MlflowClient()


@pytest.fixture(scope="module")
def hand_pairs(store):
    """Verified pairs that do not depend on the model: canonical (passes) vs a wrong solution."""
    from rlvf.tasks import load_suite

    tasks = [t for t in load_suite("procedural:train") if t.wrong_solutions][:16]
    pairs = [
        Pair(
            t.prompt,
            t.canonical_solution,
            t.wrong_solutions[0].completion,
            t.task_id,
            0,
            1,
            "assertion",
            "hand",
        )
        for t in tasks
    ]
    path = store / "hand_pairs.jsonl"
    write_jsonl(path, pairs)
    return path


def _artifacts(client, run_id, path=""):
    out = []
    for a in client.list_artifacts(run_id, path):
        out.extend(_artifacts(client, run_id, a.path) if a.is_dir else [a.path])
    return out


def _versions(client):
    return {(v.name, v.version) for v in client.search_model_versions()}


@pytest.fixture(scope="module")
def dpo_run(store, hand_pairs):
    from rlvf.pipeline import run_dpo

    cfg = load_config("dpo", "small", [f"data.pairs={hand_pairs}", "tracking.label=dpo-test"])
    return cfg, run_dpo(cfg)


def test_dpo_run_layout(client, dpo_run):
    cfg, res = dpo_run
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED"
    # params: the full config, prefixed
    assert {k for k in r.data.params if k.startswith(schema.PARAM_PREFIX)} == {f"cfg.{k}" for k in cfg.flat()}
    # tags
    t = r.data.tags
    assert t[schema.TAG_METHOD] == "dpo" and t[schema.TAG_KIND] == "train"
    assert t[schema.TAG_CONFIG_HASH] == cfg.hash
    assert t[schema.TAG_BASE_MODEL] == "embedded:small"
    assert t[schema.TAG_BASE_REVISION].startswith("bootstrap-")
    inv = json.loads(t[schema.TAG_INVARIANTS])
    assert inv["base_revision"] == t[schema.TAG_BASE_REVISION] and inv["finetune"] == "full"
    assert t[schema.TAG_LABEL] == "dpo-test"
    # training metrics, with DPO's rewards stepped
    m = r.data.metrics
    for key in (
        "train/loss",
        "train/steps",
        "train/wall_s",
        "train/peak_mem_mb",
        "train/rewards_chosen",
        "train/rewards_rejected",
        "train/rewards_margins",
    ):
        assert key in m, key
    assert m["train/steps"] == cfg["train.max_steps"]
    assert len(client.get_metric_history(res.run_id, "train/loss")) >= 2
    # eval metrics for the trained policy and the base, same settings
    for prefix in ("eval", "base_eval"):
        for name in (
            "pass_at_1",
            "pass_at_1_std",
            "pass_at_1_stderr",
            "n_tasks",
            "seed_0/pass_at_1",
            "seed_1/pass_at_1",
        ):
            assert schema.eval_metric("procedural", name, prefix) in m, (prefix, name)
    assert m["eval/procedural/n_tasks"] == cfg["eval.limit"] == m["base_eval/procedural/n_tasks"]
    assert m["compare/procedural/delta_pass_at_1"] == pytest.approx(
        m["eval/procedural/pass_at_1"] - m["base_eval/procedural/pass_at_1"]
    )
    assert "compare/procedural/delta_stderr_paired" in m
    # artifacts
    arts = set(_artifacts(client, res.run_id))
    for a in (
        "config.yaml",
        "data/pairs.jsonl",
        "eval/procedural/result.json",
        "eval/procedural/samples.jsonl",
        "eval/procedural/outcomes.jsonl",
        "base_eval/procedural/result.json",
    ):
        assert a in arts, a
    result = json.loads(
        Path(client.download_artifacts(res.run_id, "eval/procedural/result.json")).read_text()
    )
    assert sorted(result["correct"]) == ["0", "1"] and len(result["task_ids"]) == cfg["eval.limit"]
    # the dataset input, digest and lineage
    (inp,) = r.inputs.dataset_inputs
    assert inp.dataset.name == "pairs" and inp.dataset.digest
    tags = {x.key: x.value for x in inp.tags}
    assert tags["mlflow.data.context"] == "training" and tags["rlvf.policy"] == "hand"
    assert m["data/pairs"] == 16
    # the model, registered last, with its metrics, tags and alias
    assert res.registered == ("rlvf-embedded-small", res.registered[1])
    mv = client.get_model_version_by_alias("rlvf-embedded-small", "candidate")
    assert mv.run_id == res.run_id and str(mv.version) == res.registered[1]
    assert mv.tags[schema.TAG_CONFIG_HASH] == cfg.hash and mv.tags[schema.TAG_METHOD] == "dpo"
    logged = client.get_logged_model(mv.source.split("/")[-1])
    lm = {x.key: x.value for x in logged.metrics}
    assert lm["eval/procedural/pass_at_1"] == m["eval/procedural/pass_at_1"]
    assert not any(k.startswith("base_eval/") for k in lm)  # the base's numbers stay on the run only
    # and the registered model loads and writes code
    import mlflow

    model = mlflow.pyfunc.load_model("models:/rlvf-embedded-small@candidate")
    out = model.predict(["def add(a: int, b: int) -> int:\n"], params={"max_new_tokens": 8})
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], str)


def test_same_config_hash_same_metrics(client, dpo_run, store):
    """Same config on CPU -> the same metrics, exactly; the base eval comes from the cache."""
    from rlvf.pipeline import run_dpo

    cfg, first = dpo_run
    again = run_dpo(load_config("dpo", "small", [f"data.pairs={cfg['data.pairs']}", "tracking.label=again"]))
    assert again.config_hash == first.config_hash
    a = client.get_run(first.run_id).data.metrics
    b = client.get_run(again.run_id).data.metrics
    keys = [
        k
        for k in a
        if k.startswith(("eval/", "base_eval/", "train/")) and k not in ("train/wall_s", "train/peak_mem_mb")
    ]
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    la = [x.value for x in client.get_metric_history(first.run_id, "train/loss")]
    lb = [x.value for x in client.get_metric_history(again.run_id, "train/loss")]
    assert la == lb
    # a new version, and the alias moved to it
    assert client.get_model_version_by_alias("rlvf-embedded-small", "candidate").run_id == again.run_id
    assert list((store / "evalcache").iterdir())


@pytest.fixture(scope="module")
def sft_run(store):
    """SFT on teacher traces of the 12 training prompts the small recipe samples on, long enough
    that the policy then passes some of its own samples there (the bootstrap alone may not)."""
    from rlvf.evaluate import load_tasks
    from rlvf.pipeline import run_sft

    cfg0 = load_config("pairs", "small")
    tasks = load_tasks(cfg0["data.suite"], cfg0["data.per_cell"], cfg0["data.limit"])
    traces = store / "traces.jsonl"
    write_jsonl(
        traces,
        [{"prompt": t.prompt, "completion": t.canonical_solution, "task_id": t.task_id} for t in tasks],
    )
    cfg = load_config(
        "sft",
        "small",
        [
            "data.sft_source=traces",
            f"data.traces={traces}",
            "train.max_steps=120",
            "train.learning_rate=3e-3",
            "train.lr_scheduler=constant",
            "eval.base=false",
            "registry.alias=sft-candidate",
        ],
    )
    return cfg, run_sft(cfg)


def test_sft_on_traces_then_eval_its_model(client, sft_run):
    from rlvf.pipeline import run_eval

    _, sres = sft_run
    sr = client.get_run(sres.run_id)
    assert sr.info.status == "FINISHED" and sr.data.tags[schema.TAG_METHOD] == "sft"
    assert "data/sft.jsonl" in _artifacts(client, sres.run_id, "data")
    assert sr.data.metrics["data/rows"] == 12 and sr.data.metrics["train/steps"] == 120
    (inp,) = sr.inputs.dataset_inputs
    assert inp.dataset.name == "sft"
    assert client.get_model_version_by_alias("rlvf-embedded-small", "sft-candidate").run_id == sres.run_id

    eres = run_eval(load_config("eval", "small", [f"model.init={sres.run_id}"]))
    er = client.get_run(eres.run_id)
    assert er.data.tags[schema.TAG_KIND] == "eval" and er.data.tags[schema.TAG_METHOD] == "sft"
    assert er.data.tags[schema.TAG_PARENT_RUN] == sres.run_id
    assert json.loads(er.data.tags[schema.TAG_INVARIANTS])["finetune"] == "full"
    assert er.data.tags[schema.TAG_INVARIANTS_HASH] == sr.data.tags[schema.TAG_INVARIANTS_HASH]
    # evaluating the same weights with the same settings gives the numbers the sft run logged
    assert er.data.metrics["eval/procedural/pass_at_1"] == sr.data.metrics["eval/procedural/pass_at_1"]

    base = run_eval(load_config("eval", "small"))
    br = client.get_run(base.run_id)
    assert br.data.tags[schema.TAG_METHOD] == "base" and schema.TAG_PARENT_RUN not in br.data.tags
    assert {"eval/procedural/samples.jsonl", "eval/procedural/outcomes.jsonl"} <= set(
        _artifacts(client, base.run_id)
    )


def test_pairs_from_a_policy_then_dpo_by_run_id(client, sft_run):
    """pairs samples the SFT'd policy on its training prompts; DPO trains that policy on them."""
    from rlvf.pipeline import run_dpo, run_pairs

    _, sres = sft_run
    # Hot, plentiful sampling: the SFT'd policy may have memorised some prompts; pairs need a
    # passing and a failing sample of the same prompt.
    pres = run_pairs(
        load_config(
            "pairs",
            "small",
            [f"model.init={sres.run_id}", "generate.temperature=1.6", "generate.n_samples=12"],
        )
    )
    pr = client.get_run(pres.run_id)
    assert pr.info.status == "FINISHED" and pr.data.tags[schema.TAG_KIND] == "pairs"
    assert pr.data.tags[schema.TAG_PARENT_RUN] == sres.run_id
    assert "data/pairs.jsonl" in _artifacts(client, pres.run_id, "data")
    (inp,) = pr.inputs.dataset_inputs
    lineage = {x.key: x.value for x in inp.tags}
    assert lineage["rlvf.policy"] == f"init:{sres.run_id}" and lineage["rlvf.suite"] == "procedural:train"
    assert lineage["rlvf.seed"] == "42" and "timeout" in lineage["rlvf.verifier"]
    n = int(pr.data.metrics["data/pairs"])
    assert n == pres.n_pairs > 0
    rows = Path(client.download_artifacts(pres.run_id, "data/pairs.jsonl")).read_text().splitlines()
    for p in (Pair.from_dict(json.loads(x)) for x in rows):  # pipeline parity
        assert p.policy == f"init:{sres.run_id}" and p.chosen != p.rejected and p.rejected_category != "pass"

    k = max(1, n // 2)
    dres = run_dpo(
        load_config(
            "dpo",
            "small",
            [
                f"data.pairs={pres.run_id}",
                f"model.init={sres.run_id}",
                f"data.n_pairs={k}",
                "registry.register=false",
            ],
        )
    )
    dr = client.get_run(dres.run_id)
    assert dr.info.status == "FINISHED"
    assert dr.data.tags[schema.TAG_PARENT_RUN] == pres.run_id
    assert json.loads(dr.data.tags[schema.TAG_SCAN_PARAM]) == {"n_pairs": k}
    assert dr.data.metrics["data/pairs"] == k
    assert dres.registered is None and "rlvf.registered_version" not in dr.data.tags


def test_zero_pairs_fails_the_run_and_registers_nothing(client, store):
    """One sample per prompt can never give a pass and a fail for the same prompt."""
    from rlvf.errors import UserError
    from rlvf.pipeline import run_dpo

    before = _versions(client)
    with pytest.raises(UserError, match="0 pairs"):
        run_dpo(load_config("dpo", "small", ["generate.n_samples=1"]))
    (r,) = client.search_runs(
        [client.get_experiment_by_name("Default").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert r.info.status == "FAILED" and "0 pairs" in r.data.tags["rlvf.error"]
    assert _versions(client) == before


def test_bootstrap_run(client, store):
    """The bootstrap entry point records the embedded model (reused here: the fixture built it)."""
    from rlvf.pipeline import run_bootstrap

    res = run_bootstrap(load_config("bootstrap", "small"))
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED"
    assert (
        r.data.tags[schema.TAG_KIND] == "bootstrap" and r.data.tags[schema.TAG_BASE_MODEL] == "embedded:small"
    )
    assert r.data.metrics["bootstrap/parameters"] > 0 and r.data.metrics["train/steps"] > 0
    info = json.loads(Path(client.download_artifacts(res.run_id, "bootstrap.json")).read_text())
    assert r.data.tags[schema.TAG_BASE_REVISION] == f"bootstrap-{info['key']}"
