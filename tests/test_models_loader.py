"""The one policy loader: specs, errors, LoRA, adapters, on the real embedded:small model."""

from __future__ import annotations

import pytest
import torch

from rlvf.errors import UserError
from rlvf.models import (
    DEFAULT_LORA_TARGETS,
    LoraSpec,
    PolicySpec,
    apply_lora,
    load_policy,
    peft_config,
    prepare_tokenizer,
    resolve_base,
)


def test_four_bit_on_cpu_is_a_clear_user_error(tiny_policy):
    with pytest.raises(UserError, match=r"4-bit .*CUDA GPU"):
        load_policy(PolicySpec(base=str(tiny_policy), device="cpu", load_in_4bit=True))


def test_spec_and_path_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="dtype"):
        PolicySpec(base="embedded", dtype="float8")
    with pytest.raises(UserError, match="empty"):
        PolicySpec(base="")
    with pytest.raises(UserError, match="no such model directory"):
        resolve_base(str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"no config\.json"):
        resolve_base(str(tmp_path))
    with pytest.raises(UserError, match="unknown config 'huge'"):
        resolve_base("embedded:huge")
    with pytest.raises(UserError, match="no such adapter"):
        load_policy(PolicySpec(base="embedded:small", adapter=str(tmp_path / "missing")))
    with pytest.raises(UserError, match="dropout"):
        LoraSpec(dropout=1.5)


def test_hub_ids_pass_through_unresolved():
    assert resolve_base("Qwen/Qwen2.5-Coder-0.5B-Instruct") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"


def test_load_policy_prepares_tokenizer_for_batched_generation(tiny_policy):
    model, tok = load_policy(PolicySpec(base="embedded:small", dtype="float32", device="cpu"))
    assert model.name_or_path == str(tiny_policy)
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert tok.pad_token_id != tok.eos_token_id
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert model.generation_config.pad_token_id == tok.pad_token_id


def test_missing_pad_token_falls_back_to_eos(tiny_model):
    import copy

    tok = copy.deepcopy(tiny_model[1])
    tok.pad_token = None
    tok.padding_side = "right"
    prepare_tokenizer(tok)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"


def test_lora_defaults_are_seed_002s():
    cfg = peft_config(LoraSpec())
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (16, 32, 0.05)
    assert set(cfg.target_modules) == set(DEFAULT_LORA_TARGETS)
    assert set(DEFAULT_LORA_TARGETS) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert peft_config(LoraSpec(enabled=False)) is None  # full fine-tuning
    assert peft_config(LoraSpec(targets=("all-linear",))).target_modules == "all-linear"


def test_apply_lora_trains_only_adapters_and_adapter_round_trips(tmp_path, tiny_policy):
    model, tok = load_policy(PolicySpec(base=str(tiny_policy), device="cpu"), trainable=True)
    assert model.training
    with pytest.raises(UserError, match="not in this model"):
        apply_lora(model, LoraSpec(targets=("c_attn",)))
    assert apply_lora(model, LoraSpec(enabled=False)) is model
    peft_model = apply_lora(model, LoraSpec(r=4, alpha=8))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    wrapped = {n.split(".")[-4] for n in trainable if n.endswith("lora_A.default.weight")}
    assert wrapped == set(DEFAULT_LORA_TARGETS)
    # move the adapter away from zero so the round trip is observable
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = tok("def f(x):\n", return_tensors="pt")["input_ids"]
    peft_model.eval()
    with torch.no_grad():
        want = peft_model(ids).logits
    loaded, _ = load_policy(
        PolicySpec(base=str(tiny_policy), adapter=str(tmp_path / "adapter"), device="cpu")
    )
    base, _ = load_policy(PolicySpec(base=str(tiny_policy), device="cpu"))
    with torch.no_grad():
        got = loaded(ids).logits
        plain = base(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_gradient_checkpointing_is_switched_on(tiny_policy):
    model, _ = load_policy(
        PolicySpec(base=str(tiny_policy), device="cpu", gradient_checkpointing=True), trainable=True
    )
    assert model.is_gradient_checkpointing
