"""bootstrap: train (or reuse) the embedded base model and record it as a run."""

from __future__ import annotations

import time
from typing import Any

from rlvf.errors import UserError
from rlvf.methods.registry import Method
from rlvf.pipeline.base import base_revision
from rlvf.pipeline.result import StageResult


def run_bootstrap(cfg: Any) -> StageResult:
    """Bootstrap (or reuse) the embedded model and record it as a run."""
    from rlvf.models.bootstrap import bootstrap, parse_embedded, read_info
    from rlvf.models.loader import is_embedded
    from rlvf.tracking.runs import start_run

    policy = cfg["model.policy"]
    if not is_embedded(policy):
        raise UserError(f"bootstrap: model.policy must be 'embedded' or 'embedded:<config>', got '{policy}'")
    name = parse_embedded(policy)
    t0 = time.perf_counter()
    with start_run(cfg, "bootstrap", base_revision=base_revision(cfg)) as run:
        path = bootstrap(name, progress=cfg["tracking.progress"])
        info = read_info(path)
        tr = info.get("train", {})
        curve = tr.get("loss_curve") or []
        every = max(1, int(tr.get("steps", len(curve)) or 1) // max(1, len(curve)))
        for i, v in enumerate(curve):
            run.metric("train/loss", v, step=i * every)
        run.metrics(
            {
                "train/steps": tr.get("steps", 0),
                "train/wall_s": sum((info.get("seconds") or {}).values()),
                "bootstrap/parameters": info.get("parameters", 0),
                "bootstrap/documents": (info.get("corpus") or {}).get("documents_kept", 0),
            }
        )
        run.log_dict("bootstrap.json", info)
        run.tag("rlvf.model_dir", str(path))
        res = StageResult(run.run_id, "bootstrap", cfg.hash)
    res.seconds = time.perf_counter() - t0
    res.summary.append(f"embedded model '{name}' at {path}")
    return res


METHOD = Method(
    name="bootstrap",
    help="Bootstrap (or reuse) the embedded model and record it as a run.",
    kind="bootstrap",
    mlproject=("policy",),
    run=run_bootstrap,
)
