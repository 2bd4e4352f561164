"""Batched sampling engine vs one sequence per `generate` call: same prompts, same settings.

    python benchmarks/sample_bench.py                      # embedded policy, 16 eval tasks x 8
    python benchmarks/sample_bench.py --policy embedded:small --tasks 8 --n 4

Both sides run rlvf's HF backend with the same stopping rules (EOS, end of function,
max_new_tokens); the only difference is the batch size (B vs 1). Prints samples/s and
tokens/s for each and the batched/sequential ratio (goal: >= 5x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

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

    from rlvf.generate.engine import SamplingSettings, generate
    from rlvf.models.loader import load_policy
    from rlvf.tasks import load_suite
    from rlvf.train.common import cpu_threads

    model, tok = load_policy(args.policy)
    tasks = load_suite(args.suite)[: args.tasks]
    settings = SamplingSettings(
        n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    # warm-up (allocator, kernels) so neither side pays first-call costs
    generate((model, tok), tasks[:1], SamplingSettings(n=2, max_new_tokens=16), batch_size=2, progress=False)
    _, batched = generate((model, tok), tasks, settings, batch_size=args.batch_size, progress=False)
    _, single = generate((model, tok), tasks, settings, batch_size=1, progress=False)

    with cpu_threads(str(model.device)):
        threads = torch.get_num_threads()  # what the engine runs under (RLVF_THREADS, 1 on CPU)
    figures = {
        "policy": args.policy,
        "prompts": len(tasks) * args.n,
        "settings": {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "n": args.n},
        "threads": threads,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "batched": {"batch_size": args.batch_size, **batched.to_dict()},
        "sequential": {"batch_size": 1, **single.to_dict()},
        "ratio_samples_per_s": round(batched.samples_per_s / single.samples_per_s, 2),
        "ratio_tokens_per_s": round(batched.tokens_per_s / single.tokens_per_s, 2),
    }
    print(
        f"policy {args.policy}: {len(tasks)} tasks x {args.n} samples, T={args.temperature}, "
        f"max_new_tokens={args.max_new_tokens}, {threads} torch thread(s) while sampling"
    )
    for name, st in (("batched", batched), ("one-per-call", single)):
        print(
            f"  {name:13s} {st.samples_per_s:8.2f} samples/s {st.tokens_per_s:9.0f} tokens/s "
            f"({st.samples} samples, {st.tokens} tokens, {st.seconds:.1f}s)"
        )
    print(
        f"  ratio         {figures['ratio_samples_per_s']:.1f}x samples/s, {figures['ratio_tokens_per_s']:.1f}x tokens/s"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
