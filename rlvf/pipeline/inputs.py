"""Resolving `model.init` (a run id, a models:/ URI or a directory) to a local policy,
before a run is opened, so a typo does not leave a run behind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvf.errors import UserError
from rlvf.tracking import schema


@dataclass
class PolicySource:
    """Where a policy to start from (model.init) came from."""

    directory: Path
    run_id: str | None = None
    invariants: dict[str, Any] | None = None
    method: str | None = None


def _download_policy(artifact_uri: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri))
    except (MlflowException, OSError) as e:
        raise UserError(f"model.init: could not download {artifact_uri}: {str(e).splitlines()[0]}") from None
    policy = local / "artifacts" / "policy"
    if not policy.is_dir():
        raise UserError(f"model.init: {artifact_uri} is not an rlvf policy model (no artifacts/policy)")
    return policy


def resolve_init(init: str | None) -> PolicySource | None:
    """model.init -> a local policy directory (+ the run it came from)."""
    from rlvf.tracking.runs import get_run, looks_like_run_id

    if not init:
        return None
    path = Path(init).expanduser()
    if path.is_dir():
        return PolicySource(path)
    run_id = None
    if init.startswith("models:/"):
        directory = _download_policy(init)
        try:
            import mlflow

            name_ver = init[len("models:/") :]
            client = mlflow.MlflowClient()
            if "@" in name_ver:
                name, alias = name_ver.split("@", 1)
                run_id = client.get_model_version_by_alias(name, alias).run_id
            elif "/" in name_ver:
                name, ver = name_ver.rsplit("/", 1)
                run_id = client.get_model_version(name, ver).run_id
        except Exception:
            run_id = None
    elif looks_like_run_id(init) or init.startswith("runs:/"):
        run_id = init[len("runs:/") :].split("/", 1)[0] if init.startswith("runs:/") else init
        get_run(run_id, "model.init")
        directory = _download_policy(f"runs:/{run_id}/{schema.MODEL_ARTIFACT}")
    else:
        raise UserError(f"model.init: '{init}' is neither a directory, a run id nor a models:/ URI")
    inv = method = None
    if run_id:
        from rlvf.tracking.runs import client

        tags = client().get_run(run_id).data.tags
        method = tags.get(schema.TAG_METHOD)
        try:
            inv = json.loads(tags.get(schema.TAG_INVARIANTS, "null"))
        except ValueError:
            inv = None
    return PolicySource(directory, run_id, inv, method)


def init_label(cfg: Any, init: PolicySource | None) -> str:
    """The policy name recorded on samples drawn from the base or from model.init."""
    from rlvf.pipeline.base import policy_label

    return policy_label(cfg) if init is None else f"init:{init.run_id or init.directory.name}"
