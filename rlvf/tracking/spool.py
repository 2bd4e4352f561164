"""Runs that outlive their tracking server: retries with back-off, then a spool on disk.

Why: against `mlflow server`, MLflow's own client retries each request for ~4 minutes
(7 retries, back-off factor 2, 120 s timeout) and rlvf's queued metric batches wait one after
another, so a server that goes away makes a run silent for as long as it stays away and then
fails it, losing the trained model.

Rule: rlvf bounds MLflow's HTTP retries for its own process (`bound_http_retries`; a value
the user exported wins). Every write of a run goes through `ResilientClient`: a request that
fails because the server cannot be reached is retried with back-off (1, 2, 4 ... 10 s) while
the outage is shorter than `tracking.outage_s` (default 60 s), so a short outage loses
nothing. A longer one is reported in one line naming the server, and from then on the run's
writes (metrics, params, tags, artifacts, the trained model, its registration, the run's
end) go, in order, into a journal under the run's folder (`<run folder>/spool`); training
and evaluation go on. `rlvf upload SPOOL_DIR` replays the journal once the server is back.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# MLflow's defaults (7 retries, factor 2, 120 s) make one failed request take ~4 minutes.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
JOURNAL = "journal.jsonl"
META = "spool.json"
PROGRESS = "uploaded.json"
READS = ("get_", "search_", "list_", "download_")


def bound_http_retries() -> None:
    """Short MLflow HTTP retries for this process (rlvf retries and spools on its own)."""
    for k, v in HTTP_LIMITS.items():
        os.environ.setdefault(k, v)


def run_folder(cfg: Any, run_id: str) -> Path:
    """The run's own folder: tracking.output_dir/<run id>, by default $RLVF_HOME/runs/<run id>."""
    from rlvf.models.bootstrap import rlvf_home

    root = cfg.get("tracking.output_dir")
    return (Path(root).expanduser() if root else rlvf_home() / "runs") / run_id


def unreachable(e: BaseException) -> bool:
    """Whether `e` says the server could not be reached (not that it refused the request)."""
    import requests

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
        text = str(cur)
        if "API request to" in text and (
            "failed with exception" in text or "failed with timeout exception" in text
        ):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


# ---------------------------------------------------------------- journal encoding


def _encode(v: Any, files: Path, counter: list[int]) -> Any:
    if isinstance(v, Path):  # a local file or folder: copied into the spool (it may be temporary)
        counter[0] += 1
        dest = files / str(counter[0]) / v.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if v.is_dir():
            shutil.copytree(v, dest)
        else:
            shutil.copy2(v, dest)
        return {"__file__": str(dest.relative_to(files.parent))}
    if hasattr(v, "to_proto"):  # an MLflow entity (Metric, Param, RunTag, DatasetInput, ...)
        proto = v.to_proto()
        return {
            "__entity__": f"{type(v).__module__}:{type(v).__qualname__}",
            "__proto__": proto.DESCRIPTOR.full_name,
            "bytes": base64.b64encode(proto.SerializeToString()).decode(),
        }
    if isinstance(v, (list, tuple)):
        return [_encode(x, files, counter) for x in v]
    if isinstance(v, dict):
        return {str(k): _encode(x, files, counter) for k, x in v.items()}
    return v


def _load(path: str) -> Any:
    module, name = path.split(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def decode(v: Any, root: Path) -> Any:
    if isinstance(v, list):
        return [decode(x, root) for x in v]
    if isinstance(v, dict):
        if "__file__" in v:
            return root / v["__file__"]
        if "__entity__" in v:
            from google.protobuf import symbol_database

            entity = _load(v["__entity__"])  # importing it registers its proto messages
            proto_class = symbol_database.Default().GetSymbol(v["__proto__"])
            return entity.from_proto(proto_class.FromString(base64.b64decode(v["bytes"])))
        return {k: decode(x, root) for k, x in v.items()}
    return v


class Spool:
    """The journal of one run's writes, in order, with the files they name."""

    def __init__(self, root: Path, run_id: str, tracking_uri: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._counter = [len(list((self.root / "files").glob("*")))]
        meta = self.root / META
        if not meta.exists():
            meta.write_text(json.dumps({"run_id": run_id, "tracking_uri": tracking_uri}, indent=1))

    def record(self, op: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            entry = {
                "op": op,
                "args": _encode(list(args), self.root / "files", self._counter),
                "kwargs": _encode(kwargs, self.root / "files", self._counter),
            }
            with (self.root / JOURNAL).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
                fh.flush()
                os.fsync(fh.fileno())


class ResilientClient:
    """An `MlflowClient` whose writes survive the server going away (see the module doc).

    Reads (`get_*`, `search_*`) are retried the same way but cannot be spooled: once the run
    is spooled they raise, and callers fall back (e.g. a dataset logged without a source URI).
    """

    def __init__(self, client: Any, run_id: str, uri: str, outage_s: float, spool_dir: Callable[[], Path]):
        self.client = client
        self.run_id = run_id
        self.uri = uri
        self.outage_s = outage_s
        self._spool_dir = spool_dir
        self.spool: Spool | None = None
        self._down_since: float | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self.call(name, attr, *args, **kwargs)

    def call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) with retries while the outage is short, else journaled as `op`."""
        if op in ("log_artifact", "log_artifacts") and len(args) > 1:
            args = (args[0], Path(args[1]), *args[2:])  # the spool keeps a copy of the file
        delay = 1.0
        while True:
            if self.spool is not None:
                return self._offline(op, args, kwargs)
            t0 = time.monotonic()
            try:
                out = fn(*args, **kwargs)
            except Exception as e:
                if not unreachable(e):
                    raise
                with self._lock:
                    self._down_since = min(self._down_since or t0, t0)
                    down = time.monotonic() - self._down_since
                    if down >= self.outage_s and self.spool is None:
                        self._go_offline(down)
                if self.spool is None:
                    time.sleep(max(0.1, min(delay, self.outage_s - down)))
                    delay = min(2 * delay, 10.0)
                continue
            with self._lock:
                self._down_since = None
            return out

    def _offline(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from mlflow.exceptions import MlflowException

        if op.startswith(READS):
            raise MlflowException(f"tracking server {self.uri} unreachable (run spooled)")
        assert self.spool is not None
        self.spool.record(op, *args, **kwargs)
        return None

    def _go_offline(self, down: float) -> None:
        self.spool = Spool(self._spool_dir(), self.run_id, self.uri)
        print(
            f"[rlvf] tracking server {self.uri} unreachable for {down:.0f}s: training goes on; "
            f"the run is kept in {self.spool.root} (send it later: rlvf upload {self.spool.root})",
            file=sys.stderr,
            flush=True,
        )


def spooled(run: Any) -> Spool | None:
    """The spool of an rlvf `Run` (None while its server is reachable)."""
    return getattr(run.client, "spool", None)


# ---------------------------------------------------------------- upload


def upload(spool_dir: Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """Replay a spool into its run (reopened if a sweep ended it meanwhile); resumable: the
    entries already sent are counted in `uploaded.json` and not sent twice."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from rlvf.errors import UserError
    from rlvf.tracking import liveness
    from rlvf.tracking.models import log_policy_model, register_policy
    from rlvf.tracking.runs import Run

    root = Path(spool_dir).expanduser()
    if not (root / META).is_file():
        raise UserError(f"upload: {root} is not an rlvf spool (no {META})")
    meta = json.loads((root / META).read_text())
    run_id = meta["run_id"]
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or meta["tracking_uri"]
    bound_http_retries()
    client = MlflowClient(tracking_uri=uri)
    try:
        recorded = client.get_run(run_id)
    except MlflowException as e:
        if unreachable(e):
            raise UserError(f"upload: tracking server {uri} is still unreachable; try again later") from None
        raise UserError(f"upload: no run {run_id} in {uri}") from None
    entries = [json.loads(line) for line in (root / JOURNAL).read_text().splitlines() if line.strip()]
    progress = root / PROGRESS
    done = json.loads(progress.read_text())["entries"] if progress.exists() else 0
    if done >= len(entries):
        raise UserError(f"upload: {root} was already uploaded to run {run_id}")
    mlflow.set_tracking_uri(uri)
    client.set_tag(run_id, liveness.TAG_PROC, liveness.proc_tag())  # no sweep ends it meanwhile
    for key in (liveness.TAG_ERROR, "mlflow.note.content"):
        with contextlib.suppress(MlflowException):
            client.delete_tag(run_id, key)
    out: dict[str, Any] = {"run_id": run_id, "entries": len(entries) - done}
    run = Run(run_id, client)
    status = "FINISHED"
    model_id = recorded.data.tags.get("rlvf.spool_model_id")
    with mlflow.start_run(run_id=run_id):
        for i, entry in enumerate(entries[done:], start=done):
            op, args, kwargs = entry["op"], decode(entry["args"], root), decode(entry["kwargs"], root)
            if op == "log_model":
                model_id = log_policy_model(run, *args, **kwargs)
                client.set_tag(run_id, "rlvf.spool_model_id", model_id)
            elif op == "register":
                version = register_policy(run, kwargs.pop("model_id") or model_id, **kwargs)
                out["registered"] = (kwargs["name"], str(version.version))
            elif op == "set_terminated":
                status = args[1] if len(args) > 1 else kwargs.get("status", status)
            else:
                if op == "log_batch" and model_id:
                    for m in kwargs.get("metrics") or []:
                        if getattr(m, "_model_id", "missing") is None:
                            m._model_id = model_id  # eval metrics attach to the model, as online
                getattr(client, op)(*args, **kwargs)
            progress.write_text(json.dumps({"entries": i + 1}))
        run.close()
        mlflow.end_run(status)
    out["status"] = status
    return out
