"""Eval and sampling work that rank 0 of an external launch shares with the other ranks.

Under `accelerate launch` / `torchrun` only rank 0 runs the pipeline (`rlvf.train.launch`);
the other ranks would sit idle until training. Work whose random streams are already
independent per piece (an eval seed, a sampling batch) can run on any rank and give the very
same records, so rank 0 scatters such pieces, does its own share and gathers the rest; it
alone logs to MLflow.

The hand-over uses the launch's directory (`launch.launch_dir()`), every file written whole
and then renamed:

- ``shard-<id>.rank<r>.job``: a job for rank r: an rlvf function (``module:name``) and its
  keyword arguments (pickled; rank 0 and its ranks are one user's processes);
- ``shard-<id>.rank<r>.out``: rank r's answer: ``("ok", value)`` or ``("error", one line)``;
- ``alive.rank<r>``: a counter rank r bumps every HEARTBEAT_S while it serves. Rank 0 watches
  it change (not its mtime: clocks of different nodes need not agree), so a rank that died
  fails the gather after RLVF_SHARD_TIMEOUT seconds, in one line naming it, instead of
  hanging rank 0 forever.
"""

from __future__ import annotations

import importlib
import itertools
import os
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvf.errors import UserError

HEARTBEAT_S = 1.0
TIMEOUT_S = 120.0  # RLVF_SHARD_TIMEOUT: how long a silent rank may stay silent
POLL_S = 0.1

_LEAD: dict[str, Any] = {}  # set by `enable` in the process that leads the launch
_IDS = itertools.count()
_BEATS = itertools.count()


class ShardError(UserError):
    """Another rank failed or went silent while it held a share of rank 0's work. Not the
    user's mistake, but one line that names the rank says more than a traceback; exit 1."""

    code = 1


def timeout_s() -> float:
    want = os.environ.get("RLVF_SHARD_TIMEOUT", "").strip()
    return float(want) if want else TIMEOUT_S


def enable(directory: Path, world: int) -> None:
    """Rank 0 at the start of its pipeline: later `ranks()` calls in this process share work
    over `world` ranks. Stale job and answer files (an earlier launch in the same directory)
    go. Child processes (spawned base-eval prefetch, eval helpers) do not inherit this."""
    for stale in directory.glob("shard-*"):
        stale.unlink(missing_ok=True)
    _LEAD.update(directory=directory, world=world, pid=os.getpid(), launch=uuid.uuid4().hex[:8])


def ranks() -> int:
    """How many ranks share eval and sampling work in this process: the launch's world size
    in the process that leads an external launch, else 1."""
    if _LEAD.get("pid") != os.getpid():
        return 1
    return int(_LEAD["world"])


@dataclass
class Scattered:
    """Jobs handed to other ranks, waiting to be gathered."""

    what: str
    ids: dict[int, str]
    beats: dict[int, str | None]  # each rank's heartbeat when its job went out
    started: float = field(default_factory=time.monotonic)


def _write(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(value))
    tmp.replace(path)


def _name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def scatter(what: str, fn: Callable[..., Any], per_rank: dict[int, dict[str, Any]]) -> Scattered:
    """Hand `fn(**kwargs)` to each rank of `per_rank` (rank 0 itself does its own share in
    between, then calls `gather`). `what` names the work in errors ("eval of base", ...)."""
    from rlvf.verify.backend import current

    d = Path(_LEAD["directory"])
    ids, beats = {}, {}
    verify = current()  # the run's verification backend: a rank judges as rank 0 would
    for r, kwargs in per_rank.items():
        job_id = f"{_LEAD['launch']}-{next(_IDS):04d}"
        beats[r] = _beat(d / f"alive.rank{r}")
        _write(d / f"shard-{job_id}.rank{r}.job", {"fn": _name(fn), "kwargs": kwargs, "verify": verify})
        ids[r] = job_id
    return Scattered(what, ids, beats)


def _beat(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def gather(s: Scattered, timeout: float | None = None) -> dict[int, Any]:
    """Every rank's answer to `s`; a rank that reports an error, or shows no sign of life for
    `timeout` seconds (default RLVF_SHARD_TIMEOUT), is a ShardError naming it."""
    d = Path(_LEAD["directory"])
    limit = timeout_s() if timeout is None else timeout
    out: dict[int, Any] = {}
    for r, job_id in s.ids.items():
        answer = d / f"shard-{job_id}.rank{r}.out"
        heart = d / f"alive.rank{r}"
        last, seen = s.beats[r], s.started  # a beat since the job went out: alive
        while not answer.exists():
            beat = _beat(heart)
            now = time.monotonic()
            if beat != last:
                last, seen = beat, now
            elif now - seen > limit:
                (d / f"shard-{job_id}.rank{r}.job").unlink(missing_ok=True)
                raise ShardError(
                    f"{s.what}: rank {r} gave no answer and no sign of life for {limit:.0f}s "
                    "(it may have crashed; RLVF_SHARD_TIMEOUT sets the wait)"
                )
            time.sleep(POLL_S)
        status, value = pickle.loads(answer.read_bytes())
        answer.unlink(missing_ok=True)
        if status != "ok":
            raise ShardError(f"{s.what}: rank {r} failed: {value}")
        out[r] = value
    return out


# --------------------------------------------------------------------------- other ranks


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(f"{os.getpid()}:{next(_BEATS)}")  # never the same twice
            tmp.replace(path)
        except OSError:  # the directory went away with the launch: nothing left to serve
            return
        stop.wait(HEARTBEAT_S)


def _device_for_rank() -> None:
    """On a node of GPUs each local rank samples on its own (rank 0 on the first)."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 1:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0") or 0) % torch.cuda.device_count())
    except ImportError:
        pass


def run_job(path: Path) -> None:
    """Do one job file's work and leave the answer beside it (an error as one line)."""
    job = pickle.loads(path.read_bytes())
    path.unlink(missing_ok=True)
    answer = path.with_name(path.name[: -len(".job")] + ".out")
    from rlvf.verify.backend import use

    try:
        module, name = job["fn"].split(":")
        if not module.startswith("rlvf."):
            raise ValueError(f"not an rlvf function: {job['fn']}")
        with use(job["verify"]):
            value = ("ok", getattr(importlib.import_module(module), name)(**job["kwargs"]))
    except Exception as e:  # reported to rank 0, which ends the run with it
        print(f"[rlvf] rank shard {job['fn']} failed: {type(e).__name__}: {e}", file=sys.stderr)
        value = ("error", f"{type(e).__name__}: {e}".splitlines()[0])
    _write(answer, value)


def serve(rank: int, directory: Path, *, until: Callable[[], bool] | None = None) -> None:
    """A rank other than 0: do the jobs rank 0 hands out, until the launch finishes (or until
    `until()`: rank 0 has published a training job, which `launch.follow` takes)."""
    from rlvf.console import quiet_libraries
    from rlvf.train.launch import FINISHED

    quiet_libraries()  # one console for all ranks: the same quiet rules
    _device_for_rank()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(directory / f"alive.rank{rank}", stop), daemon=True)
    beat.start()
    try:
        while True:
            jobs = sorted(directory.glob(f"shard-*.rank{rank}.job"))
            if jobs:
                run_job(jobs[0])
                continue
            if (directory / FINISHED).exists() or (until is not None and until()):
                return
            time.sleep(POLL_S)
    finally:
        stop.set()
