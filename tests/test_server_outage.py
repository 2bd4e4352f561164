"""A tracking server that goes away, against a real `mlflow server` (HTTP, sqlite backend, on
127.0.0.1): a short outage during training is retried and loses nothing; a long one is reported
in one line naming the server, training goes on, the run is kept in a spool under its output
folder, and `rlvf upload SPOOL` sends and registers it once the server is back."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `mlflow server` that the test can kill (SIGKILL) and start again on its port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.proc = root, _free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port)),
                *("--backend-store-uri", f"sqlite:///{self.root}/server.db", "--workers", "1"),
                *("--artifacts-destination", str(self.root / "artifacts")),
            ],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300  # a new sqlite store runs MLflow's migrations first
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200:
                    return
            assert self.proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.3)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One store for the module (a new one costs MLflow's schema migrations, slow on a busy core)."""
    s = Server(tmp_path_factory.mktemp("server"))
    s.start()
    yield s
    s.kill()


@pytest.fixture
def server(shared_server):
    if shared_server.proc.poll() is not None:
        shared_server.start()
    return shared_server


def _env(root: Path, uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=uri,
        RLVF_EVAL_CACHE=str(root / "evalcache"),
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
    )
    return env


class Training:
    """`rlvf dpo` (small recipe, pairs from a file) against the server, stderr read as it comes."""

    def __init__(self, root: Path, uri: str, name: str, *sets: str) -> None:
        from rlvf.methods.dpo import examples
        from rlvf.records import write_jsonl

        write_jsonl(root / "pairs.jsonl", examples(8))
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "rlvf", "dpo", "-r", "small", "--pairs", str(root / "pairs.jsonl")),
                *("-s", f"train.max_steps={STEPS};train.batch_size=2;train.save_steps=0;eval.base=false"),
                *("-s", "eval.limit=3;eval.seeds=[0];eval.n_samples=1;eval.max_new_tokens=32"),
                *(
                    "-s",
                    f"tracking.output_dir={root / 'out'};tracking.experiment={name};registry.name={name}",
                    *sets,
                ),
            ],
            cwd=root,
            env=_env(root, uri),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout: float = 400) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join(10)
        return rc

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _wait_training(server: Server, job: Training, name: str) -> str:
    """The run id once the server holds its first training metric (training is under way)."""
    from mlflow import MlflowClient

    client = MlflowClient(server.uri)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert job.proc.poll() is None, job.stderr
        exp = client.get_experiment_by_name(name)
        for run in client.search_runs([exp.experiment_id]) if exp else []:
            if "train/loss" in run.data.metrics:
                return run.info.run_id
        time.sleep(0.3)
    pytest.fail("training never started")


def _check_uploaded(server: Server, rid: str, name: str) -> None:
    """The run as the server holds it: ended FINISHED, every training step, eval metrics on the
    logged model, exactly one registered version."""
    from mlflow import MlflowClient

    client = MlflowClient(server.uri)
    run = client.get_run(rid)
    assert run.info.status == "FINISHED", run.data.tags
    steps = [m.step for m in client.get_metric_history(rid, "train/loss")]
    assert sorted(steps) == list(range(1, STEPS + 1)), steps  # none lost, none twice
    assert run.data.metrics["train/steps"] == STEPS
    assert any(k.startswith("eval/") and k.endswith("pass_at_1") for k in run.data.metrics)
    (version,) = client.search_model_versions(f"name = '{name}'")
    assert version.run_id == rid and client.get_model_version_by_alias(version.name, "candidate")
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert str(model.status).endswith("READY") and model.source_run_id == rid


@pytest.mark.slow
def test_a_long_outage_spools_the_run_and_upload_sends_and_registers_it(tmp_path, server):
    job = Training(tmp_path, server.uri, "spooled", "-s", "tracking.outage_s=4")
    try:
        rid = _wait_training(server, job, "spooled")
        server.kill()
        t_down = time.monotonic()
        rc = job.wait()
    finally:
        job.stop()
    assert rc == 75, job.stderr
    said = [(t, line) for t, line in job.lines if "unreachable for" in line]
    assert said, job.stderr
    t_said, line = said[0]
    assert t_said - t_down < 60 and line.startswith(f"[rlvf] tracking server {server.uri} unreachable for ")
    assert "Traceback" not in job.stderr
    spool = tmp_path / "out" / rid / "spool"
    last = job.stderr.strip().splitlines()[-1]
    assert last == (
        f"error: tracking server {server.uri} was unreachable: run {rid} is kept in {spool}; "
        f"when the server is back: rlvf upload {spool}"
    )
    policies = list(spool.glob("files/*/policy"))
    assert len(policies) == 1 and any(policies[0].iterdir())  # the trained model is on disk

    r = subprocess.run(
        [sys.executable, "-m", "rlvf", "upload", str(spool)],
        cwd=tmp_path,
        env=_env(tmp_path, server.uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "still unreachable" in r.stderr, r.stderr  # the server is down

    server.start()
    r = subprocess.run(
        [sys.executable, "-m", "rlvf", "upload", str(spool)],
        cwd=tmp_path,
        env=_env(tmp_path, server.uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert re.search(rf"uploaded \d+ records to run {rid} \(FINISHED\)", r.stderr), r.stderr
    assert "registered spooled version 1" in r.stderr
    _check_uploaded(server, rid, "spooled")


@pytest.mark.slow
def test_a_short_outage_is_retried_and_loses_nothing(tmp_path, server):
    # a threshold well past the restart (MLflow's server takes a minute to start on a busy core)
    job = Training(tmp_path, server.uri, "retried", "-s", "tracking.outage_s=400")
    try:
        rid = _wait_training(server, job, "retried")
        server.kill()
        time.sleep(3)
        server.start()
        rc = job.wait()
    finally:
        job.stop()
    assert rc == 0, job.stderr
    assert "unreachable" not in job.stderr and "Traceback" not in job.stderr
    assert not (tmp_path / "out" / rid / "spool").exists()
    _check_uploaded(server, rid, "retried")
