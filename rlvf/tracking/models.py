"""Trained policies as MLflow models and registered model versions.

Order matters: the policy is logged as a model first (a LoggedModel, not yet registered),
the eval metrics are attached to it, and only then is a version registered and the alias
moved. So a registered version never exists without its metrics, and a run that fails
before the end registers nothing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rlvf.tracking import schema
from rlvf.tracking.runs import Run, base_model_tag

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
REWARD_PYFUNC_CODE = Path(__file__).with_name("pyfunc_reward.py")


def registered_model_name(base_policy: str, kind: str = "") -> str:
    """One registered model per base model: 'rlvf-<base>' with unusual characters as '-';
    reward models get their own, 'rlvf-rm-<base>', so an alias never moves from a policy
    to a reward model."""
    prefix = f"rlvf-{kind}-" if kind else "rlvf-"
    return prefix + re.sub(r"[^A-Za-z0-9_.-]+", "-", base_model_tag(base_policy)).strip("-")


def log_policy_model(run: Run, policy_dir: Path, *, tags: Mapping[str, str] | None = None) -> str | None:
    """Log the policy in `policy_dir` as the run's MLflow model `model/`; returns its model id
    (None: the tracking server is away and the policy went into the run's spool).
    Metrics the run logs from now on attach to this model too."""
    call = getattr(run.client, "call", None)  # a ResilientClient: retried, else spooled
    if call is not None:
        return call(
            "log_model", lambda p, tags: _log_model(run, p, tags), Path(policy_dir), tags=dict(tags or {})
        )
    return _log_model(run, Path(policy_dir), tags)


def _log_model(run: Run, policy_dir: Path, tags: Mapping[str, str] | None) -> str:
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    import rlvf

    signature = infer_signature(
        model_input=["def add(a, b):\n"],
        model_output=["    return a + b\n"],
        params={"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 256, "seed": 0},
    )
    info = mlflow.pyfunc.log_model(
        name=schema.MODEL_ARTIFACT,
        python_model=str(PYFUNC_CODE),
        artifacts={"policy": str(policy_dir)},
        pip_requirements=[f"rlvf=={rlvf.__version__}"],
        signature=signature,
        tags=dict(tags or {}),
    )
    run.model_id = info.model_id
    return info.model_id


def log_reward_model(run: Run, reward_dir: Path, *, tags: Mapping[str, str] | None = None) -> str:
    """Log the reward model in `reward_dir` as the run's MLflow model `model/` (a pyfunc that
    scores prompt/completion rows; its signature comes from `predict`'s type hints); returns
    its model id."""
    import mlflow.pyfunc

    import rlvf
    from rlvf.rewards.reward_model import ARTIFACT

    info = mlflow.pyfunc.log_model(
        name=schema.MODEL_ARTIFACT,
        python_model=str(REWARD_PYFUNC_CODE),
        artifacts={ARTIFACT: str(reward_dir)},
        pip_requirements=[f"rlvf=={rlvf.__version__}"],
        tags=dict(tags or {}),
    )
    run.model_id = info.model_id
    return info.model_id


@contextlib.contextmanager
def active_model(model_id: str | None) -> Iterator[None]:
    """Make metrics logged without an explicit model id (e.g. by `log_eval_result`) attach to `model_id`."""
    import mlflow

    if not model_id:
        yield
        return
    mlflow.set_active_model(model_id=model_id)
    try:
        yield
    finally:
        mlflow.clear_active_model()


def register_policy(
    run: Run,
    model_id: str,
    *,
    name: str,
    alias: str | None,
    tags: Mapping[str, Any],
) -> Any:
    """Register the logged model `model_id` as a new version of `name`, tag it, move `alias`;
    returns the version (None: the server is away and the registration waits in the spool)."""
    call = getattr(run.client, "call", None)
    if call is not None:
        return call(
            "register",
            lambda **kw: _register(run, **kw),
            model_id=model_id,
            name=name,
            alias=alias,
            tags=dict(tags),
        )
    return _register(run, model_id=model_id, name=name, alias=alias, tags=tags)


def _register(
    run: Run, *, model_id: str | None, name: str, alias: str | None, tags: Mapping[str, Any]
) -> Any:
    import contextlib
    import io

    import mlflow

    from rlvf.console import verbose

    # MLflow prints "Successfully registered ..." / "Created version ..." itself; rlvf says it once
    chatter = contextlib.nullcontext() if verbose() else contextlib.redirect_stderr(io.StringIO())
    with chatter:
        version = mlflow.register_model(
            f"models:/{model_id}", name, tags={k: str(v) for k, v in tags.items()}, await_registration_for=0
        )
    if alias:
        run.client.set_registered_model_alias(name, alias, version.version)
    run.tags({"rlvf.registered_model": name, "rlvf.registered_version": str(version.version)})
    return version
