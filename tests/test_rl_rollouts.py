"""The rollout recorder writes every completion of every step to a real MLflow store."""

from __future__ import annotations

import os
import textwrap

import pytest
from stores import seed_store

from rlvf.records import Task
from rlvf.rewards import score_completions
from rlvf.rl.rollouts import ARTIFACT_DIR, RolloutRecorder, read_rollouts, rollouts_from_scored

SQUARE = Task(
    task_id="t/square",
    prompt="def square(x):\n",
    entry_point="square",
    test=textwrap.dedent(
        """
        def check(candidate):
            assert candidate(2) == 4
            assert candidate(-3) == 9
        """
    ),
    canonical_solution="    return x * x\n",
)


@pytest.fixture
def mlflow_store(tmp_path):
    import mlflow

    old = {
        k: os.environ.pop(k, None) for k in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    }
    mlflow.set_tracking_uri(seed_store(tmp_path / "mlflow.db"))
    yield tmp_path
    mlflow.set_tracking_uri("")
    for k, v in old.items():
        if v is not None:
            os.environ[k] = v


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_every_rollout_of_every_step_reaches_the_run(mlflow_store, fmt: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.create_experiment("rollouts", artifact_location=str(mlflow_store / "artifacts"))
    run_id = client.create_run(exp).info.run_id
    completions = ["    return x * x\n", "    return x + x\n", "    import os\n    os._exit(0)\n"]
    scored = score_completions({SQUARE.task_id: SQUARE}, [SQUARE.task_id] * 3, completions)
    recorder = RolloutRecorder(run_id, client, every=2, fmt=fmt, local_dir=mlflow_store / "local")
    steps = 5
    for step in range(1, steps + 1):
        for _ in range(2):  # two generation batches per step
            recorder.add(
                rollouts_from_scored(
                    step,
                    [SQUARE.prompt] * 3,
                    scored,
                    advantages=[0.5, 0.0, -0.5],
                    lengths=[5, 5, 9],
                    truncated=[False, False, True],
                    kept=[True, True, False],
                )
            )
        recorder.step_done(step)
    recorder.close()
    client.set_terminated(run_id)
    assert recorder.rows_written == steps * 2 * 3
    assert [a.path for a in client.list_artifacts(run_id, ARTIFACT_DIR)] == [
        f"{ARTIFACT_DIR}/step_000001-000002.{fmt}",
        f"{ARTIFACT_DIR}/step_000003-000004.{fmt}",
        f"{ARTIFACT_DIR}/step_000005-000005.{fmt}",
    ]
    local = client.download_artifacts(run_id, ARTIFACT_DIR, str(mlflow_store / "down"))
    rows = read_rollouts(local)
    assert len(rows) == steps * 2 * 3
    assert sorted({r["step"] for r in rows}) == [1, 2, 3, 4, 5]
    first = rows[:3]
    assert [r["reward"] for r in first] == [1.0, 0.5, 0.0]
    assert [r["category"] for r in first] == ["pass", "assertion_error", "tampering"]
    assert [(r["tests_passed"], r["tests_total"]) for r in first] == [(2, 2), (1, 2), (0, 2)]
    assert [r["advantage"] for r in first] == [0.5, 0.0, -0.5]
    assert [r["truncated"] for r in first] == [False, False, True]
    assert [r["kept"] for r in first] == [True, True, False]
    assert first[0]["task_id"] == SQUARE.task_id and first[0]["prompt"] == SQUARE.prompt
    assert first[1]["completion"] == "    return x + x\n"
    assert isinstance(first[0]["flags"], list)
