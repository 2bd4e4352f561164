"""The embedded base model's figures: bootstrap wall time and base pass@1 on the eval seed.

    python benchmarks/base_model_bench.py                    # default config, cached model
    python benchmarks/base_model_bench.py --force --seeds 0 1 2
    python benchmarks/base_model_bench.py --config small

Samples 8 completions per procedural eval task (11 types x 5 difficulties) at T=0.8,
verifies them in the sandbox and prints pass@1 overall, per type, per difficulty and the
failure categories, for each sampling seed. Issue 3's target: overall 0.35-0.65 with a
visible spread across types and difficulties.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections import Counter, defaultdict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--force", action="store_true", help="retrain even if a cached model exists")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--examples", type=int, default=0, help="print N failing completions")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a BootstrapConfig field (trains into --out); repeatable",
    )
    ap.add_argument("--out", default=None, help="model directory for --set experiments")
    args = ap.parse_args(argv)

    from rlvf.generate import SamplingSettings, generate
    from rlvf.models.bootstrap import bootstrap, get_config, read_info
    from rlvf.models.loader import load_policy
    from rlvf.tasks import load_suite
    from rlvf.verify import verify_samples

    config = get_config(args.config)
    for item in args.set:
        key, _, value = item.partition("=")
        if not hasattr(config, key):
            ap.error(f"--set: BootstrapConfig has no field '{key}'")
        kind = type(getattr(config, key))
        config = dataclasses.replace(config, **{key: kind(value) if kind is not bool else value == "true"})
    if args.set and not args.out:
        ap.error("--set needs --out (the default directory is for the unmodified config)")
    from rlvf.runtime import cpu_description

    cpu = cpu_description()
    print(f"measured on: {cpu}")
    t0 = time.perf_counter()
    path = bootstrap(config, out=args.out, force=args.force)
    wall = time.perf_counter() - t0
    info = read_info(path)
    print(
        f"model {path.name}: {info['parameters']:,} parameters, bootstrap wall {wall:.1f}s "
        f"(recorded: corpus {info['seconds']['corpus']}s, train {info['seconds']['train']}s, "
        f"{info['train']['steps']} steps, loss {info['train']['loss_first']} -> {info['train']['loss_last']}; "
        f"{info.get('numerics')}, {info.get('ranks')} ranks, weights {info.get('weights_sha256', '')[:16]})"
    )
    policy = load_policy(str(path))
    tasks = load_suite("procedural")
    figures: dict = {
        "model": path.name,
        "cpu": cpu,
        "bootstrap_wall_s": round(wall, 1),
        "info": info,
        "seeds": {},
    }
    overall = []
    for seed in args.seeds:
        settings = SamplingSettings(n=args.n, temperature=args.temperature, max_new_tokens=256, seed=seed)
        samples, _ = generate(policy, tasks, settings, progress=False)
        outcomes = verify_samples(tasks, samples, progress=False)
        per_type: dict[str, list[bool]] = defaultdict(list)
        per_diff: dict[str, list[bool]] = defaultdict(list)
        cats: Counter[str] = Counter()
        shown = 0
        for s, o in zip(samples, outcomes, strict=True):
            _, typ, diff, *_ = s.task_id.split("/")
            per_type[typ].append(o.passed)
            per_diff[diff].append(o.passed)
            if not o.passed:
                cats[o.category] += 1
                if shown < args.examples:
                    shown += 1
                    print(f"--- {s.task_id} [{o.category}] {o.detail[:200] if o.detail else ''}")
                    print(s.completion)
        p1 = sum(o.passed for o in outcomes) / len(outcomes)
        overall.append(p1)
        mean = {k: round(sum(v) / len(v), 3) for k, v in sorted(per_type.items())}
        dmean = {
            k: round(sum(v) / len(v), 3) for k, v in sorted(per_diff.items(), key=lambda kv: int(kv[0][1:]))
        }
        figures["seeds"][seed] = {
            "pass@1": round(p1, 4),
            "per_type": mean,
            "per_difficulty": dmean,
            "failures": dict(cats.most_common()),
        }
        print(f"seed {seed}: pass@1 {p1:.3f}")
        print("  per type:       " + ", ".join(f"{k} {v:.2f}" for k, v in mean.items()))
        print("  per difficulty: " + ", ".join(f"{k} {v:.2f}" for k, v in dmean.items()))
        print("  failures:       " + ", ".join(f"{k} {v}" for k, v in cats.most_common()))
    if len(overall) > 1:
        runs = list(figures["seeds"].values())
        for label, key in (("per type", "per_type"), ("per difficulty", "per_difficulty")):
            avg = {k: statistics.mean(r[key][k] for r in runs) for k in runs[0][key]}
            print(f"{label} (mean over seeds): " + ", ".join(f"{k} {v:.2f}" for k, v in avg.items()))
        print(
            f"pass@1 over seeds {args.seeds}: mean {statistics.mean(overall):.3f} "
            f"std {statistics.stdev(overall):.3f} (on {cpu})"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
