"""Why the embedded model trains in float32 with pinned CPU numerics, measured on this CPU.

    python benchmarks/cpu_numerics_bench.py            # speed: float32 vs bf16 autocast
    python benchmarks/cpu_numerics_bench.py --weights  # + weights under other instruction sets

Speed: one nn.Linear forward + backward (the shape of the embedded model's MLP), one torch
thread, float32 against bf16 autocast. On CPUs without native bf16 (AVX2 only) autocast is
emulated and many times slower; with AVX-512 bf16 it can be faster, but rounds differently.

--weights: trains a tiny embedded config three times in child processes: pinned (rlvf's
bootstrap settings), pinned again, and with ATen's and MKL's instruction sets changed (what
another CPU would use unpinned). The pinned runs must agree byte for byte; the others show
that the instruction set is part of the weights, which is why the bootstrap pins it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def linear_seconds(dtype_autocast: bool, steps: int) -> float:
    import torch

    torch.manual_seed(0)
    layer = torch.nn.Linear(128, 384)
    x = torch.randn(2048, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype_autocast):
        layer(x).float().sum().backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype_autocast):
            y = layer(x)
        y.float().sum().backward()
    return time.perf_counter() - t0


def weights_under(env_extra: dict[str, str], pinned: bool) -> str:
    """weights_sha256 of a tiny bootstrap trained in one child process with `env_extra`."""
    from rlvf.models import bootstrap as bs
    from rlvf.models import pretrain

    cfg = dataclasses.replace(
        bs.CONFIGS["small"], name="numerics-bench", per_cell=1, epochs=1, docs_per_task=1
    )
    prep = bs.prepare(cfg, 0)
    tok = prep.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        job = {
            "config": dataclasses.asdict(cfg),
            "seed": 0,
            "threads": 1,
            "world": 1,
            "numerics": "float32/avx2" if pinned else "float32/other",
            "vocab": len(tok),
            "eos": tok.eos_token_id,
            "pad": tok.pad_token_id,
            "progress": False,
        }
        (work / "job.json").write_text(json.dumps(job))
        (work / "data.json").write_text(json.dumps(prep.data))
        env = pretrain.child_env("float32/avx2" if pinned else "float32/other", 1)
        env.update(env_extra)
        subprocess.run([sys.executable, "-m", "rlvf.models.pretrain", str(work)], env=env, check=True)
        return json.loads((work / "train.json").read_text())["weights_sha256"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--weights", action="store_true", help="also compare weights across instruction sets")
    args = ap.parse_args(argv)

    import torch

    from rlvf.runtime import cpu_description

    torch.set_num_threads(1)
    print(f"measured on: {cpu_description()}")
    fp32 = linear_seconds(False, args.steps)
    bf16 = linear_seconds(True, args.steps)
    print(f"nn.Linear(128, 384) on 2048 tokens, forward + backward x {args.steps}, 1 thread:")
    print(f"  float32        {fp32:7.3f} s")
    print(f"  bf16 autocast  {bf16:7.3f} s   ({bf16 / fp32:.1f}x float32)")
    if args.weights:
        pinned = weights_under({}, pinned=True)
        again = weights_under({}, pinned=True)
        other = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"}
        scalar = weights_under(other, pinned=False)
        print("tiny bootstrap, weights_sha256 (one process):")
        print(f"  pinned to AVX2           {pinned[:16]}")
        print(f"  pinned to AVX2, again    {again[:16]}  {'identical' if again == pinned else 'DIFFERENT'}")
        print(f"  scalar ATen, MKL compat  {scalar[:16]}  {'identical' if scalar == pinned else 'different'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
