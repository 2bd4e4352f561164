"""What rlvf computes from a *base* policy, cached by the base's identity + the settings:
its evaluation (so every SFT / DPO run can record `base_eval/...` without re-evaluating the
same base) and its verified samples for training data (so DPO runs that differ only in
training knobs do not re-sample). Trained policies are never cached.

Cache entries live under `$RLVF_HOME/cache/eval/<key>/` (RLVF_HOME defaults to
~/.cache/rlvf, the embedded model's home; RLVF_EVAL_CACHE moves just this cache); set
RLVF_NO_CACHE=1 to bypass it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from rlvf.records import EvalResult, write_jsonl

FORMAT = 1  # bump when evaluation code changes what a cached result would hold


def cache_root() -> Path:
    """RLVF_EVAL_CACHE if set, else $RLVF_HOME/cache/eval."""
    if os.environ.get("RLVF_EVAL_CACHE"):
        return Path(os.environ["RLVF_EVAL_CACHE"]).expanduser()
    from rlvf.models.bootstrap import rlvf_home

    return rlvf_home() / "cache" / "eval"


def enabled() -> bool:
    """False when RLVF_NO_CACHE or RLVF_NO_EVAL_CACHE is set to 1/true/yes."""
    off = ("1", "true", "yes")
    return not any(
        os.environ.get(v, "").strip().lower() in off for v in ("RLVF_NO_CACHE", "RLVF_NO_EVAL_CACHE")
    )


def base_identity(policy: str, revision: str | None) -> dict[str, Any]:
    """What identifies a base policy's weights: for the embedded model its bootstrap key,
    for a local directory its files' names, sizes and mtimes, for a hub id the revision."""
    from rlvf.models.loader import is_embedded

    ident: dict[str, Any] = {"policy": policy, "revision": revision}
    if is_embedded(policy):
        from rlvf.models.bootstrap import DEFAULT_SEED, get_config, parse_embedded

        ident["embedded_key"] = get_config(parse_embedded(policy)).key(DEFAULT_SEED)
        return ident
    path = Path(os.path.expanduser(policy))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        ident["path"] = str(path.resolve())
        ident["files"] = [(str(p.relative_to(path)), p.stat().st_size, int(p.stat().st_mtime)) for p in files]
    return ident


def cache_key(identity: dict[str, Any], settings: dict[str, Any]) -> str:
    import rlvf

    blob = json.dumps(
        {"base": identity, "settings": settings, "format": FORMAT, "rlvf": rlvf.__version__}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load(key: str, suites: list[str]) -> dict[str, Any] | None:
    """The cached SuiteEvals for every suite, or None when any is missing or unreadable."""
    from rlvf.evaluate.core import SuiteEval
    from rlvf.records import Sample, read_jsonl

    if not enabled():
        return None
    d = cache_root() / key
    out = {}
    for i, suite in enumerate(suites):
        try:
            data = json.loads((d / f"{i}.json").read_text())
            if data.get("suite") != suite:
                return None
            ev = SuiteEval(EvalResult.from_dict(data))
            if (d / f"{i}.samples.jsonl").exists():
                ev.samples = [Sample.from_dict(o) for _, o in read_jsonl(d / f"{i}.samples.jsonl")]
            if (d / f"{i}.outcomes.jsonl").exists():
                ev.outcomes = [o for _, o in read_jsonl(d / f"{i}.outcomes.jsonl")]
            out[suite] = ev
        except (OSError, ValueError, TypeError, KeyError):
            return None
    return out


def store(key: str, results: dict[str, Any], identity: dict[str, Any]) -> None:
    """Write SuiteEvals (suite -> SuiteEval) atomically."""
    if not enabled():
        return
    root = cache_root()
    tmp = root / f"{key}.partial.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, ev in enumerate(results.values()):
        (tmp / f"{i}.json").write_text(json.dumps(ev.result.to_dict(), sort_keys=True))
        if ev.samples:
            write_jsonl(tmp / f"{i}.samples.jsonl", ev.samples)
        if ev.outcomes:
            write_jsonl(tmp / f"{i}.outcomes.jsonl", ev.outcomes)
    (tmp / "identity.json").write_text(json.dumps(identity, sort_keys=True, indent=1))
    final = root / key
    shutil.rmtree(final, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def load_samples(key: str) -> tuple[list[Any], list[Any]] | None:
    """Cached (samples, outcomes) of the base policy for training data, or None."""
    from rlvf.records import Outcome, Sample, read_jsonl

    if not enabled():
        return None
    d = cache_root() / f"samples-{key}"
    try:
        samples = [Sample.from_dict(o) for _, o in read_jsonl(d / "samples.jsonl")]
        outcomes = [Outcome.from_dict(o) for _, o in read_jsonl(d / "outcomes.jsonl")]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return (samples, outcomes) if len(samples) == len(outcomes) else None


def store_samples(key: str, samples: list[Any], outcomes: list[Any], identity: dict[str, Any]) -> None:
    if not enabled():
        return
    root = cache_root()
    tmp = root / f"samples-{key}.partial.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_jsonl(tmp / "samples.jsonl", samples)
    write_jsonl(tmp / "outcomes.jsonl", outcomes)
    (tmp / "identity.json").write_text(json.dumps(identity, sort_keys=True, indent=1))
    final = root / f"samples-{key}"
    shutil.rmtree(final, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def load_json(key: str) -> Any:
    """A cached JSON document (e.g. the base's lm-eval results), or None."""
    if not enabled():
        return None
    try:
        return json.loads((cache_root() / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def store_json(key: str, obj: Any) -> None:
    """Write a JSON document atomically (a reader never sees half of it)."""
    if not enabled():
        return
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{key}.json.partial.{os.getpid()}"
    tmp.write_text(json.dumps(obj, sort_keys=True), encoding="utf-8")
    os.replace(tmp, root / f"{key}.json")
