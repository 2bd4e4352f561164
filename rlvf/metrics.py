"""Metrics computed from an `rlvf.records.EvalResult`: one place, used by the writer
(`rlvf.tracking.evallog`) and the readers (`rlvf.report`).

All numbers are plain floats so they can go straight into MLflow and JSON.

- pass@1 per seed is the mean over tasks of `correct / n_samples`; the run's pass@1 is
  the mean over seeds, with the sample std over seeds (0 for one seed).
- `stderr` is the standard error of the mean over *tasks* of each task's pass rate
  (averaged over seeds and samples): the benchmark's sampling error, defined even for a
  single seed, and the same notion as lm-eval's per-task stderr (seed 004's 2x stderr rule).
- pass@k uses `rlvf.verify.pass_at_k` (unbiased, Chen et al. 2021), for each k <= n_samples.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rlvf.records import EvalResult
from rlvf.verify.categories import PASS
from rlvf.verify.passk import pass_at_k

#: Categories that mean "this sample passed"; every other category is a failure mode.
PASS_CATEGORIES = frozenset({PASS})
#: The k of pass@k reported when a run has enough samples per task.
STANDARD_KS = (1, 5, 10, 20, 50, 100)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0.0 for fewer than two values)."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    m = math.fsum(values) / n
    if n < 2:
        return m, 0.0
    var = math.fsum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var)


def stderr_of_mean(values: Sequence[float]) -> float:
    """Standard error of the mean of `values` (0.0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    return mean_std(values)[1] / math.sqrt(n)


def metric_name(text: str) -> str:
    """A category, flag, type or difficulty as it may appear inside an MLflow metric name."""
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(text)) or "_"


def _seed_keys(result: EvalResult) -> list[str]:
    keys = [str(s) for s in result.seeds]
    missing = [k for k in keys if k not in result.correct]
    if missing:
        raise ValueError(f"EvalResult {result.suite}: no pass vector for seed(s) {', '.join(missing)}")
    for k in keys:
        if len(result.correct[k]) != len(result.task_ids):
            raise ValueError(
                f"EvalResult {result.suite}: seed {k} has {len(result.correct[k])} outcomes "
                f"for {len(result.task_ids)} tasks"
            )
    return keys


def task_pass_rates(result: EvalResult) -> list[float]:
    """Each task's pass rate, averaged over seeds and samples."""
    keys = _seed_keys(result)
    n = result.n_samples * len(keys)
    return [sum(result.correct[k][i] for k in keys) / n for i in range(len(result.task_ids))]


def count_labels(per_task: Iterable[Iterable[str]], split_plus: bool = False) -> Counter[str]:
    """Count the labels in per-task lists of per-sample labels ('' counts as nothing)."""
    counts: Counter[str] = Counter()
    for labels in per_task:
        for label in labels:
            if not label:
                continue
            if split_plus:
                counts.update(p for p in label.split("+") if p)
            else:
                counts[label] += 1
    return counts


def summarize(result: EvalResult) -> dict[str, Any]:
    """Everything the report and the tracking layout need from one EvalResult.

    Returns a JSON-ready dict: `seeds`, `n_tasks`, `n_samples`, `pass_at_1` and
    `pass_at_k` ({k: {mean, std, stderr, per_seed}}), `partial_credit` (or None),
    `categories` / `flags` ({name: {mean, std, per_seed}} failure counts),
    `breakdowns` ({"type"|"difficulty": {value: {mean, std, n_tasks}}}).
    """
    keys = _seed_keys(result)
    n = result.n_samples
    if n <= 0:
        raise ValueError(f"EvalResult {result.suite}: n_samples must be positive, got {n}")
    n_tasks = len(result.task_ids)
    rates = task_pass_rates(result)
    ks = [k for k in STANDARD_KS if k <= n]
    pass_k: dict[int, dict[str, Any]] = {}
    for k in ks:
        per_seed = [
            math.fsum(pass_at_k(n, c, k) for c in result.correct[s]) / n_tasks if n_tasks else 0.0
            for s in keys
        ]
        m, sd = mean_std(per_seed)
        if k == 1:
            se = stderr_of_mean(rates)
        else:
            per_task = [
                math.fsum(pass_at_k(n, result.correct[s][i], k) for s in keys) / len(keys)
                for i in range(n_tasks)
            ]
            se = stderr_of_mean(per_task)
        pass_k[k] = {"mean": m, "std": sd, "stderr": se, "per_seed": dict(zip(keys, per_seed, strict=True))}

    partial = None
    if result.partial and all(k in result.partial for k in keys):
        per_seed = [math.fsum(result.partial[s]) / n_tasks if n_tasks else 0.0 for s in keys]
        m, sd = mean_std(per_seed)
        partial = {"mean": m, "std": sd}

    def label_stats(table: dict[str, list[list[str]]], split_plus: bool, failures_only: bool):
        if not table or not all(k in table for k in keys):
            return {}
        per_seed = {s: count_labels(table[s], split_plus) for s in keys}
        names = sorted(set().union(*per_seed.values()))
        if failures_only:
            names = [c for c in names if c not in PASS_CATEGORIES]
        out = {}
        for name in names:
            vals = [float(per_seed[s][name]) for s in keys]
            m, sd = mean_std(vals)
            out[name] = {"mean": m, "std": sd, "per_seed": dict(zip(keys, vals, strict=True))}
        return out

    breakdowns: dict[str, dict[str, dict[str, Any]]] = {}
    for field_name in ("type", "difficulty"):
        groups: dict[str, list[int]] = {}
        for i, tid in enumerate(result.task_ids):
            meta = result.task_meta.get(tid) or {}
            if field_name in meta:
                groups.setdefault(str(meta[field_name]), []).append(i)
        if not groups:
            continue
        table = {}
        for value, idx in groups.items():
            per_seed = [sum(result.correct[s][i] for i in idx) / (n * len(idx)) for s in keys]
            m, sd = mean_std(per_seed)
            table[value] = {"mean": m, "std": sd, "n_tasks": len(idx)}
        breakdowns[field_name] = dict(sorted(table.items(), key=lambda kv: _natural_key(kv[0])))

    return {
        "seeds": [int(s) for s in result.seeds],
        "n_tasks": n_tasks,
        "n_samples": n,
        "pass_at_1": pass_k[1],
        "pass_at_k": {str(k): v for k, v in pass_k.items()},
        "partial_credit": partial,
        "categories": label_stats(result.categories, False, True),
        "flags": label_stats(result.flags, True, False),
        "breakdowns": breakdowns,
    }


def _natural_key(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def flat_metrics(result: EvalResult, summary: dict[str, Any] | None = None) -> dict[str, float]:
    """The metric names (without the `eval/<suite>/` prefix) and values of one EvalResult."""
    s = summary or summarize(result)
    out: dict[str, float] = {}
    p1 = s["pass_at_1"]
    out["pass_at_1"] = p1["mean"]
    out["pass_at_1_std"] = p1["std"]
    out["pass_at_1_stderr"] = p1["stderr"]
    for k, v in s["pass_at_k"].items():
        if k != "1":
            out[f"pass_at_{k}"] = v["mean"]
            out[f"pass_at_{k}_std"] = v["std"]
    for seed, v in p1["per_seed"].items():
        out[f"seed_{seed}/pass_at_1"] = v
    if s["partial_credit"] is not None:
        out["partial_credit"] = s["partial_credit"]["mean"]
    out["n_tasks"] = float(s["n_tasks"])
    for group in ("categories", "flags"):
        prefix = "category" if group == "categories" else "flag"
        for name, v in s[group].items():
            out[f"{prefix}/{metric_name(name)}"] = v["mean"]
            out[f"{prefix}/{metric_name(name)}_std"] = v["std"]
    for field_name, table in s["breakdowns"].items():
        for value, v in table.items():
            out[f"{field_name}/{metric_name(value)}/pass_at_1"] = v["mean"]
            out[f"{field_name}/{metric_name(value)}/pass_at_1_std"] = v["std"]
    return out
