"""Write an evaluation into an MLflow run in the layout of `rlvf.tracking.schema`.

The one function every producer uses (entry points, `rlvf import-results`), so the
readers (`rlvf export`, `rlvf compare`) see the same thing whoever wrote the run.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rlvf.metrics import flat_metrics, summarize
from rlvf.records import EvalResult
from rlvf.tracking import schema


def _resolve(target: Any, client: Any) -> tuple[Any, str]:
    import mlflow
    from mlflow import MlflowClient

    if target is None:
        run = mlflow.active_run()
        if run is None:
            raise ValueError("log_eval_result: no run given and no active MLflow run")
        run_id = run.info.run_id
    elif isinstance(target, str):
        run_id = target
    elif hasattr(target, "info"):  # mlflow.ActiveRun / mlflow.entities.Run
        run_id = target.info.run_id
    else:
        raise TypeError(
            f"log_eval_result: expected a run id, an MLflow run or None, got {type(target).__name__}"
        )
    return client or MlflowClient(), run_id


def log_eval_result(
    target: Any,
    result: EvalResult,
    prefix: str = schema.EVAL_PREFIX,
    *,
    client: Any = None,
) -> dict[str, float]:
    """Log `result` to a run: its metrics under `<prefix>/<suite>/...` and the record itself
    as the artifact `<prefix>/<suite>/result.json`.

    `target` is a run id, an MLflow run (`mlflow.start_run()`'s value or a `Run`), or None
    for the active run; `client` an `MlflowClient` (default: one for the current tracking
    URI). Returns the logged metrics, keyed by their full names.
    """
    from mlflow.entities import Metric

    client, run_id = _resolve(target, client)
    metrics = {
        schema.eval_metric(result.suite, name, prefix=prefix): float(value)
        for name, value in flat_metrics(result, summarize(result)).items()
    }
    now = int(time.time() * 1000)
    batch = [Metric(key, value, now, 0) for key, value in sorted(metrics.items())]
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i : i + 1000])
    text = json.dumps(result.to_dict(), ensure_ascii=False, sort_keys=True)
    client.log_text(run_id, text, f"{prefix}/{schema.suite_key(result.suite)}/{schema.RESULT_ARTIFACT}")
    return metrics
