"""The entry points as library calls: `run_dpo(load_config("dpo"))` is what
`mlflow run . -e dpo --env-manager local` does. Every registered method has a stage in
`STAGES`; the pieces live in small modules:

- `rlvf.methods.<name>`: what each method is (config, data, trainer, or its own stage)
- `rlvf.pipeline.lifecycle`: the one training lifecycle and the stage table
- `rlvf.pipeline.inputs`: model.init -> a local policy
- `rlvf.pipeline.base`: the base model (bootstrap on first use, its cached eval)
- `rlvf.pipeline.sampling`: verified samples for training data
- `rlvf.pipeline.finish`: evaluate, compare with the base, log the model, register
- `rlvf.pipeline.result`: StageResult

This module keeps the names older code imports.
"""

from __future__ import annotations

from rlvf.pipeline.base import base_eval, ensure_base, prefetch_base_eval
from rlvf.pipeline.finish import compare_with_base, finish_training, paired_delta
from rlvf.pipeline.inputs import PolicySource, resolve_init
from rlvf.pipeline.lifecycle import STAGES, run_training, stage_for
from rlvf.pipeline.result import StageResult
from rlvf.pipeline.sampling import base_samples, sample_and_verify

run_bootstrap = stage_for("bootstrap")
run_pairs = stage_for("pairs")
run_sft = stage_for("sft")
run_dpo = stage_for("dpo")
run_eval = stage_for("eval")

__all__ = [
    "STAGES",
    "PolicySource",
    "StageResult",
    "base_eval",
    "base_samples",
    "compare_with_base",
    "ensure_base",
    "finish_training",
    "paired_delta",
    "prefetch_base_eval",
    "resolve_init",
    "run_bootstrap",
    "run_dpo",
    "run_eval",
    "run_pairs",
    "run_sft",
    "run_training",
    "sample_and_verify",
]
