"""The entry points (bootstrap, pairs, sft, dpo, eval, and every other registered method) as
library calls and command lines. Loaded on first use: the method modules import the pipeline's
helpers while the config schema is being derived from them."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["STAGES", "StageResult", "run_bootstrap", "run_dpo", "run_eval", "run_pairs", "run_sft"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("rlvf.pipeline.stages"), name)
    raise AttributeError(f"module 'rlvf.pipeline' has no attribute '{name}'")
