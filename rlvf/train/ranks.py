"""Training on several CPU processes: gloo data parallelism through accelerate, as on GPUs.

On a CPU the tiny models rlvf trains do not gain from a second thread (each small op waits
for a descheduled thread), but a second *process* keeps the other core busy: each rank
takes half of every batch and the gradients are averaged once per step. The ranks are
started the way `torchrun` starts them (RANK, WORLD_SIZE, MASTER_ADDR, ...), so the method's
TRL trainer sees an ordinary multi-process run (accelerate's MULTI_CPU with gloo) and this
module adds nothing a GPU launch would not do. The global batch stays `train.batch_size`
(`per_device = batch_size / world`), so one and two processes train on the same batches.

`train.processes` is part of the config (and its hash): the summation order of two ranks
differs from one process in the last bits, so results are reproducible for a given value.

Rank 0 writes the policy and the training history; every rank reports a digest of its
weights, and the parent refuses a run whose ranks ended with different weights.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

JOB = "job.pkl"


def world_size() -> int:
    """This process's data-parallel world (1 unless started as one rank of several)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def wanted(method: Any, cfg: Any, device: str) -> int:
    """How many processes to train `method` in: `train.processes` on CPU for methods that
    train on fixed data; 1 inside an existing launch (accelerate, torchrun) or on a GPU,
    where the launcher decides."""
    n = int(cfg.get("train.processes") or 1)
    if n <= 1 or world_size() > 1 or not device.startswith("cpu"):
        return 1
    if not method.training.processes:
        return 1
    return n


def planned(method: Any, cfg: Any) -> int:
    """The number of data-parallel ranks `method` will train on: this launch's (accelerate,
    torchrun), else what `train.processes` gives on this device (checked before a run opens)."""
    from rlvf.train.common import device_of

    return world_size() if world_size() > 1 else wanted(method, cfg, device_of(cfg))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        RLVF_THREADS="1",
    )
    return env


def train_in_processes(
    method: Any, cfg: Any, rows: Any, out: Path, *, run: Any, init_dir: Path | None, world: int
) -> Any:
    """Train in `world` child processes; returns rank 0's `TrainResult`. Metrics reach `run`
    from rank 0 as training goes (same run id); summary metrics and health flags are logged
    here, from the history rank 0 returns, as a one-process run logs them."""
    from rlvf.train.callback import log_summary
    from rlvf.train.common import TrainResult

    work = out / "ranks"
    work.mkdir(parents=True, exist_ok=True)
    job = {
        "method": method.name,
        "flat": dict(cfg._flat),
        "recipe": cfg.recipe,
        "rows": list(rows),
        "out": str(out),
        "run_id": run.run_id if run is not None else None,
        "init_dir": str(init_dir) if init_dir else None,
    }
    (work / JOB).write_bytes(pickle.dumps(job))
    if run is not None:
        run.flush()
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rlvf.train.ranks", str(work), str(r)],
            env=rank_env(r, world, port),
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
        err = work / "error.txt"
        why = err.read_text().strip() if err.exists() else f"exit codes {codes}"
        raise RuntimeError(f"training in {world} processes failed: {why}")
    result = pickle.loads((work / "result.pkl").read_bytes())
    for r in range(1, world):
        if (work / f"weights-rank{r}.sha256").read_text() != result["weights_sha256"]:
            raise RuntimeError(f"training in {world} processes: the ranks ended with different weights")
    history = result["history"]
    if run is not None:
        log_summary(
            run, history, result["steps"], result["wall_s"], result["peak_mem_mb"], method.training.health
        )
    return TrainResult(
        policy_dir=Path(result["policy_dir"]),
        spec=result["spec"],
        steps=result["steps"],
        wall_s=result["wall_s"],
        n_examples=len(rows),
        history=history,
    )


def share_datasets_cache(path: Path) -> None:
    """Point `datasets`' per-process temporary cache at one directory every rank sees.

    TRL's DPO precomputes the reference log-probs on every rank, writes them to a cache file
    on rank 0 and reads that file back on all ranks; rlvf's datasets live in memory, whose
    cache files go to a temporary directory of each process's own, so the other ranks would
    not find it. (Datasets loaded from disk keep their cache beside their files instead.)
    In-memory datasets also get random fingerprints, which name those files: every rank
    seeds them alike, so the ranks, building the same datasets in the same order, agree.
    """
    import datasets.fingerprint as fingerprint

    class _Shared:
        name = str(path)

        def cleanup(self) -> None:  # the parent removes the work directory
            pass

    path.mkdir(parents=True, exist_ok=True)
    fingerprint._TEMP_DIR_FOR_TEMP_CACHE_FILES = _Shared()
    fingerprint.fingerprint_rng.seed(0)


def main(workdir: str, rank: int) -> int:
    """One rank: rebuild the config and the method from the job, train, report."""
    from rlvf.console import quiet_libraries
    from rlvf.runtime import die_with_parent

    die_with_parent()
    quiet_libraries()  # a rank is part of the same console: the same quiet rules apply
    work = Path(workdir)
    try:
        return _rank(work, rank)
    except BaseException as e:  # reported to the parent in one line; the traceback goes to stderr
        err = work / "error.txt"
        if rank == 0 or not err.exists():  # rank 0's reason first; another's when it failed alone
            err.write_text(f"{type(e).__name__}: {e}".splitlines()[0] + "\n")
        raise


def weights_digest(model: Any) -> str:
    """sha256 over every tensor of the model, by name: equal on every rank or training diverged."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode() + p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _rank(work: Path, rank: int) -> int:

    import torch

    from rlvf.config.loader import Config
    from rlvf.methods import get
    from rlvf.train.callback import peak_mem_mb
    from rlvf.train.common import _train_policy, quiet

    torch.set_num_threads(1)
    job = pickle.loads((work / JOB).read_bytes())
    cfg = Config(job["flat"], job["recipe"])
    share_datasets_cache(work / "datasets-cache")
    run = None
    if rank == 0 and job["run_id"]:
        from rlvf.tracking.runs import Run, client

        run = Run(job["run_id"], client())
    method = get(job["method"])
    init_dir = Path(job["init_dir"]) if job["init_dir"] else None
    with quiet(cfg["tracking.progress"] and rank == 0):
        res, model = _train_policy(
            method,
            cfg,
            job["rows"],
            Path(job["out"]),
            run=run,
            init_dir=init_dir,
            extra_callbacks=(),
            summary=False,
            save=rank == 0,
            keep_model=True,
        )
    digest = weights_digest(model)
    if run is not None:
        run.close()
    (work / f"weights-rank{rank}.sha256").write_text(digest)
    if rank:
        return 0
    result = {
        "policy_dir": str(res.policy_dir),
        "spec": res.spec,
        "steps": res.steps,
        "wall_s": res.wall_s,
        "history": res.history,
        "peak_mem_mb": peak_mem_mb(),
        "weights_sha256": digest,
    }
    (work / "result.pkl").write_bytes(pickle.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
