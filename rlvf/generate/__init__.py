"""Sampling: n completions per task from any policy, cleaned up once, as `Sample` records."""

from rlvf.generate.cleanup import (
    MISSING_ENTRY_POINT,
    Cleaned,
    clean_completion,
    defines_entry_point,
    strip_fences,
    truncate_function,
)
from rlvf.generate.engine import (
    HFBackend,
    SamplingSettings,
    Throughput,
    generate,
    generate_samples,
    vllm_available,
)

__all__ = [
    "MISSING_ENTRY_POINT",
    "Cleaned",
    "HFBackend",
    "SamplingSettings",
    "Throughput",
    "clean_completion",
    "defines_entry_point",
    "generate",
    "generate_samples",
    "strip_fences",
    "truncate_function",
    "vllm_available",
]
