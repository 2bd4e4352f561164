"""One MLflow run per entry-point call, in the layout of `rlvf.tracking.schema`.

    with start_run(cfg, kind="train") as run:
        run.metrics({"train/loss": 0.7}, step=3)    # buffered, sent with log_batch
        run.log_jsonl("data/pairs.jsonl", pairs)
    # -> FINISHED; an exception -> FAILED, Ctrl-C / SIGTERM -> KILLED, with the error recorded

- Store: MLflow's own default (sqlite `mlflow.db` in the working directory) unless
  MLFLOW_TRACKING_URI says otherwise, so `mlflow ui` in the project shows the runs.
- Attaches to the run `mlflow run` created (it exports MLFLOW_RUN_ID) instead of starting
  a second one; inside another active run it starts a nested one.
- The config goes in as `cfg.`-prefixed params (one `log_batch`), as tags (method, base
  model, config_hash, invariants, git commit, parent run) and as `config.yaml`.
- Metrics are buffered and sent with `MlflowClient.log_batch` (one sqlite transaction per
  batch rather than per value: 1,000 single `log_metric` calls take ~18 s on sqlite).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rlvf.errors import UserError
from rlvf.records import RecordError, write_jsonl
from rlvf.tracking import schema
from rlvf.tracking.spool import spooled

TAG_ERROR = "rlvf.error"  # the one-line error of a FAILED / KILLED run
MAX_TAG_CHARS = 5000
MAX_PARAM_CHARS = 6000


class RunSpooled(UserError):
    """The run ended while its tracking server was unreachable: it is kept in a spool on disk
    (`rlvf.tracking.spool`) for `rlvf upload`. Exit status 75 (EX_TEMPFAIL): try again later."""

    code = 75


class RunKilled(BaseException):
    """Raised in the main thread on SIGTERM or SIGHUP so the run ends as KILLED (like Ctrl-C).

    `code` is the shell's exit status for that signal (143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, message: str, code: int = 143) -> None:
        super().__init__(message)
        self.code = code


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # transformers' MLflowCallback would log every TrainingArguments field as an unprefixed
    # param and can clash with ours; rlvf logs through its own callback (report_to=[]).
    os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")
    import logging

    logging.getLogger("mlflow.tracking.fluent").setLevel(logging.WARNING)  # "Active model is set ..."
    from rlvf.tracking.spool import bound_http_retries

    bound_http_retries()


def tracking_uri() -> str:
    """The store in use: MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db)."""
    import mlflow

    return mlflow.get_tracking_uri()


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def git_commit() -> str:
    """The commit of the rlvf checkout in use (or of the working directory), '' if none.
    A trailing '+dirty' says the tree had uncommitted changes."""
    here = Path(__file__).resolve().parents[2]
    for where in (here, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
            )
            if out.returncode != 0:
                continue
            commit = out.stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=5,
            )
            return commit + ("+dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return ""


def param_value(v: Any) -> str:
    """How a config value is written as an MLflow param: strings as is, the rest as JSON."""
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return s if len(s) <= MAX_PARAM_CHARS else s[: MAX_PARAM_CHARS - 3] + "..."


def config_params(cfg: Any) -> dict[str, str]:
    """The full normalised config as `cfg.`-prefixed params."""
    return {f"{schema.PARAM_PREFIX}{k}": param_value(v) for k, v in cfg.flat().items()}


def get_run(run_id: str, what: str = "run"):
    """The MLflow run `run_id`, or a UserError naming the store when it does not exist."""
    from mlflow.exceptions import MlflowException

    run_id = (run_id or "").strip()
    if not run_id:
        raise UserError(f"{what}: empty run id")
    try:
        return client().get_run(run_id)
    except MlflowException:
        raise UserError(f"{what}: no MLflow run '{run_id}' in {tracking_uri()}") from None


def looks_like_run_id(text: str) -> bool:
    t = text.strip()
    return len(t) == 32 and all(c in "0123456789abcdef" for c in t)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(e).__name__}: {msg}" if not isinstance(e, (UserError, RecordError)) else msg


class Run:
    """The run an entry point writes to: buffered metrics, tags, artifacts.

    Metrics are buffered and sent with `log_batch` by one background thread; while training
    (`background(2.0)`, set by the tracking callback) a batch goes out every 2 s so training
    never waits on the store. Otherwise, and at the end, `flush()` sends the rest and waits,
    so nothing else writes to the store while a batch is in flight.
    """

    def __init__(self, run_id: str, mlflow_client: Any, flush_every_s: float | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.run_id = run_id
        self.client = mlflow_client
        self.flush_every_s = flush_every_s
        self._metrics: list[Any] = []
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlvf-log")
        self._pending: list[Any] = []
        self.model_id: str | None = None  # the logged model metrics attach to, once there is one
        self.health: list[str] = []
        self.invariants_hash = ""
        self.logged_steps: dict[str, int] = {}  # a resumed run's metrics: key -> last step it has

    # ---- metrics, buffered
    def metric(self, key: str, value: float, step: int = 0, timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric

        if step <= self.logged_steps.get(key, -1):
            return  # a resumed run already has it (the steps since the checkpoint are redone)
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        with self._lock:
            self._metrics.append(Metric(key, float(value), ts, int(step), model_id=self.model_id))
        if self.flush_every_s is not None and time.monotonic() - self._last_flush > self.flush_every_s:
            self.flush(wait=False)

    def background(self, every_s: float | None) -> None:
        """Send buffered metrics every `every_s` seconds without waiting (None: only on flush)."""
        if every_s is None:
            self.flush()
        self.flush_every_s = every_s

    def metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        ts = int(time.time() * 1000)
        for k, v in values.items():
            self.metric(k, v, step, ts)

    def flush(self, wait: bool = True) -> None:
        """Send the buffered metrics (in the background); with `wait`, block until all sent."""
        with self._lock:
            batch, self._metrics = self._metrics, []
            self._last_flush = time.monotonic()
            if batch:
                self._pending.append(self._pool.submit(self.client.log_batch, self.run_id, metrics=batch))
            pending = self._pending if wait else []
            if wait:
                self._pending = []
        for fut in pending:
            fut.result()

    def close(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)

    # ---- tags and params
    def tags(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(k, _tag_value(v)) for k, v in values.items() if v is not None]
        if tags:
            self._write(tags=tags)

    def tag(self, key: str, value: Any) -> None:
        self.tags({key: value})

    def params(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, param_value(v)) for k, v in values.items()]
        if params:
            self._write(params=params)

    def _write(self, **batch: Any) -> None:
        """A synchronous log_batch through the logging thread, so the store sees one writer."""
        self.flush(wait=False)
        self._pool.submit(self.client.log_batch, self.run_id, **batch).result()

    def add_health(self, flag: str) -> None:
        if flag not in self.health:
            self.health.append(flag)
            self.tag(schema.TAG_HEALTH, ",".join(self.health))

    # ---- artifacts
    def log_text(self, path: str, text: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def log_dict(self, path: str, obj: Any) -> None:
        self.log_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False))

    def log_jsonl(self, path: str, rows: Iterable[Any]) -> int:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="rlvf-art-") as tmp:
            local = Path(tmp) / Path(path).name
            n = write_jsonl(local, rows)
            parent = str(Path(path).parent)
            self.client.log_artifact(self.run_id, str(local), None if parent in ("", ".") else parent)
        return n

    def log_artifact(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        p = Path(local_path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_dir)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_dir)

    def artifact_uri(self, path: str = "") -> str:
        base = self.client.get_run(self.run_id).info.artifact_uri.rstrip("/")
        return f"{base}/{path}" if path else base


def _tag_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return s if len(s) <= MAX_TAG_CHARS else s[: MAX_TAG_CHARS - 3] + "..."


def run_tags(
    cfg: Any,
    kind: str,
    *,
    method: str | None = None,
    parent_run_id: str | None = None,
    invariants: Mapping[str, Any] | None = None,
    base_revision: str | None = None,
) -> dict[str, str]:
    """The rlvf.* tags of a run of `cfg`."""
    from rlvf.config.loader import short_hash

    inv = dict(invariants) if invariants is not None else cfg.invariants()
    if base_revision and inv.get("base_revision") is None and "base_model" in inv:
        inv["base_revision"] = base_revision  # e.g. the embedded model's bootstrap key
    tags = {
        schema.TAG_METHOD: method or cfg.method,
        schema.TAG_KIND: kind,
        schema.TAG_BASE_MODEL: base_model_tag(cfg["model.policy"]),
        schema.TAG_CONFIG_HASH: cfg.hash,
        schema.TAG_INVARIANTS_HASH: short_hash(inv),
        schema.TAG_INVARIANTS: json.dumps(inv, sort_keys=True),
        schema.TAG_GIT_COMMIT: git_commit(),
    }
    rev = base_revision or cfg["model.revision"]
    if rev:
        tags[schema.TAG_BASE_REVISION] = rev
    if parent_run_id:
        tags[schema.TAG_PARENT_RUN] = parent_run_id
    label = cfg.get("tracking.label")
    if label:
        tags[schema.TAG_LABEL] = label
    from rlvf.methods import scan_params

    scan = scan_params(cfg)  # the method's declared free parameters (e.g. data.n_pairs)
    if scan:
        tags[schema.TAG_SCAN_PARAM] = json.dumps(scan)
    return tags


def base_model_tag(policy: str) -> str:
    """'embedded' -> 'embedded:default'; anything else as given."""
    return "embedded:default" if policy == "embedded" else policy


class _Signals:
    """SIGTERM and SIGHUP (a closed terminal or ssh session) raise RunKilled (so the run ends
    KILLED, like Ctrl-C); once `shield()` is called, SIGINT, SIGTERM and SIGHUP are ignored so recording the end of the run cannot itself be
    cut short (`mlflow run` answers Ctrl-C by sending the entry point a SIGTERM right away).
    Main thread only; elsewhere it does nothing."""

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.shielded = False
        self.old: dict[int, Any] = {}

    def _term(self, signum, frame):
        if not self.shielded:
            if signum == signal.SIGHUP:
                raise RunKilled("hung up (SIGHUP)", 129)
            raise RunKilled("terminated (SIGTERM)")

    def __enter__(self) -> _Signals:
        if self.active:
            try:
                self.old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
                signal.signal(signal.SIGTERM, self._term)
                signal.signal(signal.SIGHUP, self._term)
            except (ValueError, OSError):
                self.active = False
        return self

    def shield(self) -> None:
        self.shielded = True
        if self.active:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            for s, h in self.old.items():
                with contextlib.suppress(ValueError, OSError, TypeError):
                    signal.signal(s, h)


@contextlib.contextmanager
def start_run(
    cfg: Any,
    kind: str,
    *,
    method: str | None = None,
    parent_run_id: str | None = None,
    invariants: Mapping[str, Any] | None = None,
    base_revision: str | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    child_of: str | None = None,
    resume: str | None = None,
) -> Iterator[Run]:
    """Open (or attach to) the run for one entry-point call of `cfg`; see the module doc.

    `child_of`: open a new run nested under that run, which must be the active one (a round
    of an iterative method); it never attaches to the run `mlflow run` created, which is
    the parent's.

    On an exception the run ends FAILED (KILLED for Ctrl-C / SIGTERM) with `rlvf.error`
    holding the one-line error and, for unexpected errors, `error.txt` the traceback; the
    exception propagates. `resume`: reopen that ended run instead (checked by
    `rlvf.pipeline.resume`): params it has are kept, metrics at steps it has are not re-sent.
    """
    _quiet_mlflow()
    import mlflow
    from mlflow.exceptions import MlflowException

    from rlvf.tracking import liveness
    from rlvf.tracking.store import open_store, use_experiment

    open_store()
    env_run = "" if child_of else os.environ.get("MLFLOW_RUN_ID", "").strip()
    if resume:
        if env_run and env_run != resume:  # `mlflow run -P tracking.resume=...` made one for nothing
            liveness.discard_unopened_env_run(f"replaced by the resumed run {resume}")
            env_run = ""
        _reopen(resume)
    elif env_run:
        get_run(env_run, "MLFLOW_RUN_ID")
    elif cfg.get("tracking.experiment") and not os.environ.get("MLFLOW_EXPERIMENT_ID") and not child_of:
        use_experiment(cfg["tracking.experiment"])
    nested = mlflow.active_run() is not None and not env_run and not resume
    # MLflow attaches a run started without a run id to MLFLOW_RUN_ID (hidden for a child),
    # and unsets it when any run ends (put back for the parent when a child ends).
    hidden = os.environ.pop("MLFLOW_RUN_ID", None) if child_of else None
    from rlvf.tracking import runinfo

    name = cfg.get("tracking.run_name") or (None if resume else runinfo.run_name(cfg))
    try:
        active = mlflow.start_run(
            run_id=resume or env_run or None,
            run_name=None if env_run or resume else name,
            nested=nested,
            parent_run_id=child_of,
        )
    except MlflowException as e:
        raise UserError(f"could not start an MLflow run in {tracking_uri()}: {_one_line(e)}") from None
    finally:
        if hidden is not None:
            os.environ["MLFLOW_RUN_ID"] = hidden
    from rlvf.tracking.spool import ResilientClient, run_folder

    rid = active.info.run_id
    if env_run and name and runinfo.is_generated_name(active.info.run_name):
        with contextlib.suppress(Exception):  # `mlflow run` named it at random: name it by what it is
            client().set_tag(rid, runinfo.RUN_NAME, name)
    t_open = time.perf_counter()
    outage_s = float(cfg.get("tracking.outage_s") or 60.0)
    run = Run(
        rid, ResilientClient(client(), rid, tracking_uri(), outage_s, lambda: run_folder(cfg, rid) / "spool")
    )
    recorded = client().get_run(resume) if resume else None
    if recorded is not None:
        run.logged_steps = {m.key: m.step for m in recorded.data._metric_objs}
    print(
        f"[rlvf] {cfg.method} run {run.run_id} (recipe {getattr(cfg, 'recipe', '?')}, config_hash {cfg.hash}) "
        f"in {tracking_uri()}",
        file=sys.stderr,
        flush=True,
    )
    status = "FINISHED"
    with _Signals() as signals:
        try:
            params = config_params(cfg)
            if recorded is not None:  # MLflow refuses a changed param; the hashed ones are equal
                params = {k: v for k, v in params.items() if k not in recorded.data.params}
            run.params(params)
            tags = run_tags(
                cfg,
                kind,
                method=method,
                parent_run_id=parent_run_id,
                invariants=invariants,
                base_revision=base_revision,
            )
            tags.update(extra_tags or {})
            tags[liveness.TAG_PROC] = liveness.proc_tag()
            run.tags(tags)
            run.invariants_hash = tags[schema.TAG_INVARIANTS_HASH]
            if recorded is None:
                run.log_text(schema.CONFIG_ARTIFACT, cfg.to_yaml())
            yield run
            signals.shield()
            run.flush()
            if not spooled(run):
                runinfo.describe(run, cfg, time.perf_counter() - t_open)
        except BaseException as e:
            signals.shield()
            if isinstance(e, (KeyboardInterrupt, RunKilled)):
                status = "KILLED"
                _record_error(run, "interrupted" if isinstance(e, KeyboardInterrupt) else str(e), None)
            else:
                status = "FAILED"
                expected = isinstance(e, (UserError, RecordError))
                _record_error(run, _one_line(e), None if expected else traceback.format_exc())
            raise
        finally:
            signals.shield()
            with contextlib.suppress(Exception):
                run.close()
            with contextlib.suppress(Exception):  # what `mlflow run` may overwrite; see liveness
                run.client.set_tag(run.run_id, liveness.TAG_STATUS, status)
                if env_run and status != "FINISHED" and not spooled(run):
                    liveness.restore_after_wrapper(run.run_id, status)
            if spooled(run):  # the end goes into the spool too; `rlvf upload` records it
                run.client.set_terminated(run.run_id, status)
                if status != "FINISHED":  # the error follows; the run waits on disk all the same
                    where = spooled(run).root
                    print(
                        f"[rlvf] run {run.run_id} ({status}) is kept in {where}: rlvf upload {where}",
                        file=sys.stderr,
                    )
            with contextlib.suppress(Exception):
                if mlflow.active_run() is not None and mlflow.active_run().info.run_id == run.run_id:
                    mlflow.end_run(status)
                else:
                    run.client.set_terminated(run.run_id, status)
            if hidden is not None:
                os.environ["MLFLOW_RUN_ID"] = hidden
            with contextlib.suppress(Exception):
                mlflow.clear_active_model()
    spool = spooled(run)
    if spool is not None:
        raise RunSpooled(
            f"tracking server {tracking_uri()} was unreachable: run {run.run_id} is kept in "
            f"{spool.root}; when the server is back: rlvf upload {spool.root}"
        )


def _reopen(run_id: str) -> None:
    """Before an ended run is RUNNING again: name this process as its owner (so no sweep takes
    it for abandoned) and drop the error and status of its last end."""
    from rlvf.tracking import liveness

    c = client()
    c.set_tag(run_id, liveness.TAG_PROC, liveness.proc_tag())
    for key in (TAG_ERROR, liveness.TAG_STATUS, "mlflow.note.content"):
        with contextlib.suppress(Exception):
            c.delete_tag(run_id, key)


def _record_error(run: Run, message: str, trace: str | None) -> None:
    with contextlib.suppress(Exception):
        run.flush()
    with contextlib.suppress(Exception):
        run.tags({TAG_ERROR: message, "mlflow.note.content": f"**Error:** {message}"})
    if trace:
        with contextlib.suppress(Exception):
            run.log_text("error.txt", trace)
