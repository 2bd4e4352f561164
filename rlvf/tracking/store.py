"""First touch of the MLflow store, safe when several rlvf processes start at once.

Why: MLflow 3.17 creates a new sqlite file's schema (and its alembic migrations, and the
"Default" experiment) in whichever process touches it first, with no guard: four processes
started together on a new file end with one run and three tracebacks (`table ... already
exists`, `duplicate column name`). `set_experiment` on a new name races the same way
(create fails on the unique name). Here the first touch and the experiment's
create-or-get run under an exclusive lock on the sqlite file's directory, and creation
retries as a get when another process won. Against a server (HTTP) the server owns the
schema; only the create-or-get retry applies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rlvf.errors import UserError

_READY: set[str] = set()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (None for anything else)."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:") :]
    if not rest.startswith("///"):
        return None
    path = rest[3:].split("?", 1)[0]
    # sqlite:////abs/path -> /abs/path ; sqlite:///rel/path -> rel/path
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive lock for schema creation on a sqlite store (nothing for other stores).

    The database's directory is locked (flock on the directory itself), so no lock file
    is left beside the user's database.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    parent = db.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _touch(uri: str) -> None:
    """Make MLflow create (or migrate) the store's schema and Default experiment now."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    c.search_experiments(max_results=1)
    c.search_registered_models(max_results=1)


def open_store(uri: str | None = None) -> str:
    """Initialise the store once per process, under the lock, and end the runs of this
    host whose process died (`rlvf.tracking.liveness`); returns its URI."""
    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    if uri not in _READY:
        with store_lock(uri):
            _touch(uri)
        _READY.add(uri)
        from mlflow import MlflowClient

        from rlvf.tracking.liveness import sweep

        for rid in sweep(MlflowClient(tracking_uri=uri)):
            print(f"[rlvf] run {rid} was abandoned (its process is gone): marked FAILED", file=sys.stderr)
    return uri


def experiment_id(name: str, uri: str | None = None, attempts: int = 5) -> str:
    """The id of experiment `name`, created if missing; concurrent creators all get the same one.

    A deleted experiment of that name is a UserError (MLflow would refuse it with a traceback).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = open_store(uri)
    client = MlflowClient(tracking_uri=uri)
    last: Exception | None = None
    for i in range(attempts):
        with store_lock(uri):
            exp = client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise UserError(
                        f"experiment {name!r} is deleted in {uri}; restore it "
                        f"(mlflow experiments restore -x {exp.experiment_id}) or name another"
                    )
                return exp.experiment_id
            try:
                return client.create_experiment(name)
            except MlflowException as e:  # another process (or server client) created it first
                last = e
        time.sleep(0.05 * (i + 1))
    raise last  # type: ignore[misc]


def use_experiment(name: str) -> str:
    """`mlflow.set_experiment(name)`, safe against concurrent creation; returns the id."""
    import mlflow

    exp_id = experiment_id(name)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id
