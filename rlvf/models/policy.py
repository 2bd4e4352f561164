"""A trained policy on disk: what training saves (full weights or a LoRA adapter, plus
rlvf_policy.json saying how to load it back) and the PolicySpec that loads such a directory.
Lives with the models so loading a policy (the sampler, the MLflow pyfunc) needs no training code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvf.errors import UserError

POLICY_FILE = "rlvf_policy.json"  # next to the weights / adapter: how to load them back


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
