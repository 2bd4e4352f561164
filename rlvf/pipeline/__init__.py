"""The entry points (bootstrap, pairs, sft, dpo, eval) as library calls and command lines."""

from rlvf.pipeline.stages import (
    STAGES,
    StageResult,
    run_bootstrap,
    run_dpo,
    run_eval,
    run_pairs,
    run_sft,
)

__all__ = ["STAGES", "StageResult", "run_bootstrap", "run_dpo", "run_eval", "run_pairs", "run_sft"]
