"""`registry/`: the exported snapshot, as plain JSON with deterministic bytes.

Layout::

    registry/
      runs/<run_id>.json   one record per run (see `rlvf.report.collect`)
      study.json           what was exported besides runs: the user-named pairs
      metrics.json         headline metrics of every run, one place to diff

Floats are rounded to 6 decimals, keys sorted, dicts indented one level per depth and
lists of scalars (or of lists of scalars) kept on one line, so a re-export with no new
runs changes no byte and a new run shows up as a readable git diff.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlvf.errors import UserError

FLOAT_DECIMALS = 6


#: keys of an eval record whose values are per-task vectors of ints and strings
#: (EvalResult's contract): passed through as they are, which keeps big exports fast
RAW_KEYS = frozenset({"correct", "categories", "flags", "task_ids"})


def normalise(obj: Any) -> Any:
    """Round floats (non-finite ones become None), sort nothing: `dumps` sorts keys."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        r = round(obj, FLOAT_DECIMALS)
        return 0.0 if r == 0 else r
    if isinstance(obj, dict):
        return {str(k): normalise(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [normalise(v) for v in obj]
    return obj


def normalise_record(rec: dict[str, Any]) -> dict[str, Any]:
    out = normalise({k: v for k, v in rec.items() if k != "evals"})
    out["evals"] = {
        suite: {
            **normalise({k: v for k, v in ev.items() if k not in RAW_KEYS}),
            **{k: ev[k] for k in RAW_KEYS if k in ev},
        }
        for suite, ev in rec.get("evals", {}).items()
    }
    return out


def _inline(obj: list) -> bool:
    """Lists in records are homogeneous: a list of dicts is laid out, anything else inline."""
    return not (obj and isinstance(obj[0], dict))


def dumps(obj: Any) -> str:
    """Deterministic, diff-friendly JSON (input already `normalise`d)."""
    out: list[str] = []

    def emit(o: Any, depth: int) -> None:
        pad = "  " * (depth + 1)
        if isinstance(o, dict):
            if not o:
                out.append("{}")
                return
            out.append("{\n")
            items = sorted(o.items())
            for i, (k, v) in enumerate(items):
                out.append(pad + json.dumps(k, ensure_ascii=False) + ": ")
                emit(v, depth + 1)
                out.append(",\n" if i < len(items) - 1 else "\n")
            out.append("  " * depth + "}")
        elif isinstance(o, list) and not _inline(o):
            out.append("[\n")
            for i, v in enumerate(o):
                out.append(pad)
                emit(v, depth + 1)
                out.append(",\n" if i < len(o) - 1 else "\n")
            out.append("  " * depth + "]")
        else:
            out.append(json.dumps(o, ensure_ascii=False, separators=(", ", ": "), sort_keys=True))

    emit(obj, 0)
    out.append("\n")
    return "".join(out)


def metrics_summary(records: dict[str, dict]) -> dict[str, Any]:
    runs = {}
    for rid, rec in records.items():
        m: dict[str, Any] = {}
        for suite, ev in rec["evals"].items():
            s = ev["summary"]
            for k, v in s["pass_at_k"].items():
                m[f"{suite}/pass_at_{k}"] = {"mean": v["mean"], "std": v["std"], "stderr": v["stderr"]}
            if s.get("partial_credit"):
                m[f"{suite}/partial_credit"] = s["partial_credit"]
        for name, v in rec["lm_eval"].items():
            m[f"lm_eval/{name}"] = v
        runs[rid] = {
            "label": rec["label"],
            "method": rec["method"],
            "base_model": rec["base_model"],
            "config_hash": rec["config_hash"],
            "invariants_hash": rec["invariants_hash"],
            "metrics": m,
        }
    return {"runs": runs}


def render(records: dict[str, dict], study: dict[str, Any]) -> dict[str, str]:
    """The registry's files (relative path -> text)."""
    files = {f"runs/{rid}.json": dumps(normalise_record(rec)) for rid, rec in records.items()}
    files["study.json"] = dumps(normalise(study))
    files["metrics.json"] = dumps(normalise(metrics_summary(records)))
    return files


def load(path: str | Path) -> tuple[dict[str, dict], dict[str, Any]]:
    """Read a registry directory back: (records by run id, study)."""
    root = Path(path)
    runs_dir = root / "runs"
    if not runs_dir.is_dir() and not (root / "metrics.json").is_file():
        raise UserError(f"{root}: not a registry (no runs/ or metrics.json); run `rlvf export` first")
    records = {}
    for f in sorted(runs_dir.glob("*.json")) if runs_dir.is_dir() else []:
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{f}: not valid JSON ({e})") from None
        if not isinstance(rec, dict) or "run_id" not in rec or "evals" not in rec:
            raise UserError(f"{f}: not a registry run record")
        records[rec["run_id"]] = rec
    study_file = root / "study.json"
    study = json.loads(study_file.read_text(encoding="utf-8")) if study_file.is_file() else {"pairs": []}
    return records, study
