"""Crash and resume: a real DPO training process killed with SIGKILL after a checkpoint, then
`rlvf dpo --resume RUN_ID` continues the same MLflow run from that checkpoint to the final
step, with no step logged twice and exactly one registered version; resumes that would
misfile results are refused with one line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stores import seed_store

REPO = Path(__file__).resolve().parents[1]
STEPS, SAVE_EVERY = 24, 4


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=seed_store(root / "mlflow.db"),
        RLVF_EVAL_CACHE=str(root / "evalcache"),
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
    )
    return env


def _argv(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rlvf",
        "dpo",
        "-r",
        "small",
        "--pairs",
        str(root / "pairs.jsonl"),
        "-s",
        f"train.max_steps={STEPS};train.save_steps={SAVE_EVERY};train.batch_size=2",
        "-s",
        f"tracking.output_dir={root / 'out'};tracking.experiment=resume;eval.base=false",
        "-s",
        "eval.limit=3;eval.seeds=[0];eval.n_samples=1;eval.max_new_tokens=32",
        *extra,
    ]


def _rlvf(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _argv(root, *extra), cwd=root, env=_env(root), capture_output=True, text=True, timeout=600
    )


def _config(root: Path, rid: str, *sets: str):
    """The config the command line gives, loaded here (the refusals need no process of their own)."""
    from rlvf.config import load_config

    return load_config(
        "dpo",
        "small",
        [
            f"data.pairs={root / 'pairs.jsonl'}",
            f"train.max_steps={STEPS}",
            f"train.save_steps={SAVE_EVERY}",
            "train.batch_size=2",
            "eval.limit=3",
            "eval.seeds=[0]",
            "eval.n_samples=1",
            "eval.max_new_tokens=32",
            f"tracking.resume={rid}",
            *sets,
        ],
    )


def _steps(client, rid: str, key: str = "train/loss") -> list[int]:
    return [m.step for m in client.get_metric_history(rid, key)]


@pytest.mark.slow
def test_kill_9_then_resume_continues_the_same_run_from_its_checkpoint(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from rlvf.errors import UserError
    from rlvf.methods.dpo import examples
    from rlvf.pipeline import resume
    from rlvf.records import write_jsonl
    from rlvf.tracking.store import open_store
    from rlvf.train.common import last_checkpoint

    write_jsonl(tmp_path / "pairs.jsonl", examples(8))
    uri = seed_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    open_store(uri)
    client = MlflowClient(uri)
    proc = subprocess.Popen(
        _argv(tmp_path),
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:  # killed once the store shows steps past the second checkpoint: work lost
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no second checkpoint"
            exp = client.get_experiment_by_name("resume")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs and max(_steps(client, runs[0].info.run_id), default=0) > 2 * SAVE_EVERY + 1:
                break
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    (run,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    rid = run.info.run_id
    assert run.info.status == "RUNNING"  # nothing ended it
    done = max(_steps(client, rid))
    ckpt = last_checkpoint(tmp_path / "out" / rid / "trainer")
    kept = int(ckpt.name.split("-")[1])
    # (a kill that lands just after a checkpoint loses nothing: kept == done)
    assert 2 * SAVE_EVERY <= kept <= done < STEPS, (kept, done)

    # another config (learning rate) is refused before anything changes
    with pytest.raises(UserError, match=rf"^--resume {rid}: the run has config_hash \w+, this config \w+: "):
        resume.target(_config(tmp_path, rid, "train.learning_rate=1e-3"))
    run = client.get_run(rid)
    assert run.info.status == "FAILED" and run.data.tags["rlvf.error"] == "abandoned"

    r = _rlvf(tmp_path, "--resume", rid)
    assert r.returncode == 0, r.stderr
    assert f"resuming run {rid} from step {kept}" in r.stderr
    print(f"\nkill -9 after step {done}; resumed from checkpoint {kept}: {done - kept} step(s) redone")

    run = client.get_run(rid)
    assert run.info.status == "FINISHED"
    assert "rlvf.error" not in run.data.tags and run.data.tags["rlvf.resumed_from_step"] == str(kept)
    assert len(client.search_runs([run.info.experiment_id])) == 1  # the same run, no second one
    steps = _steps(client, rid)
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # continued, no step twice
    assert set(range(1, STEPS + 1)) <= set(steps)
    assert run.data.metrics["train/steps"] == STEPS
    versions = client.search_model_versions("name = 'rlvf-embedded-small'")
    assert [v.run_id for v in versions] == [rid]  # exactly one version, from this run

    # a finished run is not resumed (nor registered twice)
    with pytest.raises(UserError, match=rf"^--resume {rid}: the run already finished; nothing to resume$"):
        resume.target(_config(tmp_path, rid))
