"""Policies: rlvf's embedded base model (`bootstrap`) and the one loader every method uses."""

from rlvf.models.loader import (
    DEFAULT_LORA_TARGETS,
    LoraSpec,
    PolicySpec,
    apply_lora,
    is_embedded,
    load_policy,
    load_tokenizer,
    peft_config,
    prepare_tokenizer,
    resolve_base,
)

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "LoraSpec",
    "PolicySpec",
    "apply_lora",
    "is_embedded",
    "load_policy",
    "load_tokenizer",
    "peft_config",
    "prepare_tokenizer",
    "resolve_base",
]
