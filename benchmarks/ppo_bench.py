"""Seconds per PPO iteration, split into rollout, reward, reference/value forward, optimisation.

    python benchmarks/ppo_bench.py                              # embedded:small, 3 iterations
    python benchmarks/ppo_bench.py --policy embedded --iterations 4 --rollout-batch-size 64 \
        --max-completion-length 192

Runs `rlvf.train.ppo.PPOTrainer` (full fine-tuning unless --lora) on N procedural training
tasks with the real sandboxed reward, on CUDA when a GPU is available (else the CPU, with
the thread count rlvf uses), and prints the CPU model, torch's CPU capability, the device
and each phase's mean seconds per iteration (the first iteration is a warm-up and is left
out). The phases are timed by the trainer itself (`PPOTrainer.timings`):

    rollout   sampling through rlvf's engine (LoRA merged for it)
    reward    cleaning + sandboxed verification (+ a reward model when asked)
    forward   the policy's log-probs and values and the reference's log-probs, KL, GAE
    optimise  ppo_epochs x minibatches of forward + backward + step

The GPU path is the same code with tensors on CUDA and bf16 autocast where the GPU has it;
it has not been run (no GPU was available when this was written): unverified.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="embedded:small")
    ap.add_argument("--suite", default="procedural:train")
    ap.add_argument("--tasks", type=int, default=16, help="N tasks evenly spaced through the suite")
    ap.add_argument("--iterations", type=int, default=3, help="PPO iterations (the first is a warm-up)")
    ap.add_argument("--rollout-batch-size", type=int, default=16)
    ap.add_argument("--minibatch-size", type=int, default=8)
    ap.add_argument("--ppo-epochs", type=int, default=2)
    ap.add_argument("--max-completion-length", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument(
        "--lora", action="store_true", help="a fresh LoRA adapter (r 8) instead of full fine-tuning"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from rlvf.models.loader import LoraSpec, PolicySpec, load_policy, peft_config, resolve_device
    from rlvf.runtime import cpu_threads
    from rlvf.tasks import load_suite
    from rlvf.train.ppo import PHASES, PPOArgs, PPOSettings, PPOTrainer

    device = resolve_device("auto")
    suite = load_suite(args.suite)
    tasks = [suite[(i * len(suite)) // args.tasks] for i in range(min(args.tasks, len(suite)))]
    model, tok = load_policy(PolicySpec(base=args.policy, device=device), trainable=True)
    settings = PPOSettings(
        iterations=args.iterations,
        rollout_batch_size=args.rollout_batch_size,
        minibatch_size=args.minibatch_size,
        ppo_epochs=args.ppo_epochs,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        learning_rate=1e-4,
        seed=args.seed,
    )
    from rlvf.runtime import trains_in_bf16

    ppo_args = PPOArgs(learning_rate=1e-4, seed=args.seed, bf16=trains_in_bf16(device))
    lora = peft_config(LoraSpec(r=8, alpha=16, dropout=0.0)) if args.lora else None
    trainer = PPOTrainer(model, tok, tasks, settings, ppo_args, peft_config=lora)
    t0 = time.perf_counter()
    with cpu_threads(device):
        trainer.train()
    wall = time.perf_counter() - t0
    timed = trainer.timings[1:] if len(trainer.timings) > 1 else trainer.timings
    mean = {k: sum(t[k] for t in timed) / len(timed) for k in PHASES}
    total = sum(mean.values())
    lengths = [h["completion_length"] for h in trainer.history if "completion_length" in h]
    out = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "policy": args.policy,
        "finetune": "lora" if args.lora else "full",
        "rollout_batch_size": args.rollout_batch_size,
        "minibatch_size": args.minibatch_size,
        "ppo_epochs": args.ppo_epochs,
        "max_completion_length": args.max_completion_length,
        "mean_completion_tokens": sum(lengths) / len(lengths) if lengths else 0.0,
        "s_per_iteration": total,
        "phases_s": mean,
        "iterations": trainer.timings,
        "wall_s": wall,
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"CPU: {out['cpu']} (torch capability {out['cpu_capability']}, {out['threads']} threads)")
    print(
        f"device: {device}{' (' + out['gpu'] + ')' if out['gpu'] else ''}; policy {args.policy}, {out['finetune']}"
    )
    print(
        f"{args.rollout_batch_size} rollouts x <= {args.max_completion_length} tokens "
        f"(mean {out['mean_completion_tokens']:.0f}), {args.ppo_epochs} epochs of minibatches of {args.minibatch_size}"
    )
    print(f"seconds per PPO iteration (mean of {len(timed)} after a warm-up): {total:.2f}")
    for k in PHASES:
        share = mean[k] / total if total else 0.0
        print(f"  {k:<9} {mean[k]:7.2f} s  ({share:.0%})")
    if not device.startswith("cuda"):
        print("GPU path: unverified (no GPU here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
