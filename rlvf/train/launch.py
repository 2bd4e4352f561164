"""rlvf under an external launcher (`accelerate launch`, `torchrun`): one pipeline, N trainers.

A launcher starts the whole `rlvf <method>` command once per rank. Only rank 0 runs the
pipeline: it opens the MLflow run, samples, verifies, evaluates, logs and registers. The other
ranks run no pipeline and open no run: they wait for rank 0 to reach training, take the job it
publishes (the same job rlvf's own ranks get from `rlvf.train.ranks`: method, config, rows)
and train their share of every batch beside it, then exit. A pipeline that never trains (eval,
pairs) or that stops early tells the waiting ranks so, and they exit too.

Rank 0 hands the job over through a directory all ranks of the launch agree on without talking:
`$RLVF_LAUNCH_DIR` when set (needed across nodes: a shared filesystem), else one under
`$RLVF_HOME/launch` named by the launch itself (master address and port, rendezvous id and the
launcher process every local rank shares).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

from rlvf.train.ranks import JOB, world_size

FINISHED = "finished"
SEQ = "job.seq"  # how many training jobs rank 0 has published (cleared by `lead`)
DIGEST_WAIT_S = 120.0


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def external() -> bool:
    """This process is one rank of a launch rlvf did not start itself (rlvf's own ranks run
    `rlvf.train.ranks`, never the pipeline, so a pipeline that sees WORLD_SIZE > 1 is one)."""
    return world_size() > 1


def follower() -> bool:
    return external() and rank() != 0


def launch_dir() -> Path:
    explicit = os.environ.get("RLVF_LAUNCH_DIR")
    if explicit:
        return Path(explicit)
    from rlvf.models.bootstrap import rlvf_home

    key = ":".join(
        os.environ.get(k, "") for k in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "GROUP_RANK")
    )
    key += f":{os.getppid()}"
    return rlvf_home() / "launch" / hashlib.sha256(key.encode()).hexdigest()[:16]


def lead() -> None:
    """Rank 0 at the start of its pipeline: a fresh hand-over directory, and a note at exit
    (however the pipeline ends) that releases ranks still waiting for a job."""
    d = launch_dir()
    d.mkdir(parents=True, exist_ok=True)
    for stale in (JOB, FINISHED, SEQ):
        (d / stale).unlink(missing_ok=True)
    for stale in d.glob("weights-rank*.sha256"):  # a reused RLVF_LAUNCH_DIR: last launch's digests
        stale.unlink(missing_ok=True)

    def done() -> None:
        (d / FINISHED).touch()
        (d / JOB).unlink(missing_ok=True)

    atexit.register(done)


def publish(job: dict[str, Any]) -> Path:
    """Rank 0, at training: the job the other ranks train on (written whole, then renamed),
    numbered, so that a pipeline that trains several times (iterative DPO's rounds) hands
    each training to the ranks in turn; the last training's weight digests go first."""
    d = launch_dir()
    seq = job_after(0) + 1
    for stale in d.glob("weights-rank*.sha256"):
        stale.unlink(missing_ok=True)
    # TRL's reference log-probs of the last training: its cache names them by a fingerprint a
    # later round's rows can share
    shutil.rmtree(d / "datasets-cache", ignore_errors=True)
    tmp = d / f"{JOB}.tmp"
    tmp.write_bytes(pickle.dumps({**job, "run_id": None}))
    tmp.replace(d / JOB)
    tmp = d / f"{SEQ}.tmp"
    tmp.write_text(str(seq))
    tmp.replace(d / SEQ)
    return d


def job_after(done: int) -> int:
    """The number of the training job rank 0 has published, when it is past `done` (else 0)."""
    try:
        seq = int((launch_dir() / SEQ).read_text() or 0)
    except (OSError, ValueError):
        return 0
    return seq if seq > done else 0


def follow(done: int = 0) -> tuple[int, int]:
    """A rank other than 0: wait for rank 0's next training job (past number `done`), train
    beside it; (exit code, the job's number), or (0, 0) when the launch ended without one."""
    from rlvf.console import quiet_libraries
    from rlvf.train.ranks import _rank

    quiet_libraries()
    d = launch_dir()
    while not (seq := job_after(done)):
        if (d / FINISHED).exists():
            return 0, 0
        time.sleep(0.5)
    return _rank(d, rank()), seq


def check_digests(work: Path, digest: str) -> None:
    """Rank 0 after training: every other rank must end with the same weights."""
    world = world_size()
    deadline = time.monotonic() + DIGEST_WAIT_S
    for r in range(1, world):
        f = work / f"weights-rank{r}.sha256"
        while not f.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not f.exists():
            raise RuntimeError(f"training in {world} processes: rank {r} reported no weights")
        if f.read_text() != digest:
            raise RuntimeError(f"training in {world} processes: the ranks ended with different weights")
