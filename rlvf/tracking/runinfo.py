"""What the MLflow UI shows first about a run: a readable name, the headline number in the
description, its wall time and cost.

Why: MLflow names runs `flawless-moth-3`, and a run's pass@1 hides among a hundred metrics.
Here a run is named by what it is (`dpo n_pairs=120 #1a2b3c`: the method, the settings that
differ from its recipe, a short config hash), its description says the headline
("procedural pass@1 0.698 ± 0.034 (± = std over 3 eval seeds)"), the same number is logged
under `_headline/...` (which sorts before every other metric), and `time/wall_s`,
`cost/gpu_hours` and `cost/usd` say what it cost (GPU-hours when the recipe names a GPU type
or the run used CUDA; dollars when it gives `cost.usd_per_hour`).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from rlvf.tracking import schema

HEADLINE_PREFIX = "_headline"
TAG_HEADLINE = "rlvf.headline"
TAG_GPU_TYPE = "rlvf.gpu_type"
NOTE = "mlflow.note.content"
RUN_NAME = "mlflow.runName"

# MLflow's generated names: adjective-animal-number (what a readable name replaces).
_MLFLOW_NAME = re.compile(r"^[a-z]+-[a-z]+-\d+$")
# Keys never shown in a name: they identify rather than describe (the hash covers them) or are
# already in it (the method).
_NOT_IN_NAME = ("method", "seed")
_MAX_SETTINGS = 3


def is_generated_name(name: str | None) -> bool:
    """Whether `name` is empty or one MLflow made up (so rlvf may replace it)."""
    return not name or bool(_MLFLOW_NAME.match(name))


def _short(value: Any) -> str:
    """A value as it reads in a run name: run ids cut to 6 characters, lists joined by ','."""
    from rlvf.tracking.runs import looks_like_run_id

    if isinstance(value, list):
        return ",".join(_short(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    text = re.sub(r"\b[0-9a-f]{32}\b", lambda m: m.group(0)[:6], text)
    return text if not looks_like_run_id(text) else text[:6]


def _init_label(init: str) -> str:
    """model.init as `<method>:<id6>` when it is a run of the store (else the short value)."""
    from rlvf.tracking.runs import client, looks_like_run_id

    if looks_like_run_id(init):
        with contextlib.suppress(Exception):
            method = client().get_run(init.strip()).data.tags.get(schema.TAG_METHOD)
            if method:
                return f"{method}:{init.strip()[:6]}"
    return _short(init)


def run_name(cfg: Any) -> str:
    """`<method> [key=value ...] [@recipe] #<hash6>`: the hashed settings that differ from the
    recipe's (at most three, the method's own section first), the recipe when it is not the
    default, and the first six characters of config_hash."""
    from rlvf.config.loader import DEFAULT_RECIPE, load_config

    parts = [cfg.method]
    if cfg.method == "eval" and not cfg.get("model.init"):
        parts.append("base")
    with contextlib.suppress(Exception):
        ref = load_config(cfg.method, cfg.recipe).hashed()
        mine = cfg.hashed()
        changed = [k for k in mine if k not in _NOT_IN_NAME and ref.get(k, object()) != mine[k]]
        changed += [k for k in ref if k not in mine and k not in _NOT_IN_NAME]
        own = [k for k in changed if k.startswith(f"{cfg.method}.")]
        changed = own + [k for k in changed if k not in own]
        shown = []
        for k in changed[:_MAX_SETTINGS]:
            v = mine.get(k)
            leaf = k.rsplit(".", 1)[-1]
            shown.append(f"{leaf}={_init_label(v) if k == 'model.init' and v else _short(v)}")
        if len(changed) > _MAX_SETTINGS:
            shown.append(f"+{len(changed) - _MAX_SETTINGS}")
        parts += shown
    recipe = str(getattr(cfg, "recipe", DEFAULT_RECIPE))
    if recipe != DEFAULT_RECIPE:
        parts.append("@" + (recipe.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")))
    parts.append(f"#{cfg.hash[:6]}")
    return " ".join(parts)


# --------------------------------------------------------------------------- cost


def cost_metrics(cfg: Any, wall_s: float) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) of a run's cost: wall time always; GPU-hours when `cost.gpu_type` is set
    or the run used CUDA; dollars when `cost.usd_per_hour` (the hourly price of what the run
    holds) is set. `train/cost_usd` repeats the dollars where the site reads them."""
    metrics = {"time/wall_s": round(wall_s, 3)}
    tags: dict[str, str] = {}
    gpu_type = cfg.get("cost.gpu_type")
    gpus = cfg.get("cost.gpus") or 1
    on_cuda = False
    if cfg.get("model.device") != "cpu":
        with contextlib.suppress(Exception):
            import sys

            torch = sys.modules.get("torch")  # a run that never imported torch used no GPU
            on_cuda = bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())
    hours = wall_s / 3600.0
    if gpu_type or on_cuda:
        metrics["cost/gpu_hours"] = round(hours * gpus, 6)
        tags[TAG_GPU_TYPE] = gpu_type or _cuda_name()
    price = cfg.get("cost.usd_per_hour")
    if price is not None:
        metrics["cost/usd"] = round(hours * price, 6)
        metrics["train/cost_usd"] = metrics["cost/usd"]
    return metrics, tags


def _cuda_name() -> str:
    with contextlib.suppress(Exception):
        import torch

        return torch.cuda.get_device_name(0)
    return "cuda"


# --------------------------------------------------------------------------- headline


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def headline(cfg: Any, metrics: dict[str, float]) -> tuple[str, dict[str, float]]:
    """(one line, headline metrics) from a finished run's metrics: pass@1 on the first eval
    suite with its std over seeds and the delta against the base, the RM's held-out accuracy,
    or a pairs run's pair count; ('', {}) when the run has none of them."""
    suites = cfg.get("eval.suites") or []
    seeds = cfg.get("eval.seeds") or []
    for suite in suites:
        key = schema.eval_metric(suite, "pass_at_1")
        if key not in metrics:
            continue
        mean = metrics[key]
        std = metrics.get(schema.eval_metric(suite, "pass_at_1_std"), 0.0)
        over = f"{len(seeds)} eval seed{'s' if len(seeds) != 1 else ''}"
        line = f"{suite} pass@1 {mean:.3f} ± {std:.3f} (± = std over {over})"
        base = metrics.get(schema.eval_metric(suite, "pass_at_1", schema.BASE_EVAL_PREFIX))
        delta = metrics.get(f"compare/{schema.suite_key(suite)}/delta_pass_at_1")
        se = metrics.get(f"compare/{schema.suite_key(suite)}/delta_stderr")
        if base is not None and delta is not None:
            line += f"; base {base:.3f}, delta {delta:+.3f}"
            if se is not None:
                line += f" ± {2 * se:.3f} (2×SE over tasks)"
        return line, {f"{HEADLINE_PREFIX}/pass_at_1": mean, f"{HEADLINE_PREFIX}/pass_at_1_std": std}
    if "rm/heldout_accuracy" in metrics:
        acc = metrics["rm/heldout_accuracy"]
        n = metrics.get("rm/heldout_pairs")
        over = f" over {int(n)} held-out pairs" if n is not None else ""
        return f"reward model pairwise accuracy {acc:.3f}{over}", {f"{HEADLINE_PREFIX}/rm_accuracy": acc}
    if "data/pairs" in metrics and cfg.method == "pairs":
        pool = metrics.get("data/pairs_pool")
        extra = f" (of a pool of {int(pool)})" if pool is not None else ""
        return f"{int(metrics['data/pairs'])} verified pairs{extra}", {
            f"{HEADLINE_PREFIX}/pairs": metrics["data/pairs"]
        }
    return "", {}


def describe(run: Any, cfg: Any, wall_s: float) -> None:
    """At the end of a finished run: log its cost and headline metrics and write the
    description (`mlflow.note.content`) and `rlvf.headline` tag. Never fails the run."""
    with contextlib.suppress(Exception):
        cost, tags = cost_metrics(cfg, wall_s)
        run.metrics(cost)
        run.flush()
        recorded = run.client.get_run(run.run_id)
        metrics = dict(recorded.data.metrics)
        line, head = headline(cfg, metrics)
        if head:
            run.metrics(head)
            run.flush()
        parts = [line] if line else []
        spent = f"wall {_duration(wall_s)}"
        if "cost/gpu_hours" in cost:
            spent += f", {cost['cost/gpu_hours']:.3f} GPU-h ({tags.get(TAG_GPU_TYPE, 'GPU')})"
        if "cost/usd" in cost:
            spent += f", ${cost['cost/usd']:.2f}"
        parts.append(spent)
        tags[NOTE] = "\n\n".join(parts)
        if line:
            tags[TAG_HEADLINE] = line
        run.tags(tags)
