"""A sampling loop that drops finished rows from the batch as it goes.

`model.generate` keeps every row of a batch in the forward pass until the *last* row is
done: one sample that rambles to `max_new_tokens` makes the whole batch pay for it, and on
small models that long tail erased most of batching's gain. This loop is plain incremental
decoding on the model's own KV cache (a `transformers` Cache with `batch_select_indices`,
passed under whichever name the installed transformers takes: `cache_kwarg`),
with transformers' temperature / top-p warpers, that removes rows from the cache once they
stop. Encoder-decoder models use `model.generate` instead (`supports_pruning`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from rlvf.generate.lean import lean_step

# Prune only once this share of the active rows has finished: dropping rows copies the
# cache, so doing it for every single finished row would cost more than it saves.
PRUNE_SHARE = 0.125


def cache_kwarg(model: Any) -> str:
    """The name the model's forward takes its KV cache under.

    transformers renamed `past_key_values` to `cache` during 5.x and will drop the old name in
    5.40; this project allows any 5.x, so ask the model class (under a PEFT wrapper, the base
    model's) which one it takes instead of pinning a minor version.
    """
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(inner).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _prefill_once(model: Any, input_ids: Any, mask: Any, positions: Any, cache: Any, cache_arg: dict) -> Any:
    """Last-position logits of every row, running each distinct prompt through the model once.

    n samples of one prompt sit in one batch as identical rows; their prompt pass is the
    most expensive forward of the whole loop, so it runs on the distinct rows and the KV cache
    is then copied out to every row (`batch_select_indices` with repeated indices).
    """
    import torch

    uniq, inverse = torch.unique(torch.cat([input_ids, mask], dim=1), dim=0, return_inverse=True)
    if uniq.shape[0] == input_ids.shape[0]:
        inverse = None
        rows = slice(None)
    else:
        first = torch.full((uniq.shape[0],), input_ids.shape[0], dtype=torch.long)
        first = first.scatter_reduce(0, inverse, torch.arange(input_ids.shape[0]), reduce="amin")
        rows = first
    logits = (
        model(
            input_ids=input_ids[rows],
            attention_mask=mask[rows],
            position_ids=positions[rows],
            use_cache=True,
            logits_to_keep=1,
            **cache_arg,
        )
        .logits[:, -1, :]
        .float()
    )
    if inverse is None:
        return logits
    # `first` is sorted by the unique rows' order; map every original row to its prompt's slot.
    cache.batch_select_indices(inverse)
    return logits[inverse]


@functools.cache
def _reserved_layer_class() -> Any:
    """transformers' DynamicLayer, writing new tokens into reserved room (see `_reserved_cache`);
    None on a transformers without cache layers."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover
        return None

    class ReservedLayer(DynamicLayer):
        limit = 0  # the most tokens the cache will hold: room is never reserved past it

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized or self.keys.numel() == 0:
                return super().update(key_states, value_states, *args, **kwargs)
            have, add = self.keys.shape[-2], key_states.shape[-2]
            buf = getattr(self, "_kbuf", None)
            if (
                buf is None
                or self.keys.data_ptr() != buf.data_ptr()  # compacted or replaced since
                or buf.shape[0] != self.keys.shape[0]
                or have + add > buf.shape[-2]
            ):
                b, h, _, d = self.keys.shape
                width = max(have + add, self.limit)
                self._kbuf = self.keys.new_empty((b, h, width, d))
                self._vbuf = self.values.new_empty((b, h, width, self.values.shape[-1]))
                self._kbuf[:, :, :have] = self.keys
                self._vbuf[:, :, :have] = self.values
            self._kbuf[:, :, have : have + add] = key_states
            self._vbuf[:, :, have : have + add] = value_states
            self.keys, self.values = self._kbuf[:, :, : have + add], self._vbuf[:, :, : have + add]
            return self.keys, self.values

    return ReservedLayer


def _reserved_cache(model: Any, limit: int) -> Any:
    """A DynamicCache whose full-attention layers reserve room for `limit` tokens in all.

    A DynamicLayer appends each step's keys and values with `torch.cat`, copying the whole
    cache every decode step (a tenth of a small model's step on a CPU); these layers write
    the new token into room reserved past the cached ones and hand attention a view of the
    filled part (the same values, so the same logits). Dropping rows (`batch_select_indices`)
    compacts the cache as before; the next step reserves again. Other layer kinds (sliding
    windows, shared KV) are left as transformers makes them.
    """
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    layer_class = _reserved_layer_class()
    if layer_class is None:  # pragma: no cover
        return cache
    plain = layer_class.__mro__[1]
    layers = []
    for layer in cache.layers:
        if type(layer) is plain:
            layer = layer_class()
            layer.limit = limit
        layers.append(layer)
    cache.layers = layers
    return cache


def _inverse_cdf(probs: Any, u: Any) -> Any:
    """One token per row: the first whose cumulative probability exceeds `u` (in [0, 1)) of
    the row's total. float64 sums keep small probabilities exact; a token of probability 0
    (cut by top-p) is never chosen, since its cumulative sum equals its predecessor's."""
    import torch

    cdf = probs.double().cumsum(-1)
    target = (u.to(cdf.device) * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)


def supports_pruning(model: Any) -> bool:
    """Decoder-only models: they decode on a transformers DynamicCache, which can drop rows."""
    cfg = getattr(model, "config", None)
    return bool(cfg is not None and not getattr(cfg, "is_encoder_decoder", False))


def sample_pruned(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_token_id: int,
    finished: Callable[[list[int], list[int]], list[bool]],
    logprobs: list[list[float]] | None = None,
    generators: list[Any] | None = None,
    reserve_kv: bool = True,
    on_done: Callable[[int, list[int]], None] | None = None,
    lean: bool = True,
) -> list[list[int]]:
    """New token ids per row (EOS kept when emitted), stopping rows as `finished` says.

    `finished(rows, tokens)` is called after every step with the original indices of the
    rows still active and the token each just produced, and says which are now done.
    Sampling uses torch's global RNG, so callers seed it. When `logprobs` is a list, it is
    filled with one list per row: the log-probability of each new token under the
    distribution it was drawn from (after temperature and top-p; greedy: the raw softmax).
    `generators` (one `torch.Generator` per row) draws each row from its own stream, so a
    row's sample does not depend on which other rows share its batch: each row takes one
    uniform per step from its stream (drawn up front) and the whole batch picks its tokens
    in one inverse-CDF lookup, where a `multinomial` call per row and step cost as much as
    the small model's matmuls. `reserve_kv` keeps room in the KV cache for the new tokens
    (`_reserved_cache`; off: transformers' plain DynamicCache, the same samples, slower).
    `on_done(row, tokens)` is called as soon as a row stops (EOS or `finished`), while the
    others go on: its tokens are final, so a caller can start judging it already. Rows still
    going at `max_new_tokens` are not reported here. `lean` runs the decode steps of a
    Llama-style model through `rlvf.generate.lean` (the same logits, bit for bit, without
    transformers' per-call wrappers; off: `model(...)` every step).
    """
    import torch
    from transformers import DynamicCache
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    warpers = []
    if temperature > 0:
        warpers.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
    n = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    if logprobs is not None:
        logprobs[:] = [[] for _ in range(n)]
    active = torch.arange(n)
    mask = attention_mask
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    limit = input_ids.shape[1] + max_new_tokens  # prompt width + every new token: the cache's end size
    cache = _reserved_cache(model, limit) if reserve_kv else DynamicCache(config=model.config)
    step_ids, step_pos = input_ids, positions
    alive = [True] * n
    cache_arg = {cache_kwarg(model): cache}
    fast = lean_step(model) if lean else None
    uniforms = None
    if generators is not None and warpers:
        uniforms = torch.stack(
            [
                torch.rand(max_new_tokens, generator=g, device=g.device, dtype=torch.float64)
                for g in generators
            ]
        )
    for step in range(max_new_tokens):
        if step == 0:
            logits = _prefill_once(model, input_ids, mask, positions, cache, cache_arg)
        elif fast is not None:
            logits = fast(step_ids, mask, step_pos, cache)
        else:
            logits = (
                model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    use_cache=True,
                    logits_to_keep=1,
                    **cache_arg,
                )
                .logits[:, -1, :]
                .float()
            )
        if warpers:
            for w in warpers:
                logits = w(step_ids, logits)
            probs = torch.softmax(logits, dim=-1)
            if uniforms is None:
                tokens = torch.multinomial(probs, 1).squeeze(1)
            else:
                tokens = _inverse_cdf(probs, uniforms[active.to(uniforms.device), step])
        else:
            tokens = logits.argmax(dim=-1)
        rows, toks = active.tolist(), tokens.tolist()
        live = [k for k, a in enumerate(alive) if a]
        for k in live:
            out[rows[k]].append(toks[k])
        if logprobs is not None:
            lp = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1).tolist()
            for k in live:
                logprobs[rows[k]].append(lp[k])
        done = finished([rows[k] for k in live], [toks[k] for k in live])
        for k, d in zip(live, done, strict=True):
            if d or toks[k] == eos_token_id:
                alive[k] = False
                if on_done is not None:
                    on_done(rows[k], out[rows[k]])
        n_alive = sum(alive)
        if not n_alive or step == max_new_tokens - 1:
            break
        next_pos = step_pos[:, -1:] + 1
        if len(alive) - n_alive >= PRUNE_SHARE * len(alive):
            # Finished rows ride along (their tokens ignored) until enough of them accumulate.
            idx = torch.tensor([k for k, a in enumerate(alive) if a])
            cache.batch_select_indices(idx)
            active, mask, tokens, next_pos = active[idx], mask[idx], tokens[idx], next_pos[idx]
            alive = [True] * n_alive
        step_ids, step_pos = tokens[:, None], next_pos
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    return out
