"""Training data as MLflow dataset inputs: the rows as a run artifact, plus `log_input`
with the digest MLflow computes from the content and the data's lineage as input tags."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from rlvf.tracking.runs import Run


def log_dataset(
    run: Run,
    rows: Sequence[Any],
    *,
    name: str,
    artifact_path: str,
    context: str = "training",
    lineage: Mapping[str, Any] | None = None,
) -> str:
    """Write `rows` (records or dicts) to `artifact_path` in `run` and log them as a dataset
    input named `name`; returns the dataset's digest."""
    import mlflow
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dicts = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in rows]
    run.log_jsonl(artifact_path, dicts)
    df = pd.DataFrame(dicts)
    with warnings.catch_warnings():  # schema-inference hints and "source can be read several ways"
        warnings.simplefilter("ignore")
        try:
            ds = mlflow.data.from_pandas(df, source=run.artifact_uri(artifact_path), name=name)
        except MlflowException:  # a store whose artifact URIs MLflow cannot resolve as a source
            ds = mlflow.data.from_pandas(df, name=name)
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
    for k, v in (lineage or {}).items():
        if v is not None:
            tags.append(InputTag(f"rlvf.{k}", v if isinstance(v, str) else json.dumps(v, sort_keys=True)))
    run.client.log_inputs(run.run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags)])
    return ds.digest
