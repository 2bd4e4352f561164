"""Eval shared among the ranks of an external launch (`rlvf.train.shards`): a two-rank
torchrun of `rlvf eval` gives exactly the numbers and samples of one process, in one MLflow run,
with both ranks' seeds on record; a rank that fails or goes silent is one line naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from stores import seed_store

from rlvf.train import shards

REPO = Path(__file__).resolve().parents[1]
SETTINGS = "eval.limit=3;eval.seeds=[0,1,2];eval.n_samples=1;eval.max_new_tokens=48"


def _two_ranks(tmp_path: Path, uri: str) -> subprocess.Popen:
    """`torchrun --nproc_per_node 2 -m rlvf eval` into experiment 'two' of the store at `uri`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RLVF_LAUNCH"))}
    env.update(
        MLFLOW_TRACKING_URI=uri,
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        RLVF_NO_EVAL_CACHE="1",  # the base's eval is computed, not read from the shared cache
        RLVF_LAUNCH_DIR=str(tmp_path / "launch"),
    )
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    out = f"tracking.experiment=two;tracking.output_dir={tmp_path / 'two'}"
    return subprocess.Popen(
        [*launcher, "-m", "rlvf", "eval", "-r", "small", "-s", SETTINGS, "-s", out],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_torchrun_ranks_evaluate_like_one_process(tmp_path, tiny_policy, monkeypatch):
    """The same eval on two torchrun ranks and, meanwhile, in this process alone."""
    import mlflow
    from mlflow import MlflowClient

    from rlvf.pipeline.cli import run_entry, split_sets

    uri = seed_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    ids = {name: client.create_experiment(name) for name in ("one", "two")}  # the store, made once
    two = _two_ranks(tmp_path, uri)
    for k in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RLVF_NO_EVAL_CACHE", "1")
    monkeypatch.setenv("RLVF_EVAL_PROCESSES", "1")  # the reference is one process, not two
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    try:
        out = f"tracking.experiment=one;tracking.output_dir={tmp_path / 'one'}"
        run_entry("eval", "small", split_sets([SETTINGS, out]))
    finally:
        mlflow.set_tracking_uri("")
        _, err = two.communicate(timeout=600)
    assert two.returncode == 0, err[-3000:]
    (one,) = client.search_runs([ids["one"]])
    runs = client.search_runs([ids["two"]])
    assert len(runs) == 1 and len(client.search_runs([ids["one"], ids["two"]])) == 2  # rank 1 opened none
    (two,) = runs
    assert two.info.status == "FINISHED"
    assert two.data.tags["rlvf.config_hash"] == one.data.tags["rlvf.config_hash"]
    evals = {k: v for k, v in two.data.metrics.items() if k.startswith("eval/")}
    assert evals["eval/procedural/n_tasks"] == 3
    assert evals == {k: v for k, v in one.data.metrics.items() if k.startswith("eval/")}
    # seeds 0 and 2 on rank 0, seed 1 on rank 1; the one-process run records no sharing
    assert json.loads(two.data.tags["rlvf.eval.ranks"]) == {"0": [0, 2], "1": [1]}
    assert "rlvf.eval.ranks" not in one.data.tags
    samples = [
        Path(client.download_artifacts(r.info.run_id, "eval/procedural/samples.jsonl", str(tmp_path / n)))
        for r, n in ((one, "a1"), (two, "a2"))
    ]
    assert samples[0].read_text() == samples[1].read_text()
    assert samples[0].read_text().count("\n") == 3 * 3


def _launch(tmp_path: Path, monkeypatch) -> Path:
    """This test process as rank 0 of a two-rank launch (undone after the test)."""
    monkeypatch.setattr(shards, "_LEAD", {})
    d = tmp_path / "launch"
    d.mkdir()
    shards.enable(d, 2)
    return d


def test_a_rank_serves_jobs_and_a_failing_job_names_it(tmp_path, monkeypatch):
    """A rank's loop does rank 0's jobs (here: loading a suite, then one that does not exist)
    until the launch finishes; the failure comes back as one line naming rank 1."""
    from rlvf.evaluate import load_tasks
    from rlvf.train.launch import FINISHED

    d = _launch(tmp_path, monkeypatch)
    rank1 = threading.Thread(target=shards.serve, args=(1, d), kwargs={"until": None})
    rank1.start()
    try:
        got = shards.gather(shards.scatter("tasks", load_tasks, {1: {"suite": "procedural", "limit": 2}}))
        assert [t.task_id for t in got[1]] == [t.task_id for t in load_tasks("procedural", limit=2)]
        with pytest.raises(
            shards.ShardError, match=r"^eval of x: rank 1 failed: UserError: .*no-such-suite"
        ) as e:
            shards.gather(shards.scatter("eval of x", load_tasks, {1: {"suite": "no-such-suite"}}))
        assert "\n" not in str(e.value)
    finally:
        (d / FINISHED).touch()
        rank1.join(timeout=30)
    assert not rank1.is_alive()
    assert not list(d.glob("shard-*"))  # every job taken, every answer read


def test_a_silent_rank_fails_the_gather_instead_of_hanging(tmp_path, monkeypatch):
    """No rank 1 serving (it crashed before, or died mid-job: its heartbeat stops): rank 0
    gives up after the timeout, in one line naming the rank."""
    from rlvf.evaluate import load_tasks

    _launch(tmp_path, monkeypatch)
    pending = shards.scatter("eval of base", load_tasks, {1: {"suite": "procedural"}})
    with pytest.raises(shards.ShardError, match=r"eval of base: rank 1 gave no answer .* for 1s"):
        shards.gather(pending, timeout=1.0)


def test_ranks_sampling_their_batches_give_one_process_samples(tiny_model):
    """Pair sampling on N ranks: rank r samples batches r, r+N, ... (each batch is seeded on
    its own), so the ranks' samples put together are one process's, record for record."""
    from rlvf.evaluate import load_tasks
    from rlvf.generate import SamplingSettings, generate

    tasks = load_tasks("procedural", limit=5)
    settings = SamplingSettings(n=2, max_new_tokens=24, seed=3)
    whole, _ = generate(tiny_model, tasks, settings, backend="hf", batch_size=3, progress=False)
    parts = [
        generate(tiny_model, tasks, settings, backend="hf", batch_size=3, progress=False, shard=(r, 2))[0]
        for r in (0, 1)
    ]
    assert [len(p) for p in parts] == [6, 4]  # 10 rows in batches of 3: 0 and 2 on rank 0
    ids = [t.task_id for t in tasks]
    merged = sorted([*parts[0], *parts[1]], key=lambda s: (ids.index(s.task_id), s.index))
    assert merged == whole


def test_a_busy_rank_is_waited_for_however_long_its_share_takes(tmp_path, monkeypatch):
    """The timeout is for silence, not for work: rank 1 takes longer than it over its job
    (and rank 0 over its own share before gathering), but its heartbeat goes on."""
    import time

    import rlvf.runtime
    from rlvf.train.launch import FINISHED

    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    slow.__module__, slow.__qualname__ = "rlvf.runtime", "_slow_for_test"
    monkeypatch.setattr(rlvf.runtime, "_slow_for_test", slow, raising=False)
    d = _launch(tmp_path, monkeypatch)
    rank1 = threading.Thread(target=shards.serve, args=(1, d), kwargs={"until": None})
    rank1.start()
    try:
        pending = shards.scatter("slow work", slow, {1: {"seconds": 2.5}})
        time.sleep(1.5)  # rank 0's own share
        assert shards.gather(pending, timeout=1.0) == {1: "done"}
    finally:
        (d / FINISHED).touch()
        rank1.join(timeout=30)


def test_each_training_of_a_launch_is_a_new_numbered_job(tmp_path, monkeypatch):
    """Iterative DPO trains once a round: every publish is a job the other ranks have not
    taken yet, and it clears the last training's weight digests and reference-log-prob cache."""
    from rlvf.train import launch

    monkeypatch.setenv("RLVF_LAUNCH_DIR", str(tmp_path))
    assert launch.job_after(0) == 0
    launch.publish({"method": "dpo", "rows": [1, 2, 3]})
    assert launch.job_after(0) == 1 and launch.job_after(1) == 0
    (tmp_path / "weights-rank1.sha256").write_text("round 1")
    (tmp_path / "datasets-cache").mkdir()
    launch.publish({"method": "dpo", "rows": [4, 5]})
    assert launch.job_after(1) == 2 and launch.job_after(2) == 0
    assert not (tmp_path / "weights-rank1.sha256").exists() and not (tmp_path / "datasets-cache").exists()
