"""`--resume RUN_ID`: continue a training run from its last checkpoint, in the same MLflow run.

Why: a run that dies (kill -9, OOM, power loss, a closed terminal) or is stopped (Ctrl-C,
SIGTERM) should cost at most the steps since its last checkpoint, and its results belong in
the run that started them, not a second one.

Rule: run the command that started the run again, with `--resume RUN_ID` (the config must
have the same config_hash: same recipe and --set values; logging, paths and workers may
differ). Under `mlflow run`, pass MLflow's own `--run-id RUN_ID` (no second run is made), or
`-P tracking.resume=RUN_ID` (the run MLflow made for the call is discarded). The run is
reopened as RUNNING whether it ended FAILED (including `rlvf.error=abandoned`) or KILLED;
training continues from the newest complete checkpoint under the run's output folder
(tag `rlvf.output_dir`, checkpoints every `train.save_steps`); metrics the run already
holds for a step are not logged again, so each curve continues where it was cut; a run that
finished, registered a version or is still alive is refused with one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvf.errors import UserError
from rlvf.tracking import schema

TAG_OUTPUT_DIR = "rlvf.output_dir"
TAG_RESUMED = "rlvf.resumed_from_step"


@dataclass(frozen=True)
class Resume:
    """A checked run to continue: where its checkpoints are and the newest one's step."""

    run_id: str
    output_dir: Path
    checkpoint: Path

    @property
    def step(self) -> int:
        return int(self.checkpoint.name.removeprefix("checkpoint-"))


def requested(cfg: Any) -> str | None:
    """The run id to continue: tracking.resume, or under `mlflow run --run-id` a run that
    rlvf already opened once (a run MLflow just made has no `rlvf.proc` tag)."""
    if cfg.get("tracking.resume"):
        return str(cfg["tracking.resume"]).strip()
    env_run = os.environ.get("MLFLOW_RUN_ID", "").strip()
    if not env_run:
        return None
    from rlvf.tracking.liveness import TAG_PROC
    from rlvf.tracking.runs import get_run
    from rlvf.tracking.store import open_store

    open_store()
    return env_run if TAG_PROC in get_run(env_run, "MLFLOW_RUN_ID").data.tags else None


def target(cfg: Any) -> Resume | None:
    """The run `cfg` continues (None: a new run), checked before anything is reopened."""
    run_id = requested(cfg)
    if not run_id:
        return None
    from rlvf.tracking.runs import get_run
    from rlvf.tracking.store import open_store
    from rlvf.train.common import last_checkpoint

    open_store()  # ends runs whose process died (kill -9): those are what gets resumed
    run = get_run(run_id, "--resume")
    if run.info.status == "RUNNING":  # died since this process first swept the store?
        from rlvf.tracking.liveness import sweep
        from rlvf.tracking.runs import client

        sweep(client())
        run = get_run(run_id, "--resume")
    tags, status = run.data.tags, run.info.status
    what = f"--resume {run_id}"
    if tags.get(schema.TAG_METHOD) != cfg.method:
        raise UserError(f"{what}: it is a {tags.get(schema.TAG_METHOD) or 'non-rlvf'} run, not {cfg.method}")
    if status == "FINISHED":
        raise UserError(f"{what}: the run already finished; nothing to resume")
    if status not in ("FAILED", "KILLED"):
        raise UserError(f"{what}: the run is {status} (its process is alive, or on another machine)")
    if tags.get("rlvf.registered_version"):
        raise UserError(f"{what}: the run already registered version {tags['rlvf.registered_version']}")
    if tags.get(schema.TAG_CONFIG_HASH) != cfg.hash:
        raise UserError(
            f"{what}: the run has config_hash {tags.get(schema.TAG_CONFIG_HASH)}, this config "
            f"{cfg.hash}: give the recipe and --set values that started it (its config.yaml)"
        )
    out = tags.get(TAG_OUTPUT_DIR)
    ckpt = last_checkpoint(Path(out) / "trainer") if out and Path(out).is_dir() else None
    if ckpt is None:
        raise UserError(
            f"{what}: no checkpoint in {out or 'its output folder'} to continue from "
            f"(train.save_steps {cfg['train.save_steps']}); start a new run instead"
        )
    return Resume(run_id, Path(out), ckpt)
