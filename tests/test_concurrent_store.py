"""Several rlvf processes started at the same moment on one store all succeed, each in the
experiment it named: a brand-new sqlite file (MLflow creates its schema on first use, with no
guard) and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Opens a run the way every entry point does (rlvf.tracking.runs.start_run), after a file barrier
# so all processes reach the store within a millisecond of each other.
OPEN_RUN = """
import sys, time
from pathlib import Path
from rlvf.config import load_config
from rlvf.tracking.runs import start_run
exp, barrier, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
cfg = load_config("eval", "small", {"tracking.experiment": exp})
(barrier / f"ready-{me}").touch()
while not (barrier / "go").exists():
    time.sleep(0.001)
with start_run(cfg, "eval") as run:
    run.metrics({"x": 1.0})
print(run.run_id)
"""


def _race(uri: str, experiments: list[str], tmp: Path, env: dict[str, str] | None = None) -> list[str]:
    """Run ids of one run opened per experiment name, all at once (`env`: the processes'
    environment, by default this one's with MLFLOW_TRACKING_URI=uri and no other MLflow setting)."""
    barrier = tmp / "barrier"
    barrier.mkdir()
    env = env or {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_TRACKING_URI": uri,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_RUN, exp, str(barrier), str(i)],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, exp in enumerate(experiments)
    ]
    deadline = time.monotonic() + 180
    while len(list(barrier.glob("ready-*"))) < len(procs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
            p.communicate() for p in procs if p.poll() is not None
        ]
        time.sleep(0.02)
    (barrier / "go").touch()
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        ids.append(out.strip().splitlines()[-1])
    return ids


def _check(uri: str, experiments: list[str], ids: list[str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for exp, rid in zip(experiments, ids, strict=True):
        run = client.get_run(rid)
        assert run.info.status == "FINISHED"
        assert client.get_experiment(run.info.experiment_id).name == exp
    for exp in set(experiments):
        e = client.get_experiment_by_name(exp)
        found = {r.info.run_id for r in client.search_runs([e.experiment_id])}
        assert found == {r for x, r in zip(experiments, ids, strict=True) if x == exp}
    default = client.get_experiment_by_name("Default")
    assert default is None or client.search_runs([default.experiment_id]) == []


EXPS = ["exp-a", "exp-a", "exp-b", "exp-b"]


def test_four_processes_on_a_new_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert not (tmp_path / "mlflow.db").exists()
    ids = _race(uri, EXPS, tmp_path)
    assert len(set(ids)) == 4
    _check(uri, EXPS, ids)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_four_processes_on_a_real_mlflow_server(tmp_path):
    port = _free_port()
    cmd = [
        *f"mlflow server --host 127.0.0.1 --port {port} --workers 2".split(),
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    server = subprocess.Popen(
        [sys.executable, "-m", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        ids = _race(uri, EXPS, tmp_path)
        assert len(set(ids)) == 4
        _check(uri, EXPS, ids)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
