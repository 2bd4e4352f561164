"""Batched sampling engine vs one sequence per `generate` call: same prompts, same settings.

    python benchmarks/sample_bench.py                      # embedded policy, 16 eval tasks x 8
    python benchmarks/sample_bench.py --policy embedded:small --tasks 8 --n 4

Three runs with the same stopping rules (EOS, end of function, max_new_tokens): the engine
(batches of B that drop rows as they finish), `model.generate` on the same batches, and
`model.generate` one sequence per call. Prints samples/s and tokens/s for each and the
engine / one-per-call ratio (goal: >= 5x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="embedded")
    ap.add_argument("--suite", default="procedural")
    ap.add_argument("--tasks", type=int, default=16, help="first N tasks of the suite")
    ap.add_argument("--n", type=int, default=8, help="samples per task")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=str, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    from rlvf.generate.engine import HFBackend, SamplingSettings, Throughput
    from rlvf.models.loader import load_policy
    from rlvf.tasks import load_suite
    from rlvf.train.common import cpu_threads

    model, tok = load_policy(args.policy)
    tasks = load_suite(args.suite)[: args.tasks]
    prompts = [t.prompt for t in tasks for _ in range(args.n)]
    entry_points = [t.entry_point for t in tasks for _ in range(args.n)]
    settings = SamplingSettings(
        n=1, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed
    )

    def run(batch_size: int, prune: bool) -> dict:
        backend = HFBackend(model, tok, batch_size, prune=prune)
        t0 = time.perf_counter()
        raws = backend.run(prompts, entry_points, settings)
        stats = Throughput(
            backend="rlvf pruned" if prune else "model.generate",
            samples=len(raws),
            tokens=sum(r.n_tokens for r in raws),
            seconds=time.perf_counter() - t0,
        )
        return {"batch_size": batch_size, **stats.to_dict()}

    # warm-up (allocator, kernels) so no side pays first-call costs
    HFBackend(model, tok, 2).run(prompts[:2], entry_points[:2], SamplingSettings(max_new_tokens=16))
    sides = {
        "engine": run(args.batch_size, prune=True),
        "generate_batched": run(args.batch_size, prune=False),
        "one_per_call": run(1, prune=False),
    }
    with cpu_threads(str(model.device)):
        threads = torch.get_num_threads()  # what the engine runs under (RLVF_THREADS, 1 on CPU)
    base = sides["one_per_call"]
    figures = {
        "policy": args.policy,
        "prompts": len(prompts),
        "settings": {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "n": args.n},
        "threads": threads,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        **sides,
        "ratio_samples_per_s": round(sides["engine"]["samples_per_s"] / base["samples_per_s"], 2),
        "ratio_tokens_per_s": round(sides["engine"]["tokens_per_s"] / base["tokens_per_s"], 2),
        "ratio_generate_batched": round(
            sides["generate_batched"]["samples_per_s"] / base["samples_per_s"], 2
        ),
    }
    from rlvf.runtime import cpu_description

    figures["cpu"] = cpu_description()
    print(f"measured on: {figures['cpu']}")
    print(
        f"policy {args.policy}: {len(tasks)} tasks x {args.n} samples, T={args.temperature}, "
        f"max_new_tokens={args.max_new_tokens}, {threads} torch thread(s) while sampling"
    )
    labels = {
        "engine": f"engine (batch {args.batch_size})",
        "generate_batched": f"generate (batch {args.batch_size})",
        "one_per_call": "generate (one per call)",
    }
    for key, st in sides.items():
        print(
            f"  {labels[key]:26s} {st['samples_per_s']:8.2f} samples/s {st['tokens_per_s']:9.0f} tokens/s "
            f"({st['samples']} samples, {st['tokens']} tokens, {st['seconds']:.1f}s)"
        )
    print(
        f"  engine / one-per-call: {figures['ratio_samples_per_s']:.1f}x samples/s, "
        f"{figures['ratio_tokens_per_s']:.1f}x tokens/s "
        f"(batched generate without pruning: {figures['ratio_generate_batched']:.1f}x)"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
