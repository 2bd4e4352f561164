"""The embedded model's training loop, run in a child process with pinned CPU numerics.

Float results on a CPU depend on the instruction set the kernels use: ATen's vectorised
ops and MKL's matrix multiplies sum in a different order with AVX-512 than with AVX2
(measured here: forcing ATen's scalar path, or MKL's compatible path, changes the trained
weights). bf16 autocast is worse: native on some CPUs, emulated ~15x slower on others, with
different rounding. So the bootstrap trains in float32 inside a fresh interpreter whose
environment pins ATen, MKL (conditional numerical reproducibility) and oneDNN to AVX2 on
every x86-64 CPU that has it: the same corpus gives the same weights, byte for byte, on an
AVX2 laptop and an AVX-512 server. Thread count does not change the result (checked: 1 and 2
threads give identical weights), but one thread is the default: with any other load on a
2-core machine, two threads ran 6-8x slower than one (each op waits for a descheduled thread).

`python -m rlvf.models.pretrain WORKDIR` reads WORKDIR/job.json (config, seed, threads) and
WORKDIR/data.json (tokenised documents) and writes WORKDIR/model/ plus WORKDIR/train.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Data-parallel training processes: fixed, since the summation order is part of the weights.
WORLD = 2
# Environment that pins CPU numerics to AVX2 (read by torch and MKL when they load).
PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def numerics(bf16: bool) -> str:
    """The numeric mode the bootstrap trains in on this CPU: part of the model's identity.

    'float32/avx2' on every x86-64 CPU with AVX2 or AVX-512 (pinned); elsewhere (ARM, very old
    x86) the CPU's own capability, so a model trained there never shares an identity with one
    it cannot reproduce. bf16 autocast is opt-in and always carries the capability: its
    rounding differs between native and emulated bf16.
    """
    import torch

    cap = torch.backends.cpu.get_cpu_capability().lower()
    if bf16:
        return f"bf16-autocast/{cap}"
    return "float32/avx2" if cap in ("avx2", "avx512") else f"float32/{cap}"


def child_env(mode: str, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    if mode == "float32/avx2":
        env.update(PINNED_ENV)
    env["OMP_NUM_THREADS"] = str(threads)
    env["RLVF_THREADS"] = str(threads)
    return env


def default_threads() -> int:
    """RLVF_THREADS if set, else 1 (see the module docstring)."""
    want = os.environ.get("RLVF_THREADS", "").strip()
    return max(1, int(want)) if want else 1


def model_config(cfg: dict[str, Any], vocab: int, eos: int, pad: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        num_key_value_heads=cfg["num_heads"],
        max_position_embeddings=cfg["max_position_embeddings"],
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def batches(lengths: list[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches of document indices, in a seeded random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    import torch

    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def weights_digest(model: Any) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: the weights' identity."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _Ranks:
    """The data-parallel group: each rank takes every WORLD-th row of a batch, gradients summed.

    Two processes, always: the summation order is part of the weights, so the world size is
    fixed (a one-core machine runs both ranks in turn and gets the same model, only slower).
    Processes rather than threads because a descheduled OpenMP thread stalls every op, while
    a descheduled rank only delays the one all-reduce per step.
    """

    def __init__(self, rank: int, world: int, rendezvous: Path | None) -> None:
        self.rank, self.world = rank, world
        if world > 1:
            import torch.distributed as dist

            dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)

    def sum_(self, t: Any) -> Any:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def train(
    cfg: dict[str, Any],
    seed: int,
    data: list,
    vocab: int,
    eos: int,
    pad: int,
    progress: bool,
    ranks: _Ranks | None = None,
):
    """Pretrain a Llama from scratch on tokenised documents; returns (model, stats)."""
    import torch
    from tqdm import tqdm
    from transformers import LlamaForCausalLM

    ranks = ranks or _Ranks(0, 1, None)
    rng = random.Random(seed + 1)
    with _deterministic(seed):
        model = LlamaForCausalLM(model_config(cfg, vocab, eos, pad))
        model.train()
        lengths = [len(ids) for ids, _, _ in data]
        epochs = [batches(lengths, cfg["batch_tokens"], rng) for _ in range(cfg["epochs"])]
        total = sum(len(e) for e in epochs)
        params = list(model.named_parameters())
        opt = torch.optim.AdamW(
            [
                {"params": [p for _, p in params if p.dim() >= 2], "weight_decay": cfg["weight_decay"]},
                {"params": [p for _, p in params if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=cfg["learning_rate"],
            betas=(0.9, 0.95),
        )

        def lr_at(step: int) -> float:
            if step < cfg["warmup_steps"]:
                return (step + 1) / cfg["warmup_steps"]
            frac = (step - cfg["warmup_steps"]) / max(1, total - cfg["warmup_steps"])
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        flat_params = [p for _, p in params]
        losses: list[float] = []
        n_tokens = 0
        show = progress and ranks.rank == 0
        bar = tqdm(total=total, desc="bootstrap", unit="step", disable=not show, mininterval=1.0)
        for epoch in epochs:
            for batch in epoch:
                mine = batch[ranks.rank :: ranks.world]
                num = torch.zeros(())
                den = torch.zeros(())
                logp = w = None
                if mine:
                    width = max(lengths[i] for i in mine)
                    ids = torch.full((len(mine), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(mine), width), dtype=torch.long)
                    weights = torch.zeros((len(mine), width), dtype=torch.float32)
                    for r, i in enumerate(mine):
                        doc, n_prompt, marks = data[i]
                        ids[r, : len(doc)] = torch.tensor(doc)
                        mask[r, : len(doc)] = 1
                        weights[r, : len(doc)] = 1.0
                        weights[r, :n_prompt] = cfg["prompt_loss_weight"]
                        weights[r, marks] = cfg["name_loss_weight"]
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["bf16"]):
                        logits = model(input_ids=ids, attention_mask=mask).logits
                    logp = torch.nn.functional.cross_entropy(
                        logits[:, :-1].float().reshape(-1, logits.size(-1)),
                        ids[:, 1:].reshape(-1),
                        reduction="none",
                    )
                    w = weights[:, 1:].reshape(-1)
                    den = w.sum().detach()
                    n_tokens += int(mask.sum())
                den = ranks.sum_(den.clone())
                if logp is not None:
                    part = (logp * w).sum()
                    (part / den).backward()
                    num = part.detach()
                grads = [
                    p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in flat_params
                ]
                flat = ranks.sum_(torch.cat(grads))
                offset = 0
                for p in flat_params:
                    p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
                    offset += p.numel()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                loss = float(ranks.sum_(num.clone()) / den)
                losses.append(round(loss, 4))
                bar.update(1)
                if len(losses) % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.close()
    model.eval()
    n_tokens = int(ranks.sum_(torch.tensor(float(n_tokens))))
    return model, {
        "steps": len(losses),
        "tokens": n_tokens,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_curve": losses[:: max(1, len(losses) // 50)],
    }


def main(workdir: str, rank: int = 0) -> int:
    import torch
    import transformers

    from rlvf.runtime import die_with_parent

    die_with_parent()  # a killed bootstrap must not leave its ranks training on
    transformers.utils.logging.disable_progress_bar()
    work = Path(workdir)
    job = json.loads((work / "job.json").read_text())
    data = json.loads((work / "data.json").read_text())
    torch.set_num_threads(int(job["threads"]))
    cap = torch.backends.cpu.get_cpu_capability()
    if job["numerics"] == "float32/avx2" and cap != "AVX2":
        print(f"bootstrap: could not pin CPU numerics to AVX2 (torch reports {cap})", file=sys.stderr)
        return 3
    ranks = _Ranks(rank, job["world"], work / "rendezvous")
    try:
        model, stats = train(
            job["config"], job["seed"], data, job["vocab"], job["eos"], job["pad"], job["progress"], ranks
        )
    finally:
        ranks.close()
    digest = weights_digest(model)
    if rank:
        (work / f"weights-rank{rank}.sha256").write_text(digest)
        return 0
    model.save_pretrained(work / "model")
    stats.update(
        weights_sha256=digest,
        parameters=sum(p.numel() for p in model.parameters()),
        cpu_capability=cap,
        threads=torch.get_num_threads(),
        ranks=job["world"],
        torch=torch.__version__,
    )
    (work / "train.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return 0


def run(work: Path, mode: str, threads: int) -> None:
    """Train in WORLD child processes (pinned numerics); raise if any of them fails."""
    import subprocess
    import time

    env = child_env(mode, threads)
    world = json.loads((work / "job.json").read_text())["world"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rlvf.models.pretrain", str(work), str(r)],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        for r in range(world)
    ]
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    codes = [p.returncode for p in procs]
    if any(codes):
        raise RuntimeError(f"bootstrap: a training process failed (exit codes {codes})")
    for r in range(1, world):
        other = (work / f"weights-rank{r}.sha256").read_text()
        if other != json.loads((work / "train.json").read_text())["weights_sha256"]:
            raise RuntimeError("bootstrap: the training ranks ended with different weights")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0))
