"""One model loader for every method: sampling, SFT, DPO, GRPO, PPO, evaluation.

A policy is a base model plus an optional adapter:

- `PolicySpec.base` is a hub id (``Qwen/Qwen2.5-Coder-0.5B-Instruct``), a local model
  directory, or ``embedded`` / ``embedded:<config>`` (rlvf's own small model, bootstrapped
  on first use, see `rlvf.models.bootstrap`);
- `PolicySpec.adapter` is a PEFT adapter directory trained on top of that base.

`load_policy(spec)` returns ``(model, tokenizer)`` with the tokenizer ready for batched
generation (left padding, a pad token). `peft_config(LoraSpec())` is what TRL trainers
take as ``peft_config``; `apply_lora` does the same for code that drives its own loop.
Full fine-tuning is `LoraSpec(enabled=False)` (or no LoraSpec at all).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvf.errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class PolicySpec:
    """What to load: a base model, an optional adapter, and how to place it."""

    base: str = "embedded"
    revision: str | None = None
    adapter: str | None = None
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    load_in_4bit: bool = False  # NF4 through bitsandbytes, GPU only
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.base:
            raise UserError("policy: the base model is empty (use 'embedded', a hub id or a model directory)")
        if self.dtype not in DTYPES:
            raise UserError(f"policy: dtype '{self.dtype}' is not one of {', '.join(DTYPES)}")

    @property
    def name(self) -> str:
        """A short, stable label: base[@revision][+adapter]."""
        s = self.base + (f"@{self.revision}" if self.revision else "")
        return s + (f"+{self.adapter}" if self.adapter else "")


@dataclass(frozen=True)
class LoraSpec:
    """LoRA settings; the defaults are seed 002's (r 16, alpha 32, dropout 0.05, q/k/v/o/gate/up/down)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    enabled: bool = True  # False: full fine-tuning

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise UserError(f"lora: r and alpha must be at least 1 (got r={self.r}, alpha={self.alpha})")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"lora: dropout must be in [0, 1) (got {self.dropout})")
        object.__setattr__(self, "targets", tuple(self.targets))


def is_embedded(base: str) -> bool:
    return base == "embedded" or base.startswith("embedded:")


def resolve_base(base: str) -> str:
    """A local directory or hub id for `base`; 'embedded[:config]' is bootstrapped on first use."""
    if is_embedded(base):
        from rlvf.models.bootstrap import ensure_embedded

        return str(ensure_embedded(base))
    path = Path(os.path.expanduser(base))
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(f"policy: {base} is a path but holds no model (no config.json)")
        return str(path)
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise UserError(f"policy: no such model directory: {base}")
    return base  # a hub id


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"policy: device '{device}' asked for, but no CUDA GPU is available here")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def load_tokenizer(spec: PolicySpec | str):
    """The policy's tokenizer, padded on the left and with a pad token (for batched generation)."""
    from transformers import AutoTokenizer

    spec = PolicySpec(base=spec) if isinstance(spec, str) else spec
    source = resolve_base(spec.base)
    kwargs: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    if spec.adapter and (Path(spec.adapter) / "tokenizer_config.json").exists():
        source, kwargs = spec.adapter, {}
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"policy: could not load the tokenizer of {spec.base}: {_first_line(e)}") from None
    prepare_tokenizer(tok)
    return tok


def prepare_tokenizer(tok) -> None:
    """Left padding and a pad token, in place (a missing pad token becomes EOS)."""
    tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UserError("policy: the tokenizer has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token


def _from_pretrained_kwargs(spec: PolicySpec, device: str) -> dict[str, Any]:
    """`from_pretrained` arguments for `spec` on `device`: dtype, revision, NF4 quantisation."""
    import torch

    dtype = resolve_dtype(spec.dtype, device)
    kwargs: dict[str, Any] = {
        "revision": spec.revision,
        "trust_remote_code": spec.trust_remote_code,
        "dtype": dtype,
    }
    if spec.load_in_4bit:
        if not device.startswith("cuda"):
            raise UserError(
                "policy: 4-bit (NF4) loading needs a CUDA GPU and bitsandbytes; "
                f"this run is on '{device}'. Drop load_in_4bit / quantization: nf4 on CPU."
            )
        from transformers import BitsAndBytesConfig

        compute = dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": torch.device(device).index or 0}
    if spec.adapter and not Path(spec.adapter).exists():
        raise UserError(f"policy: no such adapter directory: {spec.adapter}")
    return kwargs


def _prepare_loaded(model, tok, spec: PolicySpec, trainable: bool):
    """Pad token ids, k-bit preparation and gradient checkpointing, shared by both heads."""
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if spec.load_in_4bit and trainable:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)
    elif spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def load_policy(spec: PolicySpec | str, *, trainable: bool = False):
    """Load `spec` and return ``(model, tokenizer)``.

    The model is in eval mode unless `trainable`; an adapter is attached as a PEFT model
    (trainable only when `trainable`). For training from scratch with LoRA, pass
    `peft_config(lora)` to the TRL trainer or call `apply_lora`.
    """
    from transformers import AutoModelForCausalLM

    spec = PolicySpec(base=spec) if isinstance(spec, str) else spec
    device = resolve_device(spec.device)
    kwargs = _from_pretrained_kwargs(spec, device)
    source = resolve_base(spec.base)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"policy: could not load {spec.base}: {_first_line(e)}") from None
    if not spec.load_in_4bit:
        model.to(device)
    tok = load_tokenizer(spec)
    model = _prepare_loaded(model, tok, spec, trainable)
    if spec.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.adapter, is_trainable=trainable)
    model.train(trainable)
    return model, tok


def load_sequence_classifier(spec: PolicySpec | str, *, trainable: bool = False, merge: bool = True):
    """``(model, tokenizer)`` with a one-output sequence-classification head (a reward model)
    over `spec`'s transformer: the base's own head when it has one (a saved reward model),
    else a new, randomly initialised `score` layer over a causal LM's trunk.

    An adapter is attached (a LoRA reward model's adapter carries its `score` head as a module
    to save) and, with `merge`, merged into the weights: faster to score with, and a causal
    policy's adapter merged this way is the starting point for training a reward model.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    spec = PolicySpec(base=spec) if isinstance(spec, str) else spec
    device = resolve_device(spec.device)
    kwargs = _from_pretrained_kwargs(spec, device)
    source = resolve_base(spec.base)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight: newly initialised" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"reward model: could not load {spec.base} with a score head: {_first_line(e)}"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if not spec.load_in_4bit:
        model.to(device)
    tok = load_tokenizer(spec)
    model = _prepare_loaded(model, tok, spec, trainable)
    if spec.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.adapter, is_trainable=trainable and not merge)
        if merge:
            model = model.merge_and_unload()
    model.train(trainable)
    return model, tok


def peft_config(lora: LoraSpec | None):
    """A peft `LoraConfig` for TRL trainers' ``peft_config=``; None means full fine-tuning."""
    if lora is None or not lora.enabled:
        return None
    from peft import LoraConfig

    targets: list[str] | str = list(lora.targets)
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(model, lora: LoraSpec | None):
    """Wrap `model` with fresh LoRA adapters (or return it as is for full fine-tuning)."""
    cfg = peft_config(lora)
    if cfg is None:
        return model
    assert lora is not None
    if lora.targets != ("all-linear",):
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in lora.targets if t not in names]
        if missing:
            raise UserError(
                f"lora: target modules {missing} are not in this model "
                f"(its linear layers: {', '.join(sorted(_linear_names(model)))})"
            )
    from peft import get_peft_model

    return get_peft_model(model, cfg)


def _linear_names(model) -> set[str]:
    import torch

    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


__all__ = [
    "DEFAULT_LORA_TARGETS",
    "LoraSpec",
    "PolicySpec",
    "apply_lora",
    "is_embedded",
    "load_policy",
    "load_sequence_classifier",
    "load_tokenizer",
    "peft_config",
    "prepare_tokenizer",
    "resolve_base",
    "resolve_device",
]
