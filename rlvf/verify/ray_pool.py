"""Verification on a Ray cluster: chunks of samples go to actors that each host rlvf's own
sandbox.

Ray runs only trusted code here. Each actor (`Judge`) is an rlvf process with its own fork
server and runs `verify_local`, the very code the local backend runs, so a sample is confined
exactly as on this machine and gets the same verdict. The driver keeps a bounded number of
chunks in flight (`IN_FLIGHT_PER_ACTOR` per actor: back-pressure, however long the batch)
and puts results back in the order of the samples.

An actor that dies (killed, its worker or node lost, out of memory) or stops answering takes
its chunks with it: each of their samples gets `infra_error`, the outcome the local backend
gives when its fork server dies mid-sample (no verdict; rewards map it to None, never to a
wrong answer). Those samples are not retried, so a sample whose program brought the actor
down cannot take a second one with it. A new actor replaces the dead one and the chunks not
yet sent go on to it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlvf.errors import UserError
from rlvf.records import Outcome, Sample
from rlvf.verify.backend import Backend
from rlvf.verify.categories import INFRA_ERROR
from rlvf.verify.sandbox import ForkServer, Limits

AUTH_MODE_ENV = "RAY_AUTH_MODE"  # Ray's own switch (ray/_private/authentication)
JUDGES_PER_ACTOR = 2  # as locally: two judges per core, one runs while the other waits
IN_FLIGHT_PER_ACTOR = 2  # one chunk running, one queued, so an actor never waits on the driver
MAX_CHUNK = 16
ACTOR_CPUS = 0.01
STARTUP_GRACE_S = 120.0  # a new actor's first chunk also waits for its worker and fork server


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("verify.backend is 'ray' but Ray is not installed: pip install 'rlvf[ray]'") from None
    return ray


def set_auth_mode(mode: str) -> None:
    """Set Ray's token authentication explicitly (RAY_AUTH_MODE) for this process and the
    local cluster it may start.

    Left unset, Ray 2.60's first `ray.init()` turns token auth on and writes
    ~/.ray/auth_token; a later `ray start` then turns it on only because the file exists, and
    a driver given an explicit address never does, so the parts of one cluster disagree."""
    os.environ[AUTH_MODE_ENV] = mode
    ray = _ray()
    if not ray.is_initialized():
        with contextlib.suppress(Exception):  # Ray caches its config; refresh it as Ray itself does
            from ray._raylet import Config

            Config.initialize("")


def connect(backend: Backend) -> bool:
    """Connect this process to the backend's cluster (starting a local one when none is found
    and no address was given); True when this call connected. A process already connected
    (by the user or a caller) keeps its connection."""
    ray = _ray()
    if ray.is_initialized():
        return False
    set_auth_mode(backend.ray_auth)
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    address = backend.ray_address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, **quiet)
            return True
        try:
            ray.init(address="auto", **quiet)  # the cluster `ray start` runs on this machine
        except ConnectionError:
            ray.init(include_dashboard=False, **quiet)  # none: a local one for this process
    except ConnectionError as e:
        raise UserError(f"verify.ray_address: cannot reach a Ray cluster at {address!r}: {e}") from None
    except ray.exceptions.AuthenticationError as e:
        raise UserError(
            f"Ray refused rlvf (verify.ray_auth={backend.ray_auth}): {str(e).splitlines()[0]}"
        ) from None
    # Processes this one spawns later (eval's seed workers) join this cluster, not a new one;
    # `disconnect` puts RAY_ADDRESS back.
    global _saved_address
    _saved_address = (os.environ.get("RAY_ADDRESS"),)
    with contextlib.suppress(Exception):
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    return True


_saved_address: tuple[str | None] | None = None


def disconnect() -> None:
    """Undo `connect`: shut Ray down in this process and restore RAY_ADDRESS."""
    global _saved_address
    ray = _ray()
    ray.shutdown()
    if _saved_address is not None:
        (prev,) = _saved_address
        if prev is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = prev
        _saved_address = None


class Judge:
    """A Ray actor's body: rlvf's fork server and judges, exactly as in a local run."""

    def __init__(self) -> None:
        self.server = ForkServer()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        """Stop the fork server and remove its directory (a killed actor cannot)."""
        self.server.close()

    def judge(self, problems: dict[str, Any], samples: list[Sample], limits: Limits) -> list[Outcome]:
        from rlvf.verify.batch import verify_local

        return verify_local(
            problems, samples, limits=limits, workers=JUDGES_PER_ACTOR, progress=False, server=self.server
        )


def _infra(sample: Sample, why: str) -> Outcome:
    return Outcome(sample.task_id, sample.index, False, INFRA_ERROR, detail=why[:300])


@dataclass
class _Sent:
    chunk: int
    slot: int
    actor: Any
    at: float
    budget: float


class RayPool:
    """A fixed number of `Judge` actors spread over the cluster's nodes."""

    def __init__(self, backend: Backend) -> None:
        ray = _ray()
        self.backend = backend
        self.owns_connection = connect(backend)
        n = backend.ray_actors or max(1, int(ray.cluster_resources().get("CPU", 1.0)))
        # A nominal CPU demand: enough for Ray's SPREAD to place the actors on every node
        # (it leaves demand-free actors on the driver's), small enough that several rlvf
        # processes (eval's seed workers) share a cluster instead of waiting for its CPUs.
        self._cls = ray.remote(num_cpus=ACTOR_CPUS, max_restarts=0, max_task_retries=0)(Judge)
        self.actors: list[Any] = [self._new(i) for i in range(n)]
        self.replaced = 0  # actors that died and were replaced
        self.chunks_done = 0  # finished chunks, judged or not (tests watch it to kill mid-batch)
        self._lock = threading.Lock()

    def _new(self, slot: int) -> Any:
        # SPREAD: one actor per node before a second on any, so a cluster's nodes all judge.
        return self._cls.options(scheduling_strategy="SPREAD").remote()

    def node_ids(self) -> list[str]:
        """The node each actor runs on."""
        ray = _ray()
        return ray.get([a.node_id.remote() for a in self.actors])

    def _replace(self, slot: int, dead: Any) -> None:
        ray = _ray()
        if self.actors[slot] is dead:
            with contextlib.suppress(Exception):
                ray.kill(dead, no_restart=True)
            self.actors[slot] = self._new(slot)
            self.replaced += 1

    def verify(
        self,
        problems: Mapping[str, dict[str, Any]],
        samples: Sequence[Sample],
        *,
        limits: Limits,
        progress: bool = False,
    ) -> list[Outcome]:
        """Judge `samples` on the actors; outcomes in the order of `samples`."""
        from tqdm.auto import tqdm

        ray = _ray()
        with self._lock:  # one batch at a time: the in-flight bound is per pool
            n = len(self.actors)
            size = max(1, min(MAX_CHUNK, math.ceil(len(samples) / (n * 4))))
            bounds = [(s, min(s + size, len(samples))) for s in range(0, len(samples), size)]
            results: list[Outcome | None] = [None] * len(samples)
            todo = deque(range(len(bounds)))
            sent: dict[Any, _Sent] = {}
            load = [0] * n
            fresh = [True] * n  # the slot's actor has not answered yet (startup time)
            budget = size * (limits.timeout + 2.0) / JUDGES_PER_ACTOR + 30.0
            bar = tqdm(total=len(samples), desc="verify (ray)", unit="sample", disable=not progress)
            try:
                while todo or sent:
                    while todo:
                        slot = min(range(n), key=load.__getitem__)
                        if load[slot] >= IN_FLIGHT_PER_ACTOR:
                            break
                        chunk = todo.popleft()
                        part = list(samples[slice(*bounds[chunk])])
                        needed = {s.task_id: problems[s.task_id] for s in part if s.task_id in problems}
                        ref = self.actors[slot].judge.remote(needed, part, limits)
                        extra = STARTUP_GRACE_S if fresh[slot] else 0.0
                        # Queued behind the slot's other chunk: its budget starts after that one.
                        sent[ref] = _Sent(
                            chunk,
                            slot,
                            self.actors[slot],
                            time.monotonic(),
                            budget * (1 + load[slot]) + extra,
                        )
                        load[slot] += 1
                    ready, _ = ray.wait(list(sent), num_returns=1, timeout=1.0)
                    for ref in ready:
                        job = sent.pop(ref)
                        load[job.slot] -= 1
                        start, end = bounds[job.chunk]
                        try:
                            outs = ray.get(ref)
                            if job.actor is self.actors[job.slot]:
                                fresh[job.slot] = False
                        except ray.exceptions.RayTaskError:
                            raise  # a bug in the judge, not a lost actor: as loud as locally
                        except ray.exceptions.RayError as e:
                            why = f"the Ray actor judging it was lost ({type(e).__name__})"
                            outs = [_infra(s, why) for s in samples[start:end]]
                            if job.actor is self.actors[job.slot]:
                                self._replace(job.slot, job.actor)
                                fresh[job.slot] = True
                        results[start:end] = outs
                        self.chunks_done += 1
                        bar.update(end - start)
                    now = time.monotonic()
                    for job in list(sent.values()):
                        if now - job.at > job.budget and job.actor is self.actors[job.slot]:
                            # Stopped answering: killing it fails its chunks (infra_error) above.
                            self._replace(job.slot, job.actor)
                            fresh[job.slot] = True
            finally:
                bar.close()
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Kill the actors (their fork servers die with them) and disconnect if we connected."""
        ray = _ray()
        if ray.is_initialized():
            with contextlib.suppress(Exception):
                ray.get([a.close.remote() for a in self.actors], timeout=10)
            for a in self.actors:
                with contextlib.suppress(Exception):
                    ray.kill(a, no_restart=True)
            if self.owns_connection:
                disconnect()
        self.actors = []


_pools: dict[Backend, RayPool] = {}
_pools_lock = threading.Lock()


def pool_for(backend: Backend) -> RayPool:
    """The process's pool for `backend`, started on first use (actors outlive one batch, so a
    training run does not start actors for every step)."""
    with _pools_lock:
        pool = _pools.get(backend)
        if pool is None:
            if not _pools:
                atexit.register(close_pools)
            pool = _pools[backend] = RayPool(backend)
        return pool


def close_pools() -> None:
    """Close every pool this process opened."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()
