"""A small study in a real sqlite MLflow store, for the report tests.

Runs are written exactly as producers write them: native runs through
`rlvf.tracking.evallog.log_eval_result` with the schema's tags, and imported runs through
the real `rlvf import-results` command. The pass vectors are chosen so the expected
head-to-head lists and verdicts are known in advance (see EXPECT).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from click.testing import CliRunner

from rlvf.records import EvalResult
from rlvf.tracking import schema
from rlvf.tracking.evallog import log_eval_result

N = 30  # tasks per humaneval-like suite
SEEDS = [0, 1, 2]
TASKS = [f"HumanEval/{i}" for i in range(N)]
BASE = set(range(15))  # tiny base passes 0..14 in every seed
DPO = (BASE - {3}) | set(range(15, 25))  # +10 improved, -1 regressed: significant
SFT = (BASE - {0}) | {15}  # +1/-1: not significant
OTHER_BASE = set(range(20))
SCAN = {100: set(range(22)), 200: set(range(20)), 400: set(range(10))}  # more pairs, worse

EXPECT = {
    "dpo_improved": [f"HumanEval/{i}" for i in range(15, 25)],
    "dpo_regressed": ["HumanEval/3"],
    "sft_improved": ["HumanEval/15"],
    "sft_regressed": ["HumanEval/0"],
}

TINY_INV = {"base_model": "tiny", "eval": "greedy", "suite_set": "humaneval+procedural"}
SAMPLED_INV = {"base_model": "tiny", "eval": "sampled", "suite_set": "humaneval"}  # no base run: base_eval/
PROC_TYPES = ["rpn", "fizzbuzz", "two_sum"]
PROC_DIFFS = [1, 3, 5, 7]


def humaneval_result(
    passing: set[int], *, flaky: dict[int, set[int]] | None = None, policy: str = "p"
) -> EvalResult:
    """Same pass set every seed, except `flaky[seed]` tasks flip in that seed."""
    correct, cats, flags = {}, {}, {}
    for s in SEEDS:
        ps = set(passing) ^ (flaky or {}).get(s, set())
        correct[str(s)] = [int(i in ps) for i in range(N)]
        cats[str(s)] = [
            ["pass"] if i in ps else (["name_error"] if i % 2 else ["assertion_error"]) for i in range(N)
        ]
        flags[str(s)] = [[""] if i in ps or i % 3 else ["self_test+test_file"] for i in range(N)]
    return EvalResult(
        suite="humaneval",
        policy=policy,
        seeds=list(SEEDS),
        n_samples=1,
        task_ids=list(TASKS),
        correct=correct,
        categories=cats,
        flags=flags,
        partial={str(s): [float(c) for c in correct[str(s)]] for s in SEEDS},
    )


def procedural_result(skill: float) -> EvalResult:
    """3 types x 4 difficulties, 2 samples each; harder = fewer passes; higher skill = more."""
    tids, meta = [], {}
    for t in PROC_TYPES:
        for d in PROC_DIFFS:
            tid = f"procedural/{t}/d{d}"
            tids.append(tid)
            meta[tid] = {"type": t, "difficulty": d, "entry_point": t}
    correct = {}
    for s in SEEDS:
        correct[str(s)] = [
            max(0, min(2, round(2 * (skill - 0.1 * d) + (s == 1) * 0.4)))
            for t in PROC_TYPES
            for d in PROC_DIFFS
        ]
    cats = {str(s): [["pass"] * c + ["timeout"] * (2 - c) for c in correct[str(s)]] for s in SEEDS}
    return EvalResult(
        suite="procedural",
        policy="p",
        seeds=list(SEEDS),
        n_samples=2,
        task_ids=tids,
        correct=correct,
        categories=cats,
        task_meta=meta,
    )


_TEMPLATE: list[Path] = []


def make_store(root: Path):
    """A fresh sqlite store in `root`: a copy of one migrated empty database per process
    (MLflow's schema migrations cost seconds; the copy costs nothing)."""
    from mlflow import MlflowClient

    if not _TEMPLATE:
        tmp = Path(tempfile.mkdtemp(prefix="rlvf-mlflow-template-"))
        atexit.register(shutil.rmtree, tmp, True)
        MlflowClient(f"sqlite:///{tmp}/mlflow.db").search_experiments()
        _TEMPLATE.append(tmp / "mlflow.db")
    shutil.copy(_TEMPLATE[0], root / "mlflow.db")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("study", artifact_location=(root / "artifacts").as_uri())
    return uri, client, exp


def log_native(
    client,
    exp,
    name,
    method,
    *,
    kind="train",
    inv=TINY_INV,
    evals=(),
    base_evals=(),
    tags=None,
    loss=None,
    train=None,
    register=None,
    lm=None,
    lm_versions=None,
    samples=False,
    params=None,
    curves=None,
    rollouts=None,
) -> str:
    from mlflow.entities import Metric, Param

    from rlvf.config import short_hash

    all_tags = {
        schema.TAG_METHOD: method,
        schema.TAG_KIND: kind,
        schema.TAG_BASE_MODEL: inv["base_model"],
        schema.TAG_CONFIG_HASH: short_hash({"m": method, "n": name}),
        schema.TAG_INVARIANTS_HASH: short_hash(inv),
        schema.TAG_INVARIANTS: json.dumps(inv, sort_keys=True),
        schema.TAG_LABEL: name,
    }
    all_tags.update(tags or {})
    if lm:  # as `rlvf.pipeline.finish.log_lm_eval` tags them
        all_tags[schema.lm_eval_tag(schema.LM_EVAL_PREFIX, "version")] = "0.4.13"
    for task, version in (lm_versions or {}).items():
        all_tags[schema.lm_eval_tag(schema.LM_EVAL_PREFIX, f"task_version.{task}")] = version
    run = client.create_run(exp, run_name=name, tags=all_tags)
    rid = run.info.run_id
    extra = [Param(f"cfg.{k}", v) for k, v in (params or {}).items()]
    client.log_batch(
        rid, params=[Param("cfg.method", method), Param("cfg.train.learning_rate", "5e-05"), *extra]
    )
    for ev in evals:
        log_eval_result(rid, ev, client=client)
        if samples:
            log_samples(client, rid, ev, name)
    for ev in base_evals:
        log_eval_result(rid, ev, schema.BASE_EVAL_PREFIX, client=client)
    metrics = [Metric("train/loss", v, 0, i) for i, v in enumerate(loss or [])]
    metrics += [Metric(f"train/{k}", v, 0, 0) for k, v in (train or {}).items()]
    metrics += [Metric(k, v, 0, i) for k, vs in (curves or {}).items() for i, v in enumerate(vs)]
    for k, (v, se) in (lm or {}).items():
        metrics += [Metric(f"lm_eval/{k}", v, 0, 0), Metric(f"lm_eval/{k}_stderr", se, 0, 0)]
    if metrics:
        client.log_batch(rid, metrics=metrics)
    if rollouts:
        text = "".join(json.dumps(r) + "\n" for r in rollouts)
        client.log_text(rid, text, "rollouts/step_000000-000003.jsonl")
    client.set_terminated(rid)
    if register:
        model, alias = register
        try:
            client.create_registered_model(model)
        except Exception:
            pass
        mv = client.create_model_version(
            model, source=f"runs:/{rid}/model", run_id=rid, tags={"method": method}
        )
        if alias:
            client.set_registered_model_alias(model, alias, mv.version)
    return rid


def log_samples(client, rid: str, ev: EvalResult, name: str) -> None:
    """The eval's samples and outcomes artifacts (`rlvf.pipeline.finish.log_suite_evals`'s layout):
    each completion names its run, task, seed and sample, so tests can tell them apart."""
    from rlvf.tracking import schema as sc

    samples, outcomes = [], []
    for seed in ev.seeds:
        for i, tid in enumerate(ev.task_ids):
            for k in range(ev.n_samples):
                cat = ev.categories[str(seed)][i][k]
                samples.append(
                    {
                        "task_id": tid,
                        "index": k,
                        "seed": seed,
                        "completion": f"def f():  # {name} {tid} s{seed} k{k}\n    return {i}\n",
                    }
                )
                outcomes.append(
                    {
                        "task_id": tid,
                        "index": k,
                        "seed": seed,
                        "passed": cat == "pass",
                        "category": cat,
                        "tests_passed": 3 if cat == "pass" else 1,
                        "tests_total": 3,
                        "flags": [],
                    }
                )
    base = f"eval/{sc.suite_key(ev.suite)}"
    client.log_text(rid, "".join(json.dumps(x) + "\n" for x in samples), f"{base}/{sc.SAMPLES_ARTIFACT}")
    client.log_text(rid, "".join(json.dumps(x) + "\n" for x in outcomes), f"{base}/{sc.OUTCOMES_ARTIFACT}")


#: the GRPO run's rollouts: tampering grows over its 4 steps (0, 1, 2, 3 of 4 rollouts per step)
ROLLOUTS = [
    {
        "step": step,
        "task_id": f"HumanEval/{j}",
        "prompt": "p",
        "completion": f"import sys\nsys.exit(0)  # step {step} task {j}"
        if j < step
        else f"def f():\n    return {j}  # step {step}",
        "reward": 1.0 if j < step else 0.5,
        "category": "tampering" if j < step else ("pass" if j % 2 else "assertion_error"),
        "flags": ["test_file"] if j < step else [],
        "tests_passed": 0,
        "tests_total": 3,
    }
    for step in range(4)
    for j in range(4)
]


def write_humaneval_results(path: Path, passing: set[int]) -> Path:
    with path.open("w") as fh:
        for i in range(N):
            ok = i in passing
            result = "passed" if ok else ("failed: name 'math' is not defined" if i % 2 else "failed: ")
            fh.write(
                json.dumps(
                    {
                        "task_id": f"HumanEval/{i}",
                        "completion": "    return 1\n",
                        "passed": ok,
                        "result": result,
                    }
                )
                + "\n"
            )
    return path


def cli(*args: str):
    from rlvf.cli import main

    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res


def build_study(root: Path) -> dict:
    """Create the store and all runs; returns {"uri", "client", name: run_id, ...}."""
    uri, client, exp = make_store(root)
    ids: dict = {"uri": uri, "client": client}
    ids["base"] = log_native(
        client,
        exp,
        "base",
        "base",
        kind="eval",
        evals=[humaneval_result(BASE), procedural_result(0.6)],
        lm={"mmlu/acc": (0.48, 0.004), "gsm8k/exact_match_strict-match": (0.30, 0.01)},
        lm_versions={"mmlu": "1.0", "gsm8k": "3.0"},
        samples=True,
    )
    ids["sft"] = log_native(
        client,
        exp,
        "sft",
        "sft",
        evals=[humaneval_result(SFT, flaky={1: {5}}), procedural_result(0.7)],
        tags={schema.TAG_PARENT_RUN: ids["base"], "rlvf.gpu_type": "H100"},
        loss=[2.0, 1.4, 0.9, 0.7, 0.5],
        train={"steps": 40, "wall_s": 900, "peak_mem_mb": 8192},
        # what it cost, as rlvf.tracking.runinfo logs it when the recipe names a GPU and a price
        curves={"cost/gpu_hours": [0.25], "cost/usd": [0.75]},
        register=("tiny-sft", None),
        # gsm8k's task version changed under it: its (much lower) number is not compared
        lm={"mmlu/acc": (0.47, 0.004), "gsm8k/exact_match_strict-match": (0.10, 0.01)},
        lm_versions={"mmlu": "1.0", "gsm8k": "2.0"},
    )
    ids["dpo"] = log_native(
        client,
        exp,
        "dpo",
        "dpo",
        evals=[humaneval_result(DPO)],
        loss=[0.69, 0.6, 0.5, 0.45],
        train={"steps": 30, "wall_s": 600},
        register=("tiny-dpo", "champion"),
        samples=True,
        params={
            "model.init": ids["sft"]
        },  # trained on top of sft: the summary's phases are sft − base, dpo − sft
        # a significant pass@1 gain bought with 8 points of MMLU: a forgetting regression
        lm={"mmlu/acc": (0.40, 0.004)},
        lm_versions={"mmlu": "1.0"},
    )
    ids["grpo"] = log_native(
        client,
        exp,
        "grpo",
        "grpo",
        evals=[humaneval_result(BASE)],
        loss=[0.1, 0.3, 5.0, 18.2],
        tags={schema.TAG_HEALTH: "reward_hacking"},
        register=("tiny-grpo", None),
        curves={
            "train/reward_mean": [0.2, 0.4, 0.7, 0.9],
            "train/kl": [0.0, 0.02, 0.05, 0.2],
            "train/entropy": [1.2, 1.0, 0.6, 0.2],
            "train/clip_ratio_region_mean": [0.0, 0.01, 0.03, 0.05],
            "train/verifier_tampering_rate": [0.0, 0.25, 0.5, 0.75],
            "train/verifier_timeout_rate": [0.1, 0.0, 0.0, 0.0],
        },
        rollouts=ROLLOUTS,
    )
    for name, method in (("kto", "kto"), ("orpo", "orpo")):  # baseline: the base_eval they recorded
        ids[name] = log_native(
            client,
            exp,
            name,
            method,
            inv=SAMPLED_INV,
            evals=[humaneval_result(DPO)],
            base_evals=[humaneval_result(BASE)],
            register=(f"tiny-{name}", None),
        )
    ids["pairs"] = log_native(client, exp, "pairs", "pairs", kind="pairs")  # no results: never exported

    # import-results creates missing experiments under MLflow's default artifact root (./mlruns
    # in the working directory): the tests make theirs first, with artifacts in the temp dir
    for name in ("legacy", "seed001"):
        client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
    files = root / "imported"
    files.mkdir()
    common = ["--base-model", "other-model", "--tracking-uri", uri, "--experiment", "legacy"]
    paths = [write_humaneval_results(files / f"base_s{s}_results.jsonl", OTHER_BASE) for s in SEEDS]
    r = cli("import-results", *map(str, paths), "--method", "base", "--label", "other-base", *common)
    assert r.exit_code == 0, r.output
    ids["other_base"] = r.output.split(" as run ")[1].split()[0]
    (files / "dpo100.json").write_text(json.dumps({f"HumanEval/{i}": i in SCAN[100] for i in range(N)}))
    (files / "dpo200.csv").write_text(
        "task_id,passed\n" + "".join(f"HumanEval/{i},{int(i in SCAN[200])}\n" for i in range(N))
    )
    write_humaneval_results(files / "dpo400_results.jsonl", SCAN[400])
    for n, f in ((100, "dpo100.json"), (200, "dpo200.csv"), (400, "dpo400_results.jsonl")):
        r = cli(
            "import-results",
            str(files / f),
            "--method",
            "dpo",
            "--param",
            f"n_pairs={n}",
            "--seed",
            "7",
            "--train",
            "loss=0.9",
            "--train",
            "steps=32",
            "--train",
            "wall_s=1380",
            *common,
        )
        assert r.exit_code == 0, r.output
        ids[f"scan{n}"] = r.output.split(" as run ")[1].split()[0]
    return ids
