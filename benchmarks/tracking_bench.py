"""How much rlvf's MLflow logging costs during training.

Trains DPO on the same pairs with the same seed, alternately with rlvf's tracking (an open
run, the TrackingCallback logging every step, batched into a sqlite store, flushed at the
end) and without any (the same callback with no run), and compares the time spent inside
`trainer.train()`. Goal: overhead under 2% of training time. Also times 1,000 metrics sent
one `log_metric` call at a time against one `log_batch`, the reason rlvf batches.

    python benchmarks/tracking_bench.py                  # embedded:small, 60 steps, 3 rounds
    python benchmarks/tracking_bench.py --policy embedded --steps 40 --rounds 5

Pairs are the procedural training tasks' canonical (chosen) and wrong (rejected) solutions,
so the benchmark needs no sampling. Prints a table and writes JSON with --json PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def hand_pairs(n: int):
    from rlvf.records import Pair
    from rlvf.tasks import load_suite

    tasks = [t for t in load_suite("procedural:train", per_cell=2) if t.wrong_solutions]
    pairs = [
        Pair(
            t.prompt,
            t.canonical_solution,
            t.wrong_solutions[0].completion,
            t.task_id,
            0,
            1,
            "assertion",
            "bench",
        )
        for t in tasks
    ]
    return (pairs * (n // len(pairs) + 1))[:n]


class Timer:
    """Time inside trainer.train(): registered after TrackingCallback, so its on_train_end
    comes after the tracking callback's final flush."""

    def __init__(self):
        from transformers import TrainerCallback

        outer = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                outer.t0 = time.perf_counter()
                outer.c0 = time.process_time()

            def on_train_end(self, args, state, control, **kw):
                outer.wall = time.perf_counter() - outer.t0
                outer.cpu = time.process_time() - outer.c0

        self.callback = _CB()
        self.wall = self.cpu = 0.0


def one(cfg, pairs, tracked: bool) -> tuple[float, float]:
    from rlvf.tracking.runs import start_run
    from rlvf.train.dpo import train_dpo

    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        if tracked:
            with start_run(cfg, "train") as run:
                train_dpo(cfg, pairs, Path(out), run=run, extra_callbacks=[timer.callback])
        else:
            train_dpo(cfg, pairs, Path(out), run=None, extra_callbacks=[timer.callback])
    return timer.wall, timer.cpu


def batching_bench(n: int = 1000) -> dict[str, float]:
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("Default").experiment_id
    run = client.create_run(exp)
    t0 = time.perf_counter()
    for i in range(n):
        client.log_metric(run.info.run_id, "single", float(i), step=i)
    single = time.perf_counter() - t0
    now = int(time.time() * 1000)
    t0 = time.perf_counter()
    client.log_batch(run.info.run_id, metrics=[Metric("batched", float(i), now, i) for i in range(n)])
    batched = time.perf_counter() - t0
    client.set_terminated(run.info.run_id)
    return {"n": n, "log_metric_s": single, "log_batch_s": batched}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="embedded:small")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    os.environ.setdefault("TQDM_DISABLE", "1")
    work = Path(tempfile.mkdtemp(prefix="rlvf-bench-"))
    os.chdir(work)
    import mlflow

    from rlvf.config import load_config
    from rlvf.runtime import cpu_threads

    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    cfg = load_config(
        "dpo",
        "small",
        [
            f"model.policy={args.policy}",
            f"train.max_steps={args.steps}",
            "train.logging_steps=1",
            "tracking.progress=false",
        ],
    )
    pairs = hand_pairs(args.steps * cfg["train.batch_size"])
    rows = []
    with cpu_threads(cfg["model.device"]):
        one(cfg, pairs[: cfg["train.batch_size"] * 2], tracked=True)  # warm-up: imports, store schema, caches
        for r in range(args.rounds):
            for tracked in (False, True) if r % 2 == 0 else (True, False):
                wall, cpu = one(cfg, pairs, tracked)
                rows.append({"round": r, "tracked": tracked, "wall_s": wall, "cpu_s": cpu})
                print(
                    f"round {r} {'tracked  ' if tracked else 'untracked'} wall {wall:7.3f}s cpu {cpu:7.3f}s",
                    file=sys.stderr,
                )
        batching = batching_bench()

    def med(tracked: bool, key: str) -> float:
        return statistics.median(x[key] for x in rows if x["tracked"] == tracked)

    def best(tracked: bool, key: str) -> float:
        return min(x[key] for x in rows if x["tracked"] == tracked)

    res = {
        "policy": args.policy,
        "steps": args.steps,
        "rounds": args.rounds,
        "metrics_per_step": "every trainer log (logging_steps=1)",
        "untracked_wall_s": med(False, "wall_s"),
        "tracked_wall_s": med(True, "wall_s"),
        "untracked_cpu_s": med(False, "cpu_s"),
        "tracked_cpu_s": med(True, "cpu_s"),
        "rows": rows,
        "batching": batching,
    }
    res["overhead_wall_pct"] = 100 * (res["tracked_wall_s"] / res["untracked_wall_s"] - 1)
    res["overhead_cpu_pct"] = 100 * (res["tracked_cpu_s"] / res["untracked_cpu_s"] - 1)
    res["best_untracked_wall_s"] = best(False, "wall_s")
    res["best_tracked_wall_s"] = best(True, "wall_s")
    res["overhead_best_wall_pct"] = 100 * (res["best_tracked_wall_s"] / res["best_untracked_wall_s"] - 1)
    print(f"\ntraining {args.steps} steps of DPO on {args.policy}, {args.rounds} rounds (median | best):")
    print(
        f"  no tracking      {res['untracked_wall_s']:8.3f} | {res['best_untracked_wall_s']:8.3f} s wall"
        f"   {res['untracked_cpu_s']:8.3f} s cpu"
    )
    print(
        f"  rlvf tracking    {res['tracked_wall_s']:8.3f} | {res['best_tracked_wall_s']:8.3f} s wall"
        f"   {res['tracked_cpu_s']:8.3f} s cpu"
    )
    print(
        f"  overhead         {res['overhead_wall_pct']:+7.2f} % | {res['overhead_best_wall_pct']:+7.2f} % wall"
        f"   {res['overhead_cpu_pct']:+7.2f} % cpu   (goal < 2%; on a busy machine trust the best-of)"
    )
    b = batching
    print(
        f"\n{b['n']} metrics: log_metric one by one {b['log_metric_s']:.2f} s, one log_batch {b['log_batch_s']:.3f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
