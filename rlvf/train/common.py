"""What SFT and DPO share: the policy to start from, trainer arguments, saving the result."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvf.errors import UserError
from rlvf.runtime import cpu_threads  # noqa: F401  (re-exported: older imports)

POLICY_FILE = "rlvf_policy.json"  # next to the weights / adapter: how to load them back


@dataclass
class TrainResult:
    """A trained policy on disk and how training went."""

    policy_dir: Path
    spec: Any  # rlvf.models.loader.PolicySpec that loads the trained policy
    steps: int = 0
    wall_s: float = 0.0
    n_examples: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def device_of(cfg: Any) -> str:
    from rlvf.models.loader import resolve_device

    return resolve_device(cfg["model.device"])


def base_spec(cfg: Any, init_dir: Path | None = None):
    """The PolicySpec training starts from: the base, or a trained policy (model.init)."""
    from rlvf.models.loader import PolicySpec

    kw = dict(
        revision=cfg["model.revision"],
        dtype=cfg["model.dtype"],
        device=cfg["model.device"],
        load_in_4bit=cfg["model.quantization"] == "nf4",
        gradient_checkpointing=cfg.get("train.gradient_checkpointing", False),
    )
    if init_dir is None:
        return PolicySpec(base=cfg["model.policy"], **kw)
    return spec_from_dir(init_dir, **kw)


def spec_from_dir(path: Path, **kw: Any):
    """A PolicySpec for a directory rlvf saved (full weights or an adapter), or any HF model dir."""
    from rlvf.models.loader import PolicySpec

    path = Path(path)
    info_file = path / POLICY_FILE
    if info_file.exists():
        info = json.loads(info_file.read_text())
        if info.get("finetune") == "lora":
            kw["revision"] = info.get("revision")
            return PolicySpec(base=info["base"], adapter=str(path), **kw)
        kw["revision"] = None
        return PolicySpec(base=str(path), **kw)
    if (path / "adapter_config.json").exists():
        cfg = json.loads((path / "adapter_config.json").read_text())
        base = cfg.get("base_model_name_or_path")
        if not base:
            raise UserError(f"{path}: adapter without base_model_name_or_path; cannot tell its base model")
        return PolicySpec(base=base, adapter=str(path), **kw)
    if (path / "config.json").exists():
        kw["revision"] = None
        return PolicySpec(base=str(path), **kw)
    raise UserError(f"{path}: neither a model nor an adapter directory")


def lora_spec(cfg: Any):
    from rlvf.models.loader import LoraSpec

    if cfg["model.finetune"] != "lora":
        return None
    return LoraSpec(
        r=cfg["lora.r"],
        alpha=cfg["lora.alpha"],
        dropout=cfg["lora.dropout"],
        targets=tuple(cfg["lora.targets"]),
    )


def output_dir(cfg: Any, run_id: str | None) -> Path:
    root = cfg.get("tracking.output_dir")
    if root:
        p = Path(root).expanduser() / (run_id or "local")
        p.mkdir(parents=True, exist_ok=True)
        return p
    return Path(tempfile.mkdtemp(prefix=f"rlvf-{cfg.method}-"))


def trainer_args(cfg: Any, out: Path, device: str) -> dict[str, Any]:
    """TrainingArguments fields common to SFT and DPO (TRL's own defaults do not suit a tiny
    model: lr 1e-6 and gradient checkpointing on; bf16 on by default is wrong on CPU)."""
    cuda = device.startswith("cuda")
    bf16 = False
    if cuda:
        import torch

        bf16 = torch.cuda.is_bf16_supported()
    return dict(
        output_dir=str(out),
        num_train_epochs=cfg["train.epochs"],
        max_steps=cfg["train.max_steps"],
        learning_rate=cfg["train.learning_rate"],
        lr_scheduler_type=cfg["train.lr_scheduler"],
        warmup_steps=cfg["train.warmup_ratio"],  # transformers 5: a float < 1 is a ratio
        weight_decay=cfg["train.weight_decay"],
        per_device_train_batch_size=cfg["train.batch_size"],
        gradient_accumulation_steps=cfg["train.grad_accum"],
        max_length=cfg["train.max_length"],
        gradient_checkpointing=cfg["train.gradient_checkpointing"],
        logging_steps=cfg["train.logging_steps"],
        logging_first_step=True,
        seed=cfg["seed"],
        data_seed=cfg["seed"],
        report_to=[],
        save_strategy="no",
        bf16=bf16,
        fp16=False,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        disable_tqdm=not cfg["tracking.progress"],
        remove_unused_columns=True,
    )


def save_policy(trainer: Any, tok: Any, out: Path, cfg: Any, init_spec: Any) -> Any:
    """Save what training produced (adapter or full weights) + rlvf_policy.json; returns its PolicySpec."""
    from rlvf.models.loader import PolicySpec

    out.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    is_lora = hasattr(model, "peft_config")
    base = init_spec.base
    info = {
        "finetune": "lora" if is_lora else "full",
        "base": base,
        "revision": init_spec.revision,
        "method": cfg.method,
        "base_policy": cfg["model.policy"],
        "config_hash": cfg.hash,
    }
    (out / POLICY_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    kw = dict(dtype=init_spec.dtype, device=init_spec.device, load_in_4bit=init_spec.load_in_4bit)
    if is_lora:
        return PolicySpec(base=base, revision=init_spec.revision, adapter=str(out), **kw)
    return PolicySpec(base=str(out), **kw)


@contextlib.contextmanager
def quiet(progress: bool):
    """Without progress: no datasets / transformers progress bars (restored afterwards)."""
    if progress:
        yield
        return
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    ds_was = datasets.utils.logging.is_progress_bar_enabled()
    hf_was = hf_logging.is_progress_bar_enabled()
    tqdm_was = os.environ.get("TQDM_DISABLE")
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"  # TRL's reference log-prob pass reads this
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            yield
    finally:
        if tqdm_was is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_was
        if ds_was:
            datasets.enable_progress_bars()
        if hf_was:
            hf_logging.enable_progress_bar()


def drop_printer(trainer: Any, progress: bool) -> None:
    """rlvf logs metrics itself; transformers' PrinterCallback would print every log dict."""
    from transformers.trainer_callback import PrinterCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
