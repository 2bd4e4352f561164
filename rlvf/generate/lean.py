"""One decode step of a Llama-style model without transformers' per-call machinery.

On a small model a decode step is dominated by Python, not arithmetic: each call of
`LlamaForCausalLM.forward` goes through keyword deprecation shims, output capturing, config
defaults, a causal-mask builder, cache bookkeeping and gradient-checkpointing wrappers, for
two layers of a few small matmuls. This module runs the same step by calling the model's own
submodules (embedding, rotary embedding, norms, projections, MLP, head) and transformers'
own attention function in the order the model's forward does, with the same arguments: the
logits are bit for bit those of `model(...)` (a test checks it), only the wrappers are gone.

Only decoder layers whose forward is Llama's (q/k/v/o projections, rotary embedding, full
attention through sdpa, a gated MLP, pre-norms) take this path: `lean_step(model)` returns
None for any other model (sliding windows, q/k norms, eager or flash attention, encoder-
decoders, ...), and the caller keeps calling the model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

# Model types whose decoder layer is Llama's, as far as a decode step goes.
LLAMA_LIKE = ("llama", "qwen2")
_LAYER_PARTS = ("input_layernorm", "post_attention_layernorm", "self_attn", "mlp")
_ATTN_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")


def _inner(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (its submodules are the same objects)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _supported(model: Any) -> bool:
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in LLAMA_LIKE:
        return False
    if getattr(cfg, "_attn_implementation", None) != "sdpa" or getattr(cfg, "is_encoder_decoder", False):
        return False
    if getattr(cfg, "use_sliding_window", False) or any(
        t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])
    ):
        return False
    body = getattr(model, "model", None)
    if body is None or not all(hasattr(body, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return False
    if not hasattr(model, "lm_head"):
        return False
    for layer in body.layers:
        if not all(hasattr(layer, a) for a in _LAYER_PARTS):
            return False
        attn = layer.self_attn
        if not all(hasattr(attn, a) for a in _ATTN_PARTS) or hasattr(attn, "q_norm"):
            return False
        if getattr(attn, "sliding_window", None):
            return False
    return True


def lean_step(model: Any) -> Callable[..., Any] | None:
    """A function `step(input_ids, mask, positions, cache) -> logits` for one decode step
    (one new token per row, float32 logits of shape rows x vocab), or None when the model's
    layers are not Llama's and the caller must call the model itself.

    `mask` is the 2-D attention mask over every cached token plus the new one, `positions`
    the new token's position per row, `cache` the transformers Cache the prompt pass filled.
    """
    model = _inner(model)
    if not _supported(model):
        return None
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    body = model.model
    attend = ALL_ATTENTION_FUNCTIONS["sdpa"]
    rope = sys.modules[type(body.layers[0].self_attn).__module__].apply_rotary_pos_emb
    layers = list(body.layers)[: model.config.num_hidden_layers]

    def step(input_ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        # transformers passes no mask to sdpa when nothing is padded (one query attends to
        # every cached key), else the padding mask as booleans, one per row and key.
        attn_mask = None if bool(mask.all()) else mask.bool()[:, None, None, :]
        hidden = body.embed_tokens(input_ids)
        cos_sin = body.rotary_emb(hidden, position_ids=positions)
        rows = hidden.shape[:-1]
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            shape = (*rows, -1, attn.head_dim)
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(shape).transpose(1, 2)
            k = attn.k_proj(x).view(shape).transpose(1, 2)
            v = attn.v_proj(x).view(shape).transpose(1, 2)
            q, k = rope(q, k, *cos_sin)
            k, v = cache.update(k, v, i)
            out, _ = attend(attn, q, k, v, attn_mask, dropout=0.0, scaling=attn.scaling)
            hidden = hidden + attn.o_proj(out.reshape(*rows, -1).contiguous())
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = body.norm(hidden)
        return model.lm_head(hidden[:, -1:, :])[:, -1, :].float()

    return step
