"""Read runs from an MLflow store into registry records (plain JSON-ready dicts).

Selection (`Selection`): explicit run ids, registered models (all versions), aliases
(``MODEL@ALIAS``), experiments and tags; with none of these, every registered model
version in the store plus every imported run (tag ``rlvf.kind=imported``). The baselines
of selected runs and the runs of user-named pairs are always added.

Baseline of a run: tag ``rlvf.baseline_run_id``, else ``rlvf.parent_run_id`` (when that run
has evaluations), else the latest run with method ``base`` and the same invariants hash, else
the base model's eval the run recorded itself (``base_eval/<suite>/result.json``), as a base
row ``base-eval-<digest>`` shared by all runs that recorded the same one.

A run with no evaluation of its own gets the suites of its eval runs (kind ``eval`` whose
``rlvf.parent_run_id`` names it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from rlvf.errors import UserError
from rlvf.metrics import summarize
from rlvf.records import EvalResult
from rlvf.tracking import schema

MAX_CURVE_POINTS = 500
#: curves the report plots whenever a run logged them, besides its method's own
#: (`rlvf.methods` `Training.curves`): the RL diagnostics of GRPO/RLOO (TRL's log keys) and
#: rlvf's PPO / online DPO, and the RM's accuracy
REPORT_CURVES = (
    "train/reward_mean",
    "train/kl",
    "train/entropy",
    "train/clip_frac",
    "train/clip_ratio_region_mean",
    "train/explained_variance",
    "train/value_loss",
    "train/heldout_pass1",
    "train/accuracy",
    "train/rewards_accuracies",
    "train/rewards_margins",
)
#: metric-name prefixes of curves kept for every run: the verifier's hacking rates
#: (`train/verifier_<rate>_rate`) and iterative DPO's pass@1 per round (`rounds/<suite>/pass_at_1`)
REPORT_CURVE_PREFIXES = ("train/verifier_", "rounds/")
SAMPLES_PER_TASK = 3  # completions kept per task and suite for the Samples page
ROLLOUT_EXAMPLES = 3  # completions kept per verdict category for the Reward-hacking page
MAX_TEXT = 1200  # characters kept of one completion (the registry stays small)
MAX_ROLLOUT_BINS = 60  # training steps are binned to at most this many points
#: verdict categories that mean the policy beat the harness rather than the task
HACKING_CATEGORIES = ("tampering", "forbidden_side_effect")
SYNTHETIC_PREFIX = "base-eval-"  # ids of base rows made from runs' base_eval/ artifacts
RECORD_VERSION = 1


@dataclass
class Selection:
    runs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)  # "MODEL@ALIAS"
    experiments: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # all must match
    imported: bool = True  # with the default selection: add imported runs

    @property
    def is_default(self) -> bool:
        return not (self.runs or self.models or self.aliases or self.experiments or self.tags)


def _q(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Collector:
    """Reads runs from one MLflow store; caches what it fetched."""

    def __init__(self, client: Any):
        self.client = client
        self._runs: dict[str, Any] = {}
        self._exp_names: dict[str, str] = {}
        self._registered: dict[str, list[dict[str, Any]]] | None = None
        self._all_exp_ids: list[str] | None = None
        self._evals: dict[tuple[str, str], dict[str, EvalResult]] = {}
        self.synthetic: dict[str, dict[str, Any]] = {}  # base rows made from runs' base_eval/
        self._bases: dict[str, list[Any]] = {}

    # -- store access -------------------------------------------------------------------
    def run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        if run_id not in self._runs:
            try:
                r = self.client.get_run(run_id)
            except MlflowException:
                raise UserError(f"unknown run id {run_id!r} in {self.client.tracking_uri}") from None
            if r.info.lifecycle_stage == "deleted":
                raise UserError(f"run {run_id!r} is deleted")
            self._runs[run_id] = r
        return self._runs[run_id]

    def _exp_ids(self) -> list[str]:
        if self._all_exp_ids is None:
            exps = self.client.search_experiments()
            self._all_exp_ids = [e.experiment_id for e in exps]
            self._exp_names.update({e.experiment_id: e.name for e in exps})
        return self._all_exp_ids

    def search(self, filter_string: str, experiment_ids: list[str] | None = None) -> list[Any]:
        ids = experiment_ids if experiment_ids is not None else self._exp_ids()
        out, token = [], None
        while ids:
            page = self.client.search_runs(ids, filter_string, max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                break
        for r in out:
            self._runs.setdefault(r.info.run_id, r)
        return out

    def registered(self) -> dict[str, list[dict[str, Any]]]:
        """run id -> the registered versions that point at it (name, version, aliases, tags)."""
        if self._registered is None:
            versions = list(self.client.search_model_versions())
            aliases: dict[str, dict[str, list[str]]] = {}
            for name in sorted({v.name for v in versions}):
                rm = self.client.get_registered_model(name)
                by_version: dict[str, list[str]] = {}
                for alias, version in (rm.aliases or {}).items():
                    by_version.setdefault(str(version), []).append(alias)
                aliases[name] = by_version
            reg: dict[str, list[dict[str, Any]]] = {}
            for v in versions:
                run_id = v.run_id or (v.tags or {}).get("rlvf.run_id")
                if not run_id:
                    continue
                reg.setdefault(run_id, []).append(
                    {
                        "name": v.name,
                        "version": str(v.version),
                        "aliases": sorted(aliases.get(v.name, {}).get(str(v.version), [])),
                        "tags": dict(sorted((v.tags or {}).items())),
                    }
                )
            for lst in reg.values():
                lst.sort(key=lambda d: (d["name"], int(d["version"]) if d["version"].isdigit() else 0))
            self._registered = reg
        return self._registered

    def experiment_name(self, exp_id: str) -> str:
        if exp_id not in self._exp_names:
            self._exp_names[exp_id] = self.client.get_experiment(exp_id).name
        return self._exp_names[exp_id]

    def evals(self, run_id: str, prefix: str = schema.EVAL_PREFIX) -> dict[str, EvalResult]:
        """The EvalResults logged in a run (artifacts <prefix>/<suite>/result.json)."""
        if (run_id, prefix) not in self._evals:
            self._evals[(run_id, prefix)] = self._read_evals(self.run(run_id), prefix)
        return self._evals[(run_id, prefix)]

    def _read_evals(self, run: Any, prefix: str) -> dict[str, EvalResult]:
        run_id = run.info.run_id
        if not any(k.startswith(prefix + "/") for k in run.data.metrics):
            return {}
        texts: dict[str, str] = {}
        local = _local_dir(run.info.artifact_uri)
        if local is not None:
            base = local / prefix
            if base.is_dir():
                for d in sorted(base.iterdir()):
                    f = d / schema.RESULT_ARTIFACT
                    if f.is_file():
                        texts[d.name] = f.read_text(encoding="utf-8")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                for info in self.client.list_artifacts(run_id, prefix):
                    if not info.is_dir:
                        continue
                    path = f"{info.path}/{schema.RESULT_ARTIFACT}"
                    try:
                        local_path = self.client.download_artifacts(run_id, path, tmp)
                    except Exception:
                        continue
                    texts[info.path.rsplit("/", 1)[-1]] = Path(local_path).read_text(encoding="utf-8")
        out = {}
        for key, text in texts.items():
            try:
                res = EvalResult.from_dict(json.loads(text))
            except (ValueError, TypeError) as e:
                raise UserError(f"run {run_id}: malformed {prefix}/{key}/result.json ({e})") from None
            out[res.suite] = res
        return out

    # -- selection ----------------------------------------------------------------------
    def select(self, sel: Selection) -> list[str]:
        ids: list[str] = []
        reg = self.registered()
        if sel.is_default:
            ids.extend(r for r in reg if self._active(r))
            if sel.imported:
                ids.extend(r.info.run_id for r in self.search(f"tags.`{schema.TAG_KIND}` = 'imported'"))
        for run_id in sel.runs:
            self._check_ended(run_id)
            ids.append(run_id)
        for name in sel.models:
            found = [rid for rid, vs in reg.items() if any(v["name"] == name for v in vs)]
            if not found:
                raise UserError(f"no registered model named {name!r} (or it has no versions)")
            ids.extend(r for r in found if self._active(r))
        for spec in sel.aliases:
            name, sep, alias = spec.partition("@")
            if not sep or not name or not alias:
                raise UserError(f"--alias expects MODEL@ALIAS, got {spec!r}")
            from mlflow.exceptions import MlflowException

            try:
                mv = self.client.get_model_version_by_alias(name, alias)
            except MlflowException:
                raise UserError(f"no model version {name}@{alias}") from None
            self._check_ended(mv.run_id)
            ids.append(mv.run_id)
        if sel.experiments or sel.tags:
            exp_ids = None
            if sel.experiments:
                exp_ids = []
                for name in sel.experiments:
                    exp = self.client.get_experiment_by_name(name)
                    if exp is None:
                        raise UserError(f"no experiment named {name!r}")
                    exp_ids.append(exp.experiment_id)
            filt = " and ".join(f"tags.`{k}` = {_q(v)}" for k, v in sorted(sel.tags.items()))
            ids.extend(r.info.run_id for r in self.search(filt, exp_ids))
        explicit = set(sel.runs)
        return [r for r in dict.fromkeys(ids) if r in explicit or self._unfinished(r) is None]

    def _unfinished(self, run_id: str) -> str | None:
        """Why a run is no result to export (still running, or abandoned by a killed process)."""
        from rlvf.tracking.liveness import ABANDONED, TAG_ERROR

        run = self.run(run_id)
        if run.data.tags.get(TAG_ERROR) == ABANDONED:
            return "abandoned (its process was killed)"
        if run.info.status in ("RUNNING", "SCHEDULED"):
            return f"still {run.info.status}"
        return None

    def _check_ended(self, run_id: str) -> None:
        why = self._unfinished(run_id)
        if why:
            raise UserError(f"run {run_id} is {why}: export takes ended runs only")

    def _active(self, run_id: str) -> bool:
        try:
            self.run(run_id)
            return True
        except UserError:
            return False

    # -- baselines ----------------------------------------------------------------------
    def baseline(self, run_id: str) -> tuple[str | None, str | None]:
        """(baseline run id, rule) for a run; (None, None) when it has none."""
        tags = self.run(run_id).data.tags
        b = tags.get(schema.TAG_BASELINE_RUN)
        if b and b != run_id:
            self.run(b)  # an unknown baseline is the user's mistake: say so
            return b, "tag"
        p = tags.get(schema.TAG_PARENT_RUN)
        if p and p != run_id and self._active(p) and self._has_results(p):
            return p, "parent"
        inv = tags.get(schema.TAG_INVARIANTS_HASH)
        if tags.get(schema.TAG_METHOD) == "base" or not inv:
            return None, None
        if inv not in self._bases:
            filt = f"tags.`{schema.TAG_METHOD}` = 'base' and tags.`{schema.TAG_INVARIANTS_HASH}` = {_q(inv)}"
            self._bases[inv] = [r for r in self.search(filt) if self._has_results(r.info.run_id)]
        cands = [r for r in self._bases[inv] if r.info.run_id != run_id]
        if not cands:
            return None, None
        best = max(cands, key=lambda r: (r.info.start_time or 0, r.info.run_id))
        return best.info.run_id, "base"

    def _has_results(self, run_id: str) -> bool:
        m = self.run(run_id).data.metrics
        return any(k.startswith((schema.EVAL_PREFIX + "/", schema.LM_EVAL_PREFIX + "/")) for k in m) or bool(
            self._child_eval_runs(run_id)
        )

    def _child_eval_runs(self, run_id: str) -> list[Any]:
        runs = self.search(
            f"tags.`{schema.TAG_PARENT_RUN}` = {_q(run_id)} and tags.`{schema.TAG_KIND}` = 'eval'"
        )
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    # -- records ------------------------------------------------------------------------
    def record(self, run_id: str) -> dict[str, Any]:
        run = self.run(run_id)
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        evals = dict(self.evals(run_id))
        lm = _lm_eval(metrics)
        lm_versions, lm_lower = _lm_meta(tags)
        if not evals and not lm:
            for child in self._child_eval_runs(run_id):  # later eval runs override earlier ones
                evals.update(self.evals(child.info.run_id))
                lm.update(_lm_eval(child.data.metrics))
                v, lo = _lm_meta(child.data.tags)
                lm_versions.update(v)
                lm_lower = sorted({*lm_lower, *lo})
        eval_run = run
        if not self.evals(run_id):
            kids = self._child_eval_runs(run_id)
            eval_run = kids[-1] if kids else run
        baseline, rule = self.baseline(run_id)
        if baseline is None and tags.get(schema.TAG_METHOD) != "base":
            baseline = self._base_eval_record(run)
            rule = "base_eval" if baseline else None
        rec: dict[str, Any] = {
            "record_version": RECORD_VERSION,
            "run_id": run_id,
            "run_name": run.info.run_name or "",
            "experiment": self.experiment_name(run.info.experiment_id),
            "label": tags.get(schema.TAG_LABEL) or run.info.run_name or run_id[:8],
            "kind": tags.get(schema.TAG_KIND, ""),
            "method": tags.get(schema.TAG_METHOD, ""),
            "base_model": tags.get(schema.TAG_BASE_MODEL, ""),
            "base_revision": tags.get(schema.TAG_BASE_REVISION, ""),
            "config_hash": tags.get(schema.TAG_CONFIG_HASH, ""),
            "invariants_hash": tags.get(schema.TAG_INVARIANTS_HASH, ""),
            "invariants": _json_tag(tags.get(schema.TAG_INVARIANTS), {}),
            "scan": _json_tag(tags.get(schema.TAG_SCAN_PARAM), {}),
            "git_commit": tags.get(schema.TAG_GIT_COMMIT, ""),
            "parent_run_id": tags.get(schema.TAG_PARENT_RUN, ""),
            "baseline": {"run_id": baseline, "rule": rule} if baseline else None,
            "registered": self.registered().get(run_id, []),
            "health": sorted({h.strip() for h in tags.get(schema.TAG_HEALTH, "").split(",") if h.strip()}),
            "params": {
                k[len(schema.PARAM_PREFIX) :]: v
                for k, v in sorted(params.items())
                if k.startswith(schema.PARAM_PREFIX)
            },
            "train": self._train(run),
            "lm_eval": lm,
            "lm_eval_versions": lm_versions,
            "lm_eval_lower": lm_lower,
            "evals": {suite: eval_record(res) for suite, res in sorted(evals.items())},
            "time": _times(run),
            "cost": _cost(run),
            "rm": {k[3:]: v for k, v in sorted(metrics.items()) if k.startswith("rm/")},
            "samples": self._samples(eval_run, sorted(evals)),
            "rollouts": self._rollouts(run),
        }
        return rec

    # -- artifacts for the Samples and Reward-hacking pages -----------------------------
    def _artifact_path(self, run: Any, rel: str, tmp: str) -> Path | None:
        """A run's artifact file or folder `rel` on local disk (downloaded into `tmp` when the
        store is remote); None when the run has none."""
        local = _local_dir(run.info.artifact_uri)
        if local is not None:
            p = local / rel
            return p if p.exists() else None
        try:
            return Path(self.client.download_artifacts(run.info.run_id, rel, tmp))
        except Exception:
            return None

    def _samples(
        self, run: Any, suites: list[str], prefix: str = schema.EVAL_PREFIX
    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """suite -> task id -> a few completions with their verdicts (passing and failing ones,
        distinct categories first), from ``eval/<suite>/samples.jsonl`` and ``outcomes.jsonl``."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        with tempfile.TemporaryDirectory(prefix="rlvf-export-") as tmp:
            for suite in suites:
                base = f"{prefix}/{schema.suite_key(suite)}"
                sp = self._artifact_path(run, f"{base}/{schema.SAMPLES_ARTIFACT}", tmp)
                op = self._artifact_path(run, f"{base}/{schema.OUTCOMES_ARTIFACT}", tmp)
                if sp is None or op is None:
                    continue
                verdicts = {}
                for o in _jsonl(op):
                    verdicts[(int(o.get("seed", 0)), o.get("task_id"), int(o.get("index", 0)))] = o
                by_task: dict[str, list[dict[str, Any]]] = {}
                for smp in _jsonl(sp):
                    key = (int(smp.get("seed", 0)), smp.get("task_id"), int(smp.get("index", 0)))
                    o = verdicts.get(key)
                    if o is None:
                        continue
                    by_task.setdefault(str(key[1]), []).append(
                        {
                            "seed": key[0],
                            "index": key[2],
                            "completion": _clip(smp.get("completion", "")),
                            "category": o.get("category", ""),
                            "passed": bool(o.get("passed")),
                            "tests": [int(o.get("tests_passed", 0)), int(o.get("tests_total", 0))],
                            "flags": sorted(f for f in o.get("flags") or [] if f),
                            "detail": _clip(o.get("detail", ""), 200),
                        }
                    )
                if by_task:
                    out[suite] = {t: _pick_samples(rows) for t, rows in sorted(by_task.items())}
        return out

    def _rollouts(self, run: Any) -> dict[str, Any]:
        """The rollouts artifact of an RL run (`rlvf.rl.rollouts`) summarised: verdict categories
        and behaviour flags per (binned) training step, the hacking rate, and a few completions
        behind each category and flag. {} for runs without rollouts."""
        from rlvf.rl.rollouts import ARTIFACT_DIR, read_rollouts

        with tempfile.TemporaryDirectory(prefix="rlvf-export-") as tmp:
            d = self._artifact_path(run, ARTIFACT_DIR, tmp)
            if d is None or not d.is_dir():
                return {}
            try:
                rows = read_rollouts(d)
            except Exception as e:  # a rollouts file we cannot parse is the run's problem, said once
                raise UserError(f"run {run.info.run_id}: unreadable rollouts artifact ({e})") from None
        return summarize_rollouts(rows)

    def _base_eval_record(self, run: Any) -> str | None:
        """A base row from the base model's eval that a training run recorded (``base_eval/``),
        shared by every run that recorded the same one; returns its id, or None."""
        evals = self.evals(run.info.run_id, schema.BASE_EVAL_PREFIX)
        if not evals:
            return None
        tags = run.data.tags
        inv_hash = tags.get(schema.TAG_INVARIANTS_HASH, "")
        digest = hashlib.sha256(
            json.dumps(
                [inv_hash, {s: r.to_dict() for s, r in sorted(evals.items())}], sort_keys=True
            ).encode()
        ).hexdigest()[:12]
        sid = f"{SYNTHETIC_PREFIX}{digest}"
        if sid not in self.synthetic:
            base_model = tags.get(schema.TAG_BASE_MODEL, "")
            self.synthetic[sid] = {
                "record_version": RECORD_VERSION,
                "run_id": sid,
                "run_name": "",
                "experiment": "",  # runs of several experiments may share it: see recorded_by
                "label": f"base ({base_model})" if base_model else "base",
                "kind": "base_eval",
                "method": "base",
                "base_model": base_model,
                "base_revision": tags.get(schema.TAG_BASE_REVISION, ""),
                "config_hash": "",
                "invariants_hash": inv_hash,
                "invariants": _json_tag(tags.get(schema.TAG_INVARIANTS), {}),
                "scan": {},
                "git_commit": "",
                "parent_run_id": "",
                "baseline": None,
                "registered": [],
                "health": [],
                "params": {},
                "train": {},
                "lm_eval": _lm_eval(run.data.metrics, schema.BASE_LM_EVAL_PREFIX),
                "lm_eval_versions": _lm_meta(tags, schema.BASE_LM_EVAL_PREFIX)[0],
                "lm_eval_lower": _lm_meta(tags, schema.BASE_LM_EVAL_PREFIX)[1],
                "evals": {suite: eval_record(res) for suite, res in sorted(evals.items())},
                "time": {"start_ms": None, "end_ms": None, "wall_s": None},
                "cost": {},
                "rm": {},
                "samples": self._samples(run, sorted(evals), schema.BASE_EVAL_PREFIX),
                "rollouts": {},
                "recorded_by": [],
            }
        self.synthetic[sid]["recorded_by"] = sorted({*self.synthetic[sid]["recorded_by"], run.info.run_id})
        return sid

    def _train(self, run: Any) -> dict[str, Any]:
        m = run.data.metrics
        out: dict[str, Any] = {}
        for key in ("steps", "wall_s", "peak_mem_mb", "cost_usd"):
            if f"train/{key}" in m:
                out[key] = m[f"train/{key}"]
        if "train/loss" in m:
            curve = self._curve(run.info.run_id, "train/loss")
            out["final_loss"] = curve[-1][1] if curve else m["train/loss"]
            out["first_loss"] = curve[0][1] if curve else m["train/loss"]
            out["nonfinite_loss"] = any(not math.isfinite(v) for _, v in curve)
            out["loss_curve"] = _thin(curve) if len(curve) > 1 else []
        # the method's other curves (rlvf.methods: e.g. DPO's reward margins, GRPO's reward / KL)
        from rlvf.methods import curves

        extra = {}
        wanted = list(curves(run.data.tags.get(schema.TAG_METHOD))) + list(REPORT_CURVES)
        wanted += sorted(k for k in m if k.startswith(REPORT_CURVE_PREFIXES))
        for key in dict.fromkeys(wanted):
            if key != "train/loss" and key in m:
                curve = self._curve(run.info.run_id, key)
                if len(curve) > 1:
                    extra[key] = _thin(curve)
        if extra:
            out["curves"] = extra
        return out

    def _curve(self, run_id: str, key: str) -> list[list[float]]:
        hist = sorted(self.client.get_metric_history(run_id, key), key=lambda x: (x.step, x.timestamp))
        return [[int(h.step), float(h.value)] for h in hist]


TAG_GPU_TYPE = "rlvf.gpu_type"  # the GPU a run used (rlvf.tracking.runinfo), when it had one


def _times(run: Any) -> dict[str, float | None]:
    """Start and end of the run (epoch ms) and its wall time in seconds: the run's own
    `time/wall_s` when it logged one, else end − start as MLflow recorded them."""
    start, end = run.info.start_time, run.info.end_time
    wall = (end - start) / 1000.0 if start and end and end >= start else None
    wall = run.data.metrics.get("time/wall_s", wall)
    return {"start_ms": start, "end_ms": end, "wall_s": wall}


def _cost(run: Any) -> dict[str, Any]:
    """What a run cost, where it says (`cost/gpu_hours`, `cost/usd` or `train/cost_usd`, the
    GPU type tag): seeds 000/001 report GPU-hours and dollars beside wall time."""
    m, out = run.data.metrics, {}
    if "cost/gpu_hours" in m:
        out["gpu_hours"] = m["cost/gpu_hours"]
    usd = m.get("cost/usd", m.get("train/cost_usd"))
    if usd is not None:
        out["usd"] = usd
    if run.data.tags.get(TAG_GPU_TYPE):
        out["gpu"] = run.data.tags[TAG_GPU_TYPE]
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _clip(text: Any, n: int = MAX_TEXT) -> str:
    text = str(text or "")
    return text if len(text) <= n else text[:n] + f"\n… ({len(text) - n} more characters)"


def _pick_samples(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A handful of one task's completions: a passing one first (when there is one), then
    failing ones of distinct categories, in (seed, index) order."""
    rows = sorted(rows, key=lambda r: (r["seed"], r["index"]))
    picked = [r for r in rows if r["passed"]][:1]
    seen = set()
    for r in rows:
        if not r["passed"] and r["category"] not in seen:
            seen.add(r["category"])
            picked.append(r)
    for r in rows:  # fill up with whatever is left
        if len(picked) >= SAMPLES_PER_TASK:
            break
        if r not in picked:
            picked.append(r)
    return sorted(picked[:SAMPLES_PER_TASK], key=lambda r: (not r["passed"], r["seed"], r["index"]))


def summarize_rollouts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rollout rows -> per step bin: counts of each verdict category and behaviour flag, and
    the hacking rate (share of rollouts with a hacking category or any flag); examples."""
    if not rows:
        return {}
    steps = sorted({int(r.get("step", 0)) for r in rows})
    width = max(1, math.ceil(len(steps) / MAX_ROLLOUT_BINS))
    bin_of = {s: steps[(i // width) * width] for i, s in enumerate(steps)}
    bins = sorted(set(bin_of.values()))
    index = {b: i for i, b in enumerate(bins)}
    totals = [0] * len(bins)
    cats: dict[str, list[int]] = {}
    flags: dict[str, list[int]] = {}
    hacked = [0] * len(bins)
    examples: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (-int(r.get("step", 0)), str(r.get("task_id", "")))):
        i = index[bin_of[int(r.get("step", 0))]]
        totals[i] += 1
        cat = str(r.get("category") or "unknown")
        cats.setdefault(cat, [0] * len(bins))[i] += 1
        fl = sorted({f for f in (r.get("flags") or []) if f})
        for f in fl:
            flags.setdefault(f, [0] * len(bins))[i] += 1
        if cat in HACKING_CATEGORIES or fl:
            hacked[i] += 1
        ex = {
            "step": int(r.get("step", 0)),
            "task_id": str(r.get("task_id", "")),
            "reward": r.get("reward"),
            "category": cat,
            "flags": fl,
            "completion": _clip(r.get("completion", "")),
        }
        for key in [cat] + [f"flag:{f}" for f in fl]:  # latest steps first: what the policy became
            lst = examples.setdefault(key, [])
            if len(lst) < ROLLOUT_EXAMPLES and all(e["task_id"] != ex["task_id"] for e in lst):
                lst.append(ex)
    return {
        "n": len(rows),
        "steps": bins,
        "bin_width": width,
        "totals": totals,
        "categories": dict(sorted(cats.items())),
        "flags": dict(sorted(flags.items())),
        "hacking_rate": [h / t if t else 0.0 for h, t in zip(hacked, totals, strict=True)],
        "examples": dict(sorted(examples.items())),
    }


def _thin(curve: list[list[float]]) -> list[list[float]]:
    if len(curve) > MAX_CURVE_POINTS:
        step = (len(curve) - 1) / (MAX_CURVE_POINTS - 1)
        curve = [curve[round(i * step)] for i in range(MAX_CURVE_POINTS)]
    return curve


def _local_dir(uri: str) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def _json_tag(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


def _lm_meta(tags: dict[str, str], prefix: str = schema.LM_EVAL_PREFIX) -> tuple[dict[str, str], list[str]]:
    """(task -> task version, lower-is-better metric names) from a run's lm-eval tags."""
    head = schema.lm_eval_tag(prefix, "task_version.")
    versions = {k[len(head) :]: v for k, v in tags.items() if k.startswith(head)}
    lower = tags.get(schema.lm_eval_tag(prefix, "lower_is_better"), "")
    return dict(sorted(versions.items())), sorted(x for x in lower.split(",") if x)


def _lm_eval(
    metrics: dict[str, float], prefix: str = schema.LM_EVAL_PREFIX
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    prefix = prefix + "/"
    for key, value in metrics.items():
        if key.startswith(prefix) and not key.endswith("_stderr"):
            name = key[len(prefix) :]
            out[name] = {"value": value, "stderr": metrics.get(key + "_stderr")}
    return dict(sorted(out.items()))


def eval_record(res: EvalResult) -> dict[str, Any]:
    """An EvalResult in the registry-record layout `report.headtohead` compares."""
    keys = [str(s) for s in res.seeds]
    try:
        summary = summarize(res)
    except ValueError as e:
        raise UserError(str(e)) from None
    return {
        "suite": res.suite,
        "policy": res.policy,
        "seeds": [int(s) for s in res.seeds],
        "n_samples": res.n_samples,
        "task_ids": list(res.task_ids),
        "correct": {k: list(res.correct[k]) for k in keys},
        "categories": {k: res.categories[k] for k in keys if k in res.categories},
        "flags": {k: res.flags[k] for k in keys if k in res.flags},
        "task_meta": {t: res.task_meta[t] for t in res.task_ids if t in res.task_meta},
        "summary": summary,
    }


def collect(
    client: Any, sel: Selection, pairs: list[tuple[str, str]] = ()
) -> tuple[dict[str, dict], list[list[str]]]:
    """Select runs and read them (with their baselines and named pairs' runs) into records.

    Returns (records by run id, named pairs as run ids). Runs with neither evaluations nor
    training metrics (e.g. a pairs run picked up by an experiment filter) are left out.
    """
    col = Collector(client)
    ids = col.select(sel)
    named: list[list[str]] = []
    for a, b in pairs:
        named.append([_resolve_ref(col, a, ids), _resolve_ref(col, b, ids)])
    queue = list(dict.fromkeys(ids + [r for p in named for r in p]))
    records: dict[str, dict] = {}
    forced = {r for p in named for r in p}
    while queue:
        rid = queue.pop(0)
        if rid in records:
            continue
        rec = col.record(rid)
        if not (rec["evals"] or rec["lm_eval"] or rec["train"]) and rid not in forced:
            continue
        records[rid] = rec
        base = (rec["baseline"] or {}).get("run_id")
        if base in col.synthetic:
            records[base] = col.synthetic[base]
        elif base and base not in records:
            queue.append(base)
    if not records:
        raise UserError(
            "no runs to export: the selection matched no run with results"
            + (" (the default selects registered model versions and imported runs)" if sel.is_default else "")
        )
    return records, named


def _resolve_ref(col: Collector, ref: str, ids: list[str] = ()) -> str:
    """A run id, or a label (tag rlvf.label) naming exactly one run (selected runs first)."""
    from mlflow.exceptions import MlflowException

    try:
        col.client.get_run(ref)
        return ref
    except MlflowException:
        pass
    labelled = [r.info.run_id for r in col.search(f"tags.`{schema.TAG_LABEL}` = {_q(ref)}")]
    selected = [r for r in labelled if r in ids]
    hits = selected if len(selected) == 1 else labelled
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise UserError(f"label {ref!r} names {len(hits)} runs; use a run id")
    col.run(ref)  # not a run id either: raises "unknown run id"
    return ref


def resolve(client: Any, ref: str) -> dict[str, Any]:
    """One run's record, by run id or unique label."""
    col = Collector(client)
    return col.record(_resolve_ref(col, ref))
