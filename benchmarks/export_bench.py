"""Export time vs number of runs: 200 runs x 164 tasks x 3 seeds in a real sqlite store.

    python benchmarks/export_bench.py [--runs 200] [--tasks 164] [--seeds 3] [--out DIR]

Writes the runs as producers do (`rlvf.tracking.evallog.log_eval_result`, schema tags, a
`train/loss` history, registered model versions), 50 runs per experiment, each experiment
one invariants group with its own base run. Then times `rlvf.report.export.export` on the
first 50, 100, 200 runs (selected by experiment) and `export --from-registry` on all, and
checks that a second export changes no byte. Goal: under 10 s for 200 runs, linear growth.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rlvf.config import short_hash
from rlvf.records import EvalResult
from rlvf.tracking import schema
from rlvf.tracking.evallog import log_eval_result

PER_EXPERIMENT = 50
METHODS = ("sft", "dpo", "grpo", "ppo")
CATS = ("assertion_error", "name_error", "type_error", "timeout")


def make_result(rng: random.Random, n_tasks: int, seeds: list[int], skill: float) -> EvalResult:
    task_ids = [f"HumanEval/{i}" for i in range(n_tasks)]
    difficulty = [rng.random() for _ in task_ids]
    correct, cats, flags = {}, {}, {}
    for s in seeds:
        c = [int(rng.random() < min(1.0, skill + 0.5 - d)) for d in difficulty]
        correct[str(s)] = c
        cats[str(s)] = [["pass"] if ok else [rng.choice(CATS)] for ok in c]
        flags[str(s)] = [[""] if ok or rng.random() < 0.7 else ["test_file"] for ok in c]
    return EvalResult(
        suite="humaneval",
        policy="bench",
        seeds=seeds,
        n_samples=1,
        task_ids=task_ids,
        correct=correct,
        categories=cats,
        flags=flags,
    )


def populate(client, n_runs: int, n_tasks: int, n_seeds: int, root: Path) -> list[str]:
    from mlflow.entities import Metric, Param

    rng = random.Random(0)
    seeds = list(range(n_seeds))
    exp_names = []
    for g in range((n_runs + PER_EXPERIMENT - 1) // PER_EXPERIMENT):
        name = f"bench-{g}"
        exp = client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
        exp_names.append(name)
        inv = {"base_model": f"model-{g}", "eval": "greedy"}
        client.create_registered_model(f"bench-{g}")
        for i in range(min(PER_EXPERIMENT, n_runs - g * PER_EXPERIMENT)):
            method = "base" if i == 0 else METHODS[i % len(METHODS)]
            label = f"{method}-{g}-{i}"
            tags = {
                schema.TAG_METHOD: method,
                schema.TAG_KIND: "eval" if method == "base" else "train",
                schema.TAG_BASE_MODEL: inv["base_model"],
                schema.TAG_CONFIG_HASH: short_hash([g, i]),
                schema.TAG_INVARIANTS_HASH: short_hash(inv),
                schema.TAG_INVARIANTS: json.dumps(inv, sort_keys=True),
                schema.TAG_LABEL: label,
            }
            if method == "dpo":
                tags[schema.TAG_SCAN_PARAM] = json.dumps({"n_pairs": 100 * i})
            rid = client.create_run(exp, run_name=label, tags=tags).info.run_id
            client.log_batch(rid, params=[Param("cfg.method", method), Param("cfg.seed", str(i))])
            log_eval_result(rid, make_result(rng, n_tasks, seeds, 0.5 + 0.2 * rng.random()), client=client)
            if method != "base":
                loss = [Metric("train/loss", 2.0 / (1 + s) + 0.05 * rng.random(), 0, s) for s in range(50)]
                loss += [Metric("train/steps", 50, 0, 0), Metric("train/wall_s", 600 + i, 0, 0)]
                client.log_batch(rid, metrics=loss)
                client.create_model_version(f"bench-{g}", source=f"runs:/{rid}/model", run_id=rid)
            client.set_terminated(rid)
    return exp_names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--tasks", type=int, default=164)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the store and outputs here (default: a temp dir); an existing store there is reused",
    )
    args = ap.parse_args(argv)

    from mlflow import MlflowClient

    from rlvf.report.collect import Selection
    from rlvf.report.export import export, rebuild

    root = args.out or Path(tempfile.mkdtemp(prefix="rlvf-export-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    reuse = (root / "mlflow.db").exists()
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    t0 = time.perf_counter()
    if reuse:  # a store left by an earlier --out run: time the export only
        exps = sorted(
            (e.name for e in client.search_experiments() if e.name.startswith("bench-")),
            key=lambda n: int(n.split("-")[1]),
        )
        print(f"reusing the store in {root} ({len(exps)} experiments)")
    else:
        exps = populate(client, args.runs, args.tasks, args.seeds, root)
        print(
            f"populated {args.runs} runs x {args.tasks} tasks x {args.seeds} seeds in {time.perf_counter() - t0:.1f} s"
        )

    sizes = sorted({min(args.runs, n) for n in (50, 100, 200, args.runs)})
    t = time.perf_counter()
    export(client, Selection(experiments=exps[:1]), root / "warmup" / "registry", root / "warmup" / "site")
    print(
        f"cold start (imports, first {min(PER_EXPERIMENT, args.runs)} runs): {time.perf_counter() - t:.2f} s"
    )
    rows = []
    for n in sizes:
        k = (n + PER_EXPERIMENT - 1) // PER_EXPERIMENT
        out = root / f"out-{n}"
        t, c = time.perf_counter(), time.process_time()
        res = export(client, Selection(experiments=exps[:k]), out / "registry", out / "site")
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        rows.append((res["runs"], dt))
        print(
            f"export {res['runs']:4d} runs: {dt:6.2f} s wall, {cpu:6.2f} s CPU ({1000 * dt / res['runs']:.1f} ms/run, "
            f"{res['pages']} pages, {res['plots']} plots)"
        )
    last = root / f"out-{sizes[-1]}"
    before = {p: p.read_bytes() for p in sorted(last.rglob("*")) if p.is_file()}
    t = time.perf_counter()
    export(client, Selection(experiments=exps), last / "registry", last / "site")
    again = time.perf_counter() - t
    after = {p: p.read_bytes() for p in sorted(last.rglob("*")) if p.is_file()}
    print(f"re-export {rows[-1][0]} runs: {again:.2f} s, byte-identical: {before == after}")
    t = time.perf_counter()
    rebuild(last / "registry", root / "rebuilt-site")
    print(f"site from registry alone ({rows[-1][0]} runs): {time.perf_counter() - t:.2f} s")
    size = sum(p.stat().st_size for p in (last / "registry").rglob("*") if p.is_file())
    print(f"registry size: {size / 1e6:.1f} MB")
    if len(rows) > 1:
        (n0, t0_), (n1, t1_) = rows[0], rows[-1]
        print(f"growth {n0}->{n1} runs: x{t1_ / t0_:.2f} time for x{n1 / n0:.1f} runs")
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    ok = before == after and rows[-1][1] < 10.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
