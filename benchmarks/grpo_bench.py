"""GRPO steps with rollouts through rlvf's engine vs TRL's default generation, side by side.

    python benchmarks/grpo_bench.py                          # embedded:small, 3 steps each
    python benchmarks/grpo_bench.py --policy embedded --steps 4 --max-completion-length 192

The same GRPO steps (same tasks, settings, seed, LoRA, real sandboxed reward, dynamic
sampling off so both do the same work) run twice in one process: once with rollouts
through `rlvf.generate.engine` (rows stop at the end of their function and leave the
batch), once through GRPOTrainer's own `model.generate` path. Prints seconds per step, the
ratio (goal: rlvf >= 1.5x faster on 2 CPU cores) and each path's share of step time in
generation, reward (sandbox) and the rest (log-prob forwards + optimisation: the same code
on both paths, rlvf's trainer). The first step of each path is a warm-up and is left out of
the means.

On a machine shared with other work, wall time swings with the load, and the paths run
one after the other: `--rounds N` alternates them N times (rlvf, trl, rlvf, trl, ...) and
pools the steps, so a load change hits both alike. Beside wall seconds it prints this
process's CPU seconds per step (sampling, forwards, optimisation, TRL's bookkeeping; the
sandbox judges run in other processes and are not in it), which other processes' load
moves much less; the headline ratio is still wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _instrument(timers: dict[str, float]) -> None:
    """Time GRPOTrainer's generation and reward calls (benchmark-only wrappers)."""
    from trl import GRPOTrainer

    def wrap(name: str, key: str) -> None:
        original = getattr(GRPOTrainer, name)
        if getattr(original, "_rlvf_timed", False):
            return

        def timed(self, *a, **k):
            t0 = time.perf_counter()
            try:
                return original(self, *a, **k)
            finally:
                timers[key] += time.perf_counter() - t0

        timed._rlvf_timed = True  # type: ignore[attr-defined]
        setattr(GRPOTrainer, name, timed)

    wrap("_generate", "generation")
    wrap("_calculate_rewards", "reward")


def run_path(args, rollouts: str, tasks, timers: dict[str, float]) -> dict:
    from transformers import TrainerCallback

    from rlvf.models.loader import LoraSpec, PolicySpec
    from rlvf.train.grpo import GRPOSettings, train_grpo

    steps: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            timers.clear()
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, a, state, control, **kw):
            total = time.perf_counter() - self.t0
            steps.append(
                {
                    "total": total,
                    "cpu": time.process_time() - self.c0,
                    "generation": timers["generation"],
                    "reward": timers["reward"],
                }
            )

    settings = GRPOSettings(
        num_generations=args.num_generations,
        batch_size=args.batch_size,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        learning_rate=1e-4,
        max_steps=args.steps,
        seed=args.seed,
        rollouts=rollouts,
        dynamic_sampling=False,
    )
    lora = LoraSpec(r=8, alpha=16, dropout=0.0)
    result = train_grpo(
        PolicySpec(base=args.policy, device=args.device),
        tasks,
        settings,
        Path(tempfile.mkdtemp(prefix=f"grpo-bench-{rollouts}-")),
        lora=lora,
        callbacks=[StepTimer()],
    )
    lengths = [
        h["train/completions_mean_length"] for h in result.history if "train/completions_mean_length" in h
    ]
    return {"rollouts": rollouts, "steps": steps, "lengths": lengths}


def pooled(rollouts: str, runs: list[dict]) -> dict:
    """One path's runs as one: every run's steps after its warm-up, and their means."""
    timed = [s for r in runs for s in (r["steps"][1:] if len(r["steps"]) > 1 else r["steps"])]
    mean = {k: sum(s[k] for s in timed) / len(timed) for k in ("total", "cpu", "generation", "reward")}
    mean["rest"] = mean["total"] - mean["generation"] - mean["reward"]
    lengths = [x for r in runs for x in r["lengths"]]
    mean["completion_tokens"] = sum(lengths) / len(lengths) if lengths else 0.0
    return {"rollouts": rollouts, "runs": runs, "s_per_step": mean["total"], "mean": mean}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="embedded:small")
    ap.add_argument("--suite", default="procedural:train")
    ap.add_argument("--tasks", type=int, default=16, help="N tasks evenly spaced through the suite")
    ap.add_argument("--steps", type=int, default=3, help="GRPO steps per path (the first is a warm-up)")
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16, help="completions per step")
    ap.add_argument("--max-completion-length", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1, help="run the two paths alternately this many times")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (scripts/gpu_check.sh)")
    ap.add_argument("--json", type=str, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore")
    from rlvf.evaluate.core import load_tasks

    tasks = load_tasks(args.suite, limit=args.tasks)
    timers: dict[str, float] = defaultdict(float)
    _instrument(timers)
    runs: dict[str, list[dict]] = {"rlvf": [], "trl": []}
    for _ in range(max(1, args.rounds)):
        for path in runs:
            runs[path].append(run_path(args, path, tasks, timers))
    results = [pooled(path, r) for path, r in runs.items()]
    rlvf, trl = results
    ratio = trl["s_per_step"] / rlvf["s_per_step"]
    cpu_ratio = trl["mean"]["cpu"] / rlvf["mean"]["cpu"]
    print(
        f"cpu: {cpu_model()}; torch cpu capability: {torch.backends.cpu.get_cpu_capability()}; "
        f"cores: {os.cpu_count()}; threads: {os.environ.get('RLVF_THREADS', '1 (rlvf default)')}"
    )
    if args.device.startswith("cuda"):
        print(f"device: {args.device} ({torch.cuda.get_device_name(0)})")
    print(
        f"policy {args.policy}, {len(tasks)} tasks, {args.batch_size} completions/step "
        f"({args.num_generations} per prompt), max {args.max_completion_length} tokens, "
        f"{args.steps} steps per path (first left out), {max(1, args.rounds)} round(s), paths alternating"
    )
    for r in results:
        m = r["mean"]
        t = m["total"]
        print(
            f"  {r['rollouts']:>4}: {t:6.2f} s/step ({m['cpu']:5.2f} CPU s)   generation {m['generation'] / t:5.1%}   "
            f"reward {m['reward'] / t:5.1%}   forwards+optimisation {m['rest'] / t:5.1%}   "
            f"mean completion {m['completion_tokens']:.0f} tokens"
        )
    print(
        f"rlvf engine vs TRL generate: {ratio:.2f}x faster per step (goal >= 1.5x); "
        f"in this process's CPU seconds {cpu_ratio:.2f}x"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "ratio": ratio,
                    "cpu_ratio": cpu_ratio,
                    "results": results,
                    "cpu": cpu_model(),
                    "capability": torch.backends.cpu.get_cpu_capability(),
                    "args": vars(args),
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
