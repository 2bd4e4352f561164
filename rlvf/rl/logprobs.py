"""Per-token log-probabilities (and entropies) of the completion tokens only.

TRL 1.16's GRPO and RLOO trainers score completions through a fused LM head that, off
Triton devices, projects *every* position of the batch through the head (prompt and padding
included, to keep tile shapes fixed for compilers) and recomputes the projection in the
backward pass. On a CPU, with prompts longer than completions, that is most of the head's
work spent on positions nobody reads. This computes the same quantities the plain way, for
the completion positions alone: the model's logits for the last `logits_to_keep + 1`
positions, divided by the sampling temperature, log-softmax in float32.

Memory: a chunk of rows holds `rows x logits_to_keep x vocab` floats; rows are chunked so
that stays under `budget` floats (a hub model's large vocabulary gets smaller chunks).
"""

from __future__ import annotations

from typing import Any

BUDGET = 1 << 25  # floats per chunk of logits (128 MiB in float32)
CHUNK_ROWS = 4  # rows per forward when the caller does not say


def completion_logprobs(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    logits_to_keep: int,
    *,
    temperature: float = 1.0,
    entropy: bool = False,
    rows: int | None = None,
    budget: int = BUDGET,
) -> tuple[Any, Any | None]:
    """(log-probs, entropies or None), each rows x logits_to_keep, zero where the completion
    is padding. The completion is the last `logits_to_keep` columns of `input_ids`."""
    import torch

    n, width = input_ids.shape
    vocab = int(model.config.get_text_config().vocab_size) if hasattr(model, "config") else 0
    per = max(1, budget // max(1, logits_to_keep * max(vocab, 1)))
    step = max(1, min(rows or CHUNK_ROWS, per))
    completion = attention_mask[:, -logits_to_keep:]
    # Rows of similar completion length share a chunk, so trimming a chunk's padding removes most of it.
    order = torch.argsort(completion.sum(1), stable=True).tolist()
    out_l, out_e, rows_of = [], [], []
    for start in range(0, n, step):
        idx = order[start : start + step]
        mask = attention_mask[idx]
        cols = mask.any(0).nonzero().flatten()
        lo = int(cols[0]) if len(cols) else width - logits_to_keep
        hi = max(int(cols[-1]) + 1, width - logits_to_keep + 1)  # keep >= 1 completion column
        keep = hi - (width - logits_to_keep)  # completion columns this chunk scores
        ids, mask = input_ids[idx, lo:hi], mask[:, lo:hi]
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=keep + 1,
            use_cache=False,
        ).logits[:, :-1, :]
        logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
        pad = mask[:, -keep:] == 0
        lp = logp_all.gather(-1, ids[:, -keep:].unsqueeze(-1)).squeeze(-1).masked_fill(pad, 0.0)
        out_l.append(torch.nn.functional.pad(lp, (0, logits_to_keep - keep)))
        if entropy:
            e = (-(logp_all.exp() * logp_all).sum(-1)).masked_fill(pad, 0.0)
            out_e.append(torch.nn.functional.pad(e, (0, logits_to_keep - keep)))
        rows_of.extend(idx)
    back = torch.empty(n, dtype=torch.long)
    back[torch.tensor(rows_of)] = torch.arange(n)
    logps = torch.cat(out_l)[back]
    ents = torch.cat(out_e)[back] if entropy else None
    return logps, ents
