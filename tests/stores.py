"""A real sqlite MLflow store in a temp dir, for a test module's `store` fixture.

MLflow's tracking URI, active experiment and run are process-global (module variables and
MLFLOW_* variables that child processes inherit): a module that points them at its own store
must give them back as it found them, or the next module logs into a store it never made.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@functools.cache
def _template() -> Path:
    """An empty sqlite store with MLflow's schema, made once per test process: a new store
    otherwise runs every MLflow migration (about 2 s of CPU each time, in every process that
    opens it first)."""
    from mlflow import MlflowClient

    path = Path(tempfile.mkdtemp(prefix="rlvf-store-template-")) / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def seed_store(path: Path) -> str:
    """Put an empty, migrated MLflow store at `path` (a .db file that does not exist yet) and
    return its tracking URI; MLflow then opens it as a new store, without migrating."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template(), path)
    return f"sqlite:///{path}"


@contextlib.contextmanager
def sqlite_store(root: Path, eval_cache: bool = False, **env: str) -> Iterator[Path]:
    """cwd = `root` (so artifacts land under it), MLflow (in-process and in child processes)
    on `root`/mlflow.db; `eval_cache` gives the module its own eval cache instead of the shared
    one (for tests of the cache itself); `env`: further variables for the module."""
    import mlflow

    uri = seed_store(root / "mlflow.db")
    sets = {"MLFLOW_TRACKING_URI": uri, **env}
    if eval_cache:
        sets["RLVF_EVAL_CACHE"] = str(root / "evalcache")
    keys = {"MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", *sets}
    saved = {k: os.environ.pop(k, None) for k in keys}
    os.environ.update(sets)
    old_cwd = os.getcwd()
    os.chdir(root)
    mlflow.set_tracking_uri(uri)
    try:
        yield root
    finally:
        mlflow.set_tracking_uri("")
        os.chdir(old_cwd)
        for k in keys:
            os.environ.pop(k, None)
        os.environ.update({k: v for k, v in saved.items() if v is not None})
