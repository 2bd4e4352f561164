"""lm-eval beside the code suites: `rlvf eval` with rlvf's shipped local tasks on embedded:small,
read back from a real sqlite MLflow store (metrics, stderr, version tags, results JSON and
per-sample logs, all on the same run as the code suite), exported to the site; the config's
lm-eval keys in config_hash and the invariants; a hub task offline is one line."""

from __future__ import annotations

import json
import math

import pytest
from stores import sqlite_store

from rlvf.config import load_config
from rlvf.tracking import schema

pytestmark = pytest.mark.slow

LOCAL = "eval.lm_eval.tasks=[rlvf_doctest,rlvf_solution_mc]"
# a few code tasks, one seed, eight documents per lm-eval task: seconds on one core
SMALL = ["eval.seeds=[0]", "eval.limit=4", "eval.n_samples=1", "eval.lm_eval.limit=8"]


def _cli(*args: str):
    from click.testing import CliRunner

    from rlvf.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("lmeval"), eval_cache=True, HF_HUB_OFFLINE="1") as root:
        yield root


@pytest.fixture(scope="module")
def eval_run(store):
    from mlflow import MlflowClient

    sets = [x for s in (LOCAL, *SMALL) for x in ("-s", s)]
    r = _cli("eval", "-r", "small", "--label", "base-lm", *sets)
    assert r.exit_code == 0, r.output
    client = MlflowClient()
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return client, run


def _artifact(client, run_id, path):
    return open(client.download_artifacts(run_id, path), encoding="utf-8").read()


def test_eval_logs_code_suites_and_lm_eval_on_one_run(eval_run):
    client, run = eval_run
    m, tags, rid = run.data.metrics, run.data.tags, run.info.run_id
    assert run.info.status == "FINISHED" and tags[schema.TAG_KIND] == "eval"
    assert "eval/procedural/pass_at_1" in m  # the code suite, same run
    names = {
        "lm_eval/rlvf_doctest/exact_match_strict-match",
        "lm_eval/rlvf_solution_mc/acc",
        "lm_eval/rlvf_solution_mc/acc_norm",
    }
    assert names | {n + "_stderr" for n in names} <= set(m)
    assert m["time/lm_eval_s"] > 0
    # versions as tags, and the same in lm-eval's own results JSON
    raw = json.loads(_artifact(client, rid, "lm_eval/results.json"))
    from importlib.metadata import version

    assert tags["rlvf.lm_eval.version"] == version("lm_eval") == raw["config"]["lm_eval_version"]
    for task in ("rlvf_doctest", "rlvf_solution_mc"):
        assert tags[f"rlvf.lm_eval.task_version.{task}"] == str(raw["versions"][task]) == "1.0"
        assert raw["n-samples"][task]["effective"] == 8
    assert raw["config"]["limit"] == 8 and raw["config"]["tasks"] == ["rlvf_doctest", "rlvf_solution_mc"]
    # per-sample logs: the logged metric and its stderr are what the samples say
    rows = [json.loads(x) for x in _artifact(client, rid, "lm_eval/samples/rlvf_doctest.jsonl").splitlines()]
    assert len(rows) == 8 and all(r["doc"]["target"] == r["target"] for r in rows)
    hits = [float(r["exact_match"]) for r in rows]
    for r in rows:  # strict: exactly the target string, nothing stripped but the stop sequence
        assert r["exact_match"] == float(r["filtered_resps"][0] == r["target"])
    p = sum(hits) / len(hits)
    assert m["lm_eval/rlvf_doctest/exact_match_strict-match"] == pytest.approx(p)
    se = math.sqrt(sum((h - p) ** 2 for h in hits) / (len(hits) - 1) / len(hits))
    assert m["lm_eval/rlvf_doctest/exact_match_strict-match_stderr"] == pytest.approx(se)
    mc = [
        json.loads(x) for x in _artifact(client, rid, "lm_eval/samples/rlvf_solution_mc.jsonl").splitlines()
    ]
    assert len(mc) == 8 and all(len(r["resps"]) == len(r["doc"]["choices"]) >= 2 for r in mc)
    assert m["lm_eval/rlvf_solution_mc/acc"] == pytest.approx(sum(r["acc"] for r in mc) / 8)
    # the settings are config: in the params, the hash and the invariants
    assert json.loads(run.data.params["cfg.eval.lm_eval.tasks"]) == ["rlvf_doctest", "rlvf_solution_mc"]
    inv = json.loads(tags[schema.TAG_INVARIANTS])
    assert inv["lm_eval_tasks"] == ["rlvf_doctest", "rlvf_solution_mc"] and inv["lm_eval_limit"] == 8


def test_site_shows_the_lm_eval_columns_of_a_real_run(eval_run, store):
    _, run = eval_run
    site = store / "site"
    r = _cli("export", "--run", run.info.run_id, "--registry", str(store / "registry"), "--site", str(site))
    assert r.exit_code == 0, r.output
    results = (site / "report" / "results.md").read_text()
    # the header may wrap after / and _ (<wbr>): long lm-eval names fit a laptop's width
    header = next(line for line in results.splitlines() if line.startswith("| Run |")).replace("<wbr>", "")
    assert "rlvf\\_doctest/exact\\_match\\_strict-match" in header and "rlvf\\_solution\\_mc/acc" in header
    row = next(line for line in results.splitlines() if line.startswith("| base-lm |"))
    acc = run.data.metrics["lm_eval/rlvf_solution_mc/acc"]
    se = run.data.metrics["lm_eval/rlvf_solution_mc/acc_stderr"]
    assert f"| {acc:.4g} ± {se:.2g} |" in row
    rec = json.loads((store / "registry" / "runs" / f"{run.info.run_id}.json").read_text())
    assert rec["lm_eval_versions"] == {"rlvf_doctest": "1.0", "rlvf_solution_mc": "1.0"}


def test_lm_eval_settings_are_hashed_and_invariant():
    cfg = load_config("eval", "small", [LOCAL])
    assert cfg.invariants()["lm_eval_tasks"] == ["rlvf_doctest", "rlvf_solution_mc"]
    for key, value in (("limit", 3), ("num_fewshot", 2), ("seed", 7), ("tasks", "[rlvf_doctest]")):
        other = cfg.replace([f"eval.lm_eval.{key}={value}"])
        assert other.hash != cfg.hash and other.invariants_hash != cfg.invariants_hash, key
    batch = cfg.replace(["eval.lm_eval.batch_size=3"])  # can move a last digit: hashed, not invariant
    assert batch.hash != cfg.hash and batch.invariants_hash == cfg.invariants_hash
    dpo = load_config("dpo", None)  # the embedded default runs the local tasks after training
    assert dpo["eval.lm_eval.tasks"] == ["rlvf_doctest", "rlvf_solution_mc"]


@pytest.mark.parametrize(
    "task, message",
    [
        # found by rlvf's scan of lm-eval's task files, before lm-eval's minutes-long index
        ("gsm8k", "the data of gsm8k cannot be loaded (HF_HUB_OFFLINE is set; dataset 'openai/gsm8k' is not"),
        ("no_such_task", "no_such_task is no task in lm-eval's task files (a group, a tag or unknown)"),
    ],
)
def test_unreachable_or_unknown_task_is_one_line_and_no_run(store, task, message):
    from mlflow import MlflowClient

    client = MlflowClient()
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    r = _cli("eval", "-r", "small", "-s", f"eval.lm_eval.tasks=[{task}]")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert message in r.output and "rlvf_doctest" in r.output
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == before
