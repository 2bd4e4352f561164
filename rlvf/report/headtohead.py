"""Comparisons between registry records: fairness, deltas, head-to-head, failure shifts,
universally hard tasks and scaling groups. Pure functions of the records.

Binary per-task outcome (head-to-head, McNemar, hard tasks): a task *passes* for a run
when it was solved in at least half of its samples over all seeds (with one seed and one
sample: it passed). So improved + regressed + both pass + both fail = number of tasks, and
net = improved - regressed = (tasks B passes) - (tasks A passes), always.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rlvf.report import stats

METHOD_ORDER = ("base", "sft", "dpo", "kto", "orpo", "rm", "ppo", "grpo", "rloo", "online_dpo")


class ComparisonError(ValueError):
    """Two runs cannot be compared (invariants or task sets differ)."""


def sort_key(rec: dict) -> tuple:
    m = rec.get("method", "")
    order = METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER)
    return (rec.get("base_model", ""), order, m, rec.get("label", ""), rec["run_id"])


def ordered(records: dict[str, dict]) -> list[dict]:
    return sorted(records.values(), key=sort_key)


def display_labels(records: dict[str, dict]) -> dict[str, str]:
    """run id -> a label unique within the study (run id prefix added to duplicates)."""
    counts: dict[str, int] = {}
    for r in records.values():
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    return {
        rid: (
            r["label"] if counts[r["label"]] == 1 else f"{r['label']} ({rid.removeprefix('base-eval-')[:6]})"
        )
        for rid, r in records.items()
    }


# -- fairness -----------------------------------------------------------------------------
def fairness(a: dict, b: dict) -> list[dict[str, Any]]:
    """The invariants that differ between two runs ([] when comparable)."""
    if not a.get("invariants_hash") or not b.get("invariants_hash"):
        missing = [r["label"] for r in (a, b) if not r.get("invariants_hash")]
        return [{"key": "(invariants not recorded)", "a": None, "b": None, "note": ", ".join(missing)}]
    if a["invariants_hash"] == b["invariants_hash"]:
        return []
    ia, ib = a.get("invariants") or {}, b.get("invariants") or {}
    diffs = [
        {"key": k, "a": ia.get(k), "b": ib.get(k)}
        for k in sorted(set(ia) | set(ib))
        if ia.get(k) != ib.get(k)
    ]
    return diffs or [{"key": "(invariants hash)", "a": a["invariants_hash"], "b": b["invariants_hash"]}]


def describe_differences(diffs: list[dict[str, Any]]) -> str:
    parts = []
    for d in diffs:
        if d["key"].startswith("("):
            parts.append(d["key"][1:-1] + (f" for {d['note']}" if d.get("note") else ""))
        else:
            parts.append(f"{d['key']} ({_show(d['a'])} vs {_show(d['b'])})")
    return "; ".join(parts)


def _show(v: Any) -> str:
    return "unset" if v is None else str(v)


# -- per-task outcomes --------------------------------------------------------------------
def task_rates(ev: dict) -> np.ndarray:
    seeds = [str(s) for s in ev["seeds"]]
    m = np.array([ev["correct"][s] for s in seeds], dtype=float)  # seeds x tasks
    return m.sum(axis=0) / (ev["n_samples"] * len(seeds))


def task_passes(ev: dict) -> np.ndarray:
    return task_rates(ev) >= 0.5


def _check_tasks(ev_a: dict, ev_b: dict) -> None:
    if ev_a["task_ids"] != ev_b["task_ids"]:
        sa, sb = set(ev_a["task_ids"]), set(ev_b["task_ids"])
        if sa == sb:
            raise ComparisonError(f"suite {ev_a['suite']}: same tasks in a different order")
        raise ComparisonError(
            f"suite {ev_a['suite']}: mismatched task sets ({len(sa - sb)} task(s) only in the first run, "
            f"{len(sb - sa)} only in the second)"
        )


def head_to_head(ev_a: dict, ev_b: dict) -> dict[str, Any]:
    """B against A on one suite: counts and task lists (each task in exactly one list)."""
    _check_tasks(ev_a, ev_b)
    pa, pb = task_passes(ev_a), task_passes(ev_b)
    ra, rb = task_rates(ev_a), task_rates(ev_b)
    ids = ev_a["task_ids"]
    lists: dict[str, list[str]] = {"improved": [], "regressed": [], "both_pass": [], "both_fail": []}
    for i, tid in enumerate(ids):
        key = ("both_pass" if pb[i] else "regressed") if pa[i] else ("improved" if pb[i] else "both_fail")
        lists[key].append(tid)
    counts = {k: len(v) for k, v in lists.items()}
    return {
        "n_tasks": len(ids),
        "counts": counts,
        "net": counts["improved"] - counts["regressed"],
        "passes_a": int(pa.sum()),
        "passes_b": int(pb.sum()),
        "lists": lists,
        "rates": {tid: [float(ra[i]), float(rb[i])] for i, tid in enumerate(ids) if ra[i] != rb[i]},
    }


def _seed_matrix(ev: dict) -> np.ndarray:
    """tasks x seeds matrix of passing-sample counts (seeds in sorted order)."""
    seeds = sorted(ev["seeds"])
    return np.array([ev["correct"][str(s)] for s in seeds], dtype=np.int64).T


def suite_delta(ev_a: dict, ev_b: dict, h2h: dict | None = None) -> dict[str, Any]:
    """pass@1 of B minus A with its uncertainty and verdict."""
    h2h = h2h or head_to_head(ev_a, ev_b)
    sa, sb = ev_a["summary"]["pass_at_1"], ev_b["summary"]["pass_at_1"]
    delta = sb["mean"] - sa["mean"]
    se, beyond = stats.two_stderr(delta, sa["stderr"], sb["stderr"])
    b, c = h2h["counts"]["improved"], h2h["counts"]["regressed"]
    p = stats.mcnemar_exact(b, c)
    ma, mb = _seed_matrix(ev_a), _seed_matrix(ev_b)
    if ma.shape == mb.shape and ev_a["n_samples"] == ev_b["n_samples"]:
        lo, hi, p_boot = stats.paired_bootstrap(mb - ma, 1.0 / ev_a["n_samples"])
    else:  # different numbers of seeds or samples: pair tasks only, on pass rates
        rate_a = ma.mean(axis=1, keepdims=True) / ev_a["n_samples"]
        rate_b = mb.mean(axis=1, keepdims=True) / ev_b["n_samples"]
        lo, hi, p_boot = stats.paired_bootstrap(rate_b - rate_a)
    return {
        "metric": "pass_at_1",
        "a": sa["mean"],
        "b": sb["mean"],
        "a_std": sa["std"],
        "b_std": sb["std"],
        "delta": delta,
        "se": se,
        "beyond_2se": beyond,
        "mcnemar_p": p,
        "improved": b,
        "regressed": c,
        "bootstrap_ci": [lo, hi],
        "bootstrap_p": p_boot,
        "verdict": stats.verdict(delta, beyond, p),
    }


def lm_task(metric: str) -> str:
    """The lm-eval task of a record's metric name ("task/metric")."""
    return metric.split("/", 1)[0]


def lm_version_changes(a: dict, b: dict) -> list[dict[str, Any]]:
    """lm-eval tasks both runs ran whose task version differs: their numbers are not comparable
    (tasks whose version either run did not record are compared as before)."""
    va, vb = a.get("lm_eval_versions") or {}, b.get("lm_eval_versions") or {}
    tasks = sorted({lm_task(n) for n in set(a["lm_eval"]) & set(b["lm_eval"])})
    return [
        {"task": t, "a": va[t], "b": vb[t]} for t in tasks if t in va and t in vb and str(va[t]) != str(vb[t])
    ]


def lm_deltas(a: dict, b: dict) -> list[dict[str, Any]]:
    """B minus A for each lm-eval metric both runs have, by the 2×stderr rule; `worse` says
    whether B is beyond 2×SE on the bad side (lower, or higher for lower-is-better metrics).
    Metrics of a task whose version changed are left out (see `lm_version_changes`)."""
    changed = {c["task"] for c in lm_version_changes(a, b)}
    lower = set(a.get("lm_eval_lower") or []) | set(b.get("lm_eval_lower") or [])
    out = []
    for name in sorted(set(a["lm_eval"]) & set(b["lm_eval"])):
        if lm_task(name) in changed:
            continue
        va, vb = a["lm_eval"][name], b["lm_eval"][name]
        delta = vb["value"] - va["value"]
        if va.get("stderr") is None or vb.get("stderr") is None:
            se, beyond, verdict = None, False, "no stderr recorded: cannot judge"
        else:
            se, beyond = stats.two_stderr(delta, va["stderr"], vb["stderr"])
            verdict = "beyond 2×SE" if beyond else "within 2×SE: not significant"
        worse = beyond and (delta > 0 if name in lower else delta < 0)
        out.append(
            {
                "metric": name,
                "a": va["value"],
                "b": vb["value"],
                "delta": delta,
                "se": se,
                "beyond_2se": beyond,
                "worse": worse,
                "verdict": verdict,
            }
        )
    return out


def forgetting(suites: dict[str, Any], lm: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Seed 004's forgetting pathology: a pass@1 gain on some code suite while a general
    (lm-eval) metric got worse beyond 2×SE. None when there is no such pair."""
    gains = sorted(s for s, e in suites.items() if "delta" in e and e["delta"]["delta"] > 0)
    lost = [d["metric"] for d in lm if d["worse"]]
    if not gains or not lost:
        return None
    return {"gains": gains, "lost": lost}


def _per_task_counts(ev: dict, group: str, split_plus: bool) -> dict[str, np.ndarray]:
    """label -> per-task mean count per seed."""
    table = ev.get(group) or {}
    seeds = [str(s) for s in ev["seeds"]]
    if not all(s in table for s in seeds):
        return {}
    n_tasks = len(ev["task_ids"])
    out: dict[str, np.ndarray] = {}
    for s in seeds:
        for i, labels in enumerate(table[s]):
            for label in labels:
                for name in label.split("+") if split_plus else [label]:
                    if name:
                        if name not in out:
                            out[name] = np.zeros(n_tasks)
                        out[name][i] += 1.0 / len(seeds)
    return out


def failure_shift(ev_a: dict, ev_b: dict) -> list[dict[str, Any]]:
    """Per failure category and behaviour flag: counts (mean ± std over seeds) in A and B,
    the shift, and the tasks where it went down or up."""
    _check_tasks(ev_a, ev_b)
    from rlvf.metrics import PASS_CATEGORIES

    rows = []
    for group, kind, split in (("categories", "category", False), ("flags", "flag", True)):
        sa, sb = ev_a["summary"].get(group) or {}, ev_b["summary"].get(group) or {}
        ca, cb = _per_task_counts(ev_a, group, split), _per_task_counts(ev_b, group, split)
        for name in sorted(set(sa) | set(sb)):
            if kind == "category" and name in PASS_CATEGORIES:
                continue
            za = ca.get(name, np.zeros(len(ev_a["task_ids"])))
            zb = cb.get(name, np.zeros(len(ev_b["task_ids"])))
            a_stat = sa.get(name, {"mean": 0.0, "std": 0.0})
            b_stat = sb.get(name, {"mean": 0.0, "std": 0.0})
            rows.append(
                {
                    "kind": kind,
                    "name": name,
                    "a_mean": a_stat["mean"],
                    "a_std": a_stat["std"],
                    "b_mean": b_stat["mean"],
                    "b_std": b_stat["std"],
                    "delta": b_stat["mean"] - a_stat["mean"],
                    "fewer": [t for t, x, y in zip(ev_a["task_ids"], za, zb, strict=True) if y < x - 1e-12],
                    "more": [t for t, x, y in zip(ev_a["task_ids"], za, zb, strict=True) if y > x + 1e-12],
                }
            )
    return rows


# -- comparisons --------------------------------------------------------------------------
def compare(a: dict, b: dict, origin: str = "named") -> dict[str, Any]:
    """Everything about B against A. When invariants differ: no deltas, only the reason."""
    out: dict[str, Any] = {"a": a["run_id"], "b": b["run_id"], "origin": origin}
    diffs = fairness(a, b)
    out["differences"] = diffs
    out["comparable"] = not diffs
    out["suites"] = {}
    out["lm_eval"] = []
    out["lm_eval_refused"] = []
    out["forgetting"] = None
    if diffs:
        return out
    for suite in sorted(set(a["evals"]) & set(b["evals"])):
        ev_a, ev_b = a["evals"][suite], b["evals"][suite]
        try:
            h = head_to_head(ev_a, ev_b)
        except ComparisonError as e:
            out["suites"][suite] = {"error": str(e)}
            continue
        out["suites"][suite] = {
            "h2h": h,
            "delta": suite_delta(ev_a, ev_b, h),
            "failures": failure_shift(ev_a, ev_b),
        }
    out["lm_eval"] = lm_deltas(a, b)
    out["lm_eval_refused"] = lm_version_changes(a, b)
    out["forgetting"] = forgetting(out["suites"], out["lm_eval"])
    return out


def comparisons(records: dict[str, dict], study: dict[str, Any]) -> list[dict[str, Any]]:
    """Each run against its baseline, then the user-named pairs; no pair twice."""
    seen: set[tuple[str, str]] = set()
    out = []
    for rec in ordered(records):
        base = (rec.get("baseline") or {}).get("run_id")
        if base and base in records and (base, rec["run_id"]) not in seen:
            seen.add((base, rec["run_id"]))
            out.append(compare(records[base], rec, origin=f"baseline ({rec['baseline']['rule']})"))
    for a, b in study.get("pairs", []):
        if a in records and b in records and (a, b) not in seen:
            seen.add((a, b))
            out.append(compare(records[a], records[b], origin="named"))
    return out


def universally_hard(records: dict[str, dict]) -> list[dict[str, Any]]:
    """Per comparable group (base model and invariants hash), suite and task set seen in at
    least two runs: the tasks no run of that group passes. Runs of different base models are
    never intersected (a stronger model's passes would hide the weaker one's hard tasks)."""
    groups: dict[tuple[str, str, str, tuple[str, ...]], list[dict]] = {}
    for rec in ordered(records):
        for suite, ev in rec["evals"].items():
            key = (rec.get("base_model", ""), rec.get("invariants_hash", ""), suite, tuple(ev["task_ids"]))
            groups.setdefault(key, []).append(rec)
    out = []
    for (base_model, inv, suite, tids), recs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], len(kv[0][3]))
    ):
        if len(recs) < 2:
            continue
        any_pass = np.zeros(len(tids), dtype=bool)
        for r in recs:
            any_pass |= task_passes(r["evals"][suite])
        out.append(
            {
                "base_model": base_model,
                "invariants_hash": inv,
                "suite": suite,
                "n_tasks": len(tids),
                "runs": [r["run_id"] for r in recs],
                "tasks": [t for t, p in zip(tids, any_pass, strict=True) if not p],
            }
        )
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def scaling_groups(records: dict[str, dict]) -> list[dict[str, Any]]:
    """Runs that differ only in one free parameter (tag rlvf.scan): per suite, the points
    and whether the largest value is significantly worse than the smallest."""
    buckets: dict[tuple, list[dict]] = {}
    for rec in ordered(records):
        scan = rec.get("scan") or {}
        for param in sorted(scan):
            if _num(scan[param]) is None:
                continue
            rest = tuple(sorted((k, str(v)) for k, v in scan.items() if k != param))
            key = (param, rec["method"], rec["invariants_hash"], rec["base_model"], rest)
            buckets.setdefault(key, []).append(rec)
    out = []
    for (param, method, _inv, base_model, rest), recs in sorted(buckets.items(), key=lambda kv: str(kv[0])):
        if len({_num(r["scan"][param]) for r in recs}) < 2:
            continue
        recs = sorted(recs, key=lambda r: (_num(r["scan"][param]), r["run_id"]))
        suites = sorted(set.intersection(*(set(r["evals"]) for r in recs)))
        bases = {(r.get("baseline") or {}).get("run_id") for r in recs}
        baseline = next(iter(bases)) if len(bases) == 1 else None
        group = {
            "param": param,
            "method": method,
            "base_model": base_model,
            "fixed": dict(rest),
            "runs": [r["run_id"] for r in recs],
            "values": [_num(r["scan"][param]) for r in recs],
            "baseline": baseline if baseline in records else None,
            "suites": {},
        }
        for suite in suites:
            pts = [r["evals"][suite]["summary"]["pass_at_1"] for r in recs]
            entry: dict[str, Any] = {
                "mean": [p["mean"] for p in pts],
                "std": [p["std"] for p in pts],
                "stderr": [p["stderr"] for p in pts],
            }
            lo, hi = recs[0], recs[-1]
            try:
                d = suite_delta(lo["evals"][suite], hi["evals"][suite])
            except ComparisonError as e:
                entry["error"] = str(e)
            else:
                entry["ends"] = d
                entry["negative_scaling"] = stats.is_significant(d["verdict"]) and d["delta"] < 0
                x = np.array(group["values"])
                y = np.array(entry["mean"])
                entry["slope"] = float(np.polyfit(x, y, 1)[0]) if len(set(x)) > 1 else 0.0
            group["suites"][suite] = entry
        out.append(group)
    return out


def health_flags(rec: dict) -> list[str]:
    """Flags recorded on the run plus those read off its training curve."""
    flags = set(rec.get("health") or [])
    t = rec.get("train") or {}
    if t.get("nonfinite_loss"):
        flags.add("loss_nonfinite")
    first, final = t.get("first_loss"), t.get("final_loss")
    if first is not None and final is not None and len(t.get("loss_curve") or []) > 1 and final > first:
        flags.add("loss_diverged")
    return sorted(flags)


# -- the study summary (seed 004) ---------------------------------------------------------
def started_from(rec: dict, records: dict[str, dict]) -> str | None:
    """The run a run's policy started from: its `model.init` when that names an exported run
    (run id, or a registered version ``models:/NAME/VERSION`` / ``models:/NAME@ALIAS``), else its
    baseline (parent with results, else the base of its invariants group)."""
    init = (rec.get("params") or {}).get("model.init")
    if init and init not in ("null", "None", ""):
        if init in records and init != rec["run_id"]:
            return init
        if init.startswith("models:/"):
            name, _, ref = init[len("models:/") :].rstrip("/").partition("/")
            name, at, alias = name.partition("@")
            for rid, r in records.items():
                for v in r.get("registered") or []:
                    if v["name"] == name and (
                        (at and alias in v["aliases"]) or (ref and v["version"] == ref)
                    ):
                        return rid if rid != rec["run_id"] else None
    base = (rec.get("baseline") or {}).get("run_id")
    return base if base in records and base != rec["run_id"] else None


def _plain(r: dict) -> bool:
    """The method run with its recipe's settings: named by the method alone (rlvf names a run
    by the hashed settings that differ from its recipe: `dpo #bc27c6`, not `dpo rounds=3 #a4286e`),
    or the study step named after the method."""
    import re

    method = re.escape(r.get("method") or "")
    name = r.get("run_name") or ""
    return r.get("label") == r.get("method") or bool(
        re.fullmatch(rf"{method}(?: @\S+)? #[0-9a-f]{{6}}", name)
    )


def representatives(records: dict[str, dict]) -> list[dict]:
    """One run per (comparable group, method) for the summary: a run outside any scan first,
    then one with the recipe's own settings (a plain `dpo` over `dpo rounds=3`), then one with a
    registry alias, then the latest to end."""
    best: dict[tuple[str, str, str], dict] = {}

    def rank(r: dict) -> tuple:
        aliased = any(v.get("aliases") for v in r.get("registered") or [])
        end = (r.get("time") or {}).get("end_ms") or 0
        return (not r.get("scan"), _plain(r), aliased, end, r["run_id"])

    for r in ordered(records):
        if r.get("kind") in ("eval", "pairs") and r.get("method") != "base":
            continue
        key = (r.get("base_model", ""), r.get("invariants_hash", ""), r.get("method") or "other")
        if key not in best or rank(r) > rank(best[key]):
            best[key] = r
    return sorted(best.values(), key=sort_key)


def phases(records: dict[str, dict], runs: list[dict]) -> list[tuple[str, str, str]]:
    """(from, to, why) for each run of `runs` against the run it started from, and against
    the root of that chain when the chain is longer (seed 004: sft − base, dpo − sft, dpo − base)."""
    out: list[tuple[str, str, str]] = []
    for r in runs:
        start = started_from(r, records)
        if start is None:
            continue
        out.append((start, r["run_id"], "started from"))
        root, seen = start, {r["run_id"], start}
        while (nxt := started_from(records[root], records)) is not None and nxt not in seen:
            seen.add(nxt)
            root = nxt
        if root != start:
            out.append((root, r["run_id"], "chain root"))
    return out
