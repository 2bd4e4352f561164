"""General-capability evaluation through lm-eval, on the same policy the code suites judge.

Post-training for code can quietly cost general ability (seed 004: "if a method bumps IFEval
by 5 points but drops MMLU by 8, that's not a win"), so every evaluation can run lm-eval
tasks beside the code suites: `eval.lm_eval.tasks` names them, real lm-eval task names
unchanged, plus rlvf's own local tasks (`lm_eval_tasks/`, through lm-eval's include path,
their data shipped: nothing comes from a hub). The policy is loaded by rlvf's own loader
(base + adapter through peft, or the full weights) and handed to lm-eval's HF model, so lm-eval
scores exactly what the code suites sampled from.

Metric names (`schema`): lm-eval's ``acc,none`` becomes ``acc`` (the filter is named only when
it is not ``none``: ``exact_match,strict-match`` -> ``exact_match_strict-match``), logged as
``lm_eval/<task>/<metric>`` and ``lm_eval/<task>/<metric>_stderr`` (``_stderr`` like the code
suites' ``pass_at_1_stderr``; a ``/stderr`` leaf would collide with its own metric as a file in
MLflow's file store).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from rlvf.errors import UserError

LOCAL_TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
LOCAL_TASKS = ("rlvf_doctest", "rlvf_solution_mc")
OFFLINE_ALTERNATIVE = (
    "use rlvf's local tasks instead: eval.lm_eval.tasks=[rlvf_doctest,rlvf_solution_mc] "
    "(generate-until with strict exact match, and multiple choice)"
)
BOOTSTRAP_ITERS = 1000  # stderr of non-mean metrics (closed form for acc / exact_match)
_BAD_CHARS = re.compile(r"[^\w.\- /]")


@dataclass(frozen=True)
class LmEvalSettings:
    """Everything besides the policy that decides lm-eval's numbers."""

    tasks: tuple[str, ...] = ()
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 16
    seed: int = 1234

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(dict.fromkeys(self.tasks)))

    @classmethod
    def from_config(cls, cfg: Any) -> LmEvalSettings:
        return cls(
            tasks=tuple(cfg["eval.lm_eval.tasks"] or ()),
            num_fewshot=cfg["eval.lm_eval.num_fewshot"],
            limit=cfg["eval.lm_eval.limit"],
            batch_size=cfg["eval.lm_eval.batch_size"],
            seed=cfg["eval.lm_eval.seed"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "num_fewshot": self.num_fewshot,
            "limit": self.limit,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }


@dataclass
class LmEvalResult:
    """lm-eval's numbers under rlvf's names, with what makes them comparable (versions)."""

    metrics: dict[str, float]  # "<task>/<metric>" and "<task>/<metric>_stderr"
    task_versions: dict[str, str]
    lm_eval_version: str
    lower_is_better: list[str] = field(default_factory=list)  # "<task>/<metric>" names
    raw: dict[str, Any] = field(default_factory=dict)  # lm-eval's results JSON, samples left out
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "task_versions": self.task_versions,
            "lm_eval_version": self.lm_eval_version,
            "lower_is_better": self.lower_is_better,
            "raw": self.raw,
            "samples": self.samples,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LmEvalResult:
        return cls(
            metrics={k: float(v) for k, v in d["metrics"].items()},
            task_versions={k: str(v) for k, v in d["task_versions"].items()},
            lm_eval_version=str(d["lm_eval_version"]),
            lower_is_better=list(d.get("lower_is_better", [])),
            raw=d.get("raw", {}),
            samples=d.get("samples", {}),
            seconds=float(d.get("seconds", 0.0)),
        )


# -- names ----------------------------------------------------------------------------------
def clean(name: str) -> str:
    """A task or metric name as MLflow accepts it on every platform."""
    return _BAD_CHARS.sub("_", name).strip("/") or "_"


def metric_name(key: str) -> tuple[str, bool] | None:
    """lm-eval's ``metric,filter`` / ``metric_stderr,filter`` -> (rlvf metric name, is stderr);
    None for what is not a metric (``alias``, ``name``, ``sample_len``)."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    stderr = metric.endswith("_stderr")
    if stderr:
        metric = metric[: -len("_stderr")]
    name = metric if filt == "none" else f"{metric}_{filt}"
    return clean(name), stderr


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):  # lm-eval writes "N/A" for a stderr it did not compute
        return None
    return f if f == f and abs(f) != float("inf") else None


def normalise(results: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """lm-eval's results (and groups) -> ({"task/metric[_stderr]": value}, lower-is-better)."""
    metrics: dict[str, float] = {}
    for section in ("results", "groups"):
        for task, row in (results.get(section) or {}).items():
            for key, v in row.items():
                named = metric_name(key)
                value = _number(v)
                if named is None or value is None:
                    continue
                name, stderr = named
                metrics[f"{clean(task)}/{name}{'_stderr' if stderr else ''}"] = value
    lower = []
    for task, hib in (results.get("higher_is_better") or {}).items():
        for metric, better in (hib or {}).items():
            if better is False:
                lower.append(f"{clean(task)}/{clean(metric)}")
    return dict(sorted(metrics.items())), sorted(lower)


# -- tasks and reachability -------------------------------------------------------------------
def local_tasks_digest() -> str:
    """What the shipped tasks are (YAMLs, loader and data), for the base's cache key."""
    h = hashlib.sha256()
    for p in sorted(LOCAL_TASKS_DIR.rglob("*")):
        if p.is_file() and p.suffix in (".yaml", ".py", ".jsonl"):
            h.update(p.relative_to(LOCAL_TASKS_DIR).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def hub_offline() -> str | None:
    """Why a dataset hub cannot be reached now (env flags, or no route within 3 s), or None."""
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{k} is set"
    from urllib.parse import urlparse

    from rlvf.pipeline.preflight import reachable

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    if not reachable(host, url.port or (443 if url.scheme != "http" else 80)):
        return f"{host} cannot be reached"
    return None


def task_manager(tasks: tuple[str, ...]) -> Any:
    """lm-eval's TaskManager with rlvf's local tasks; lm-eval's own index (seconds to build) only
    when a task is not local. An unknown task name is one line."""
    from lm_eval.tasks import TaskManager

    local = TaskManager(include_path=str(LOCAL_TASKS_DIR), include_defaults=False)
    if all(t in local.all_tasks for t in tasks):
        return local
    tm = TaskManager(include_path=str(LOCAL_TASKS_DIR))
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise UserError(
            f"eval.lm_eval.tasks: unknown lm-eval task(s) {', '.join(map(repr, unknown))} "
            f"(rlvf's local tasks: {', '.join(LOCAL_TASKS)}; `lm-eval ls tasks` lists lm-eval's)"
        )
    return tm


_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas")  # datasets' local-file builders


def _lm_eval_task_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")  # without importing lm-eval (seconds)
    return Path(spec.origin).parent / "tasks" if spec and spec.origin else None


def _yaml_value(path: Path, key: str, depth: int = 0) -> str | None:
    """`key`'s plain value in a task YAML, following `include:` (lm-eval's tags make the files
    unreadable for a plain YAML loader)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(rf"^{key}:\s*['\"]?([^'\"#\n]+?)['\"]?\s*(#.*)?$", text, re.M)
    if m:
        return m.group(1).strip()
    inc = re.search(r"^include:\s*['\"]?([^'\"#\n]+?)['\"]?\s*$", text, re.M)
    if inc and depth < 3:
        return _yaml_value(path.parent / inc.group(1).strip(), key, depth + 1)
    return None


@lru_cache(maxsize=8)
def _hub_datasets(tasks: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    return tuple(_scan_hub_datasets(list(tasks)).items())


def hub_datasets(tasks: list[str]) -> dict[str, str | None]:
    """task -> the hub dataset its YAML in lm-eval names (see `_scan_hub_datasets`); cached, as
    preflight and the evaluation both ask."""
    return dict(_hub_datasets(tuple(tasks)))


def _scan_hub_datasets(tasks: list[str]) -> dict[str, str | None]:
    """task -> the hub dataset its YAML in lm-eval names (None: not found as a plain task, e.g. a
    group or tag), by a scan of lm-eval's task files: ~3 s, against minutes for lm-eval's index
    on a busy 2-core machine."""
    found: dict[str, str | None] = dict.fromkeys(tasks)
    root = _lm_eval_task_dir()
    if root is None:
        return found
    want = {t: re.compile(rf"^task:\s*['\"]?{re.escape(t)}['\"]?\s*$", re.M) for t in tasks}
    for path in root.rglob("*.yaml"):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for t, pat in want.items():
            if found[t] is None and pat.search(text):
                found[t] = _yaml_value(path, "dataset_path") or ""
    return found


def cached_datasets() -> set[str]:
    """Hub datasets present in the local Hugging Face caches (hub files or datasets' own)."""
    names: set[str] = set()
    try:
        from huggingface_hub import constants

        hub = Path(constants.HF_HUB_CACHE)
        names |= {p.name[len("datasets--") :].replace("--", "/") for p in hub.glob("datasets--*")}
    except (ImportError, OSError):  # pragma: no cover
        pass
    try:
        import datasets.config

        root = Path(datasets.config.HF_DATASETS_CACHE)
        names |= {p.name.replace("___", "/") for p in root.iterdir() if p.is_dir()}
    except (ImportError, OSError):
        pass
    return names


def offline_precheck(tasks: list[str], why: str) -> None:
    """With the hub unreachable: a hub task whose dataset is not cached is one line now, before
    lm-eval builds its task index."""
    cached = cached_datasets()
    for task, ds in hub_datasets(tasks).items():
        if ds is None and not cached:  # a group, a tag or a typo: nothing cached can serve it
            raise UserError(
                f"eval.lm_eval.tasks: {task} is no task in lm-eval's task files (a group, a tag or "
                f"unknown) and nothing can be loaded ({why}; the local datasets cache is empty); "
                + OFFLINE_ALTERNATIVE
            )
        if ds and ds not in cached and ds not in _BUILDERS and not Path(ds).exists():
            raise UserError(
                f"eval.lm_eval.tasks: the data of {task} cannot be loaded ({why}; dataset {ds!r} "
                "is not in the local datasets cache); " + OFFLINE_ALTERNATIVE
            )


@contextmanager
def _datasets_offline(why: str | None) -> Iterator[None]:
    """With the hub unreachable, datasets reads its cache only (no minute of retries)."""
    if not why:
        yield
        return
    keys = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        import datasets.config

        was = datasets.config.HF_HUB_OFFLINE
        datasets.config.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):  # pragma: no cover
        was = None
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if was is not None:
            datasets.config.HF_HUB_OFFLINE = was


def load_task_dict(tasks: tuple[str, ...], num_fewshot: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(TaskManager, lm-eval's task dict) for `tasks`, their data loaded. A task whose data cannot
    be reached (offline, not cached) is one line that names the offline alternative."""
    from lm_eval.tasks import get_task_dict

    remote = [t for t in tasks if t not in LOCAL_TASKS]
    why = hub_offline() if remote else None
    if why:
        offline_precheck(remote, why)
    tm = task_manager(tasks)
    _quiet_lm_eval()
    with _datasets_offline(why):
        try:
            return tm, get_task_dict(list(tasks), tm)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            names = ", ".join(remote) or ", ".join(tasks)
            where = f" ({why}; not in the local datasets cache)" if why else ""
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"eval.lm_eval.tasks: the data of {names} cannot be loaded{where}: {first[:200]}; "
                + OFFLINE_ALTERNATIVE
            ) from None


def check_tasks(settings: LmEvalSettings) -> None:
    """Preflight: every task is known and its data loads now, before a run is opened."""
    if settings.tasks:
        load_task_dict(settings.tasks)


def _quiet_lm_eval() -> None:
    from rlvf.console import verbose

    if not verbose():
        for name in ("lm-eval", "lm_eval"):
            logging.getLogger(name).setLevel(logging.ERROR)


# -- running --------------------------------------------------------------------------------
def _json_safe(obj: Any) -> Any:
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(obj, default=handle_non_serializable))


def _task_objects(tree: Any) -> Iterator[Any]:
    """The Task objects in lm-eval's (possibly nested: groups) task dict."""
    from lm_eval.api.task import Task

    for v in tree.values():
        if isinstance(v, Task):
            yield v
        elif isinstance(v, dict):
            yield from _task_objects(v)


def _prepare(task_dict: Any, settings: LmEvalSettings) -> None:
    """What lm-eval's simple_evaluate does to tasks, and the seeds: num_fewshot (a task's own 0
    stays 0), the few-shot sampler's seed, Python's / numpy's / torch's seeds."""
    import random

    import numpy as np
    import torch

    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    for task in _task_objects(task_dict):
        own = task.get_config("num_fewshot")
        if settings.num_fewshot is not None and own != 0:
            task.set_config(key="num_fewshot", value=settings.num_fewshot)
        elif own is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=settings.seed)


def _hflm(base: type, progress: bool) -> type:
    """lm-eval's HF model, with its request progress bars following rlvf's progress setting
    (lm-eval passes `disable_tqdm=False` explicitly, so TQDM_DISABLE alone cannot hide them)."""
    if progress:
        return base

    class QuietHFLM(base):  # type: ignore[misc, valid-type]
        def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().generate_until(requests, disable_tqdm=True)

    return QuietHFLM


def run_lm_eval(
    policy: Any, settings: LmEvalSettings, *, policy_name: str = "", progress: bool = True
) -> LmEvalResult:
    """lm-eval's tasks on `policy` (a PolicySpec, or a loaded ``(model, tokenizer)``).

    Calls lm-eval's `evaluator.evaluate` with the tasks prepared as `simple_evaluate` would:
    simple_evaluate also surveys the environment (torch's collect_env: pip, conda, GPUs), 15 s
    on a busy 2-core machine, which would be most of the local tasks' wall time.
    """
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    t0 = time.perf_counter()
    remote = any(t not in LOCAL_TASKS for t in settings.tasks)
    why = hub_offline() if remote else None
    _, task_dict = load_task_dict(settings.tasks)  # a task whose data cannot load: one line
    _prepare(task_dict, settings)
    if not isinstance(policy, tuple):
        from rlvf.models.loader import load_policy

        policy = load_policy(policy)
    model, tok = policy
    was_training = model.training
    model.eval()
    saved = os.environ.get("TQDM_DISABLE")
    if not progress:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        with _datasets_offline(why):
            lm = _hflm(HFLM, progress)(pretrained=model, tokenizer=tok, batch_size=settings.batch_size)
            out = evaluate(
                lm=lm,
                task_dict=task_dict,
                limit=settings.limit,
                bootstrap_iters=BOOTSTRAP_ITERS,
                log_samples=True,
            )
    finally:
        model.train(was_training)
        if saved is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved
    if out is None:  # lm-eval returns None on non-zero ranks only
        raise RuntimeError("lm-eval returned no results")
    out = dict(out)
    samples = _json_safe(out.pop("samples", {}) or {})
    out["config"] = {"model": policy_name, "lm_eval_version": lm_eval_version(), **settings.to_dict()}
    raw = _json_safe(out)
    metrics, lower = normalise(raw)
    result = LmEvalResult(
        metrics=metrics,
        task_versions={clean(t): str(v) for t, v in sorted((raw.get("versions") or {}).items())},
        lm_eval_version=lm_eval_version(),
        lower_is_better=lower,
        raw=raw,
        samples={clean(t): rows for t, rows in samples.items()},
        seconds=time.perf_counter() - t0,
    )
    if progress:
        print(f"lm-eval {', '.join(settings.tasks)} in {result.seconds:.1f}s", file=sys.stderr)
    return result


def lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:  # pragma: no cover
        import lm_eval

        return str(getattr(lm_eval, "__version__", "unknown"))
