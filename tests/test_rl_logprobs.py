"""`rlvf.rl.logprobs` against TRL's fused LM head, on the real embedded:small model.

rlvf's GRPO/RLOO trainers score completions with `completion_logprobs` on a CPU (TRL's fused
head scores every position there); both must give the same log-probs, entropies and gradients.
"""

from __future__ import annotations

import pytest
import torch

from rlvf.rl.logprobs import completion_logprobs


def _batch(tok):
    """Left-padded prompts of different lengths + right-padded completions of different lengths."""
    prompts = [[5 + (i * 7 + j) % 900 for j in range(n)] for i, n in enumerate((12, 30, 21, 30, 5))]
    completions = [[40 + (i * 13 + j) % 900 for j in range(n)] for i, n in enumerate((9, 1, 14, 6, 14))]
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    pad = tok.pad_token_id
    ids = [
        [pad] * (width_p - len(p)) + p + c + [pad] * (width_c - len(c))
        for p, c in zip(prompts, completions, strict=True)
    ]
    mask = [
        [0] * (width_p - len(p)) + [1] * (len(p) + len(c)) + [0] * (width_c - len(c))
        for p, c in zip(prompts, completions, strict=True)
    ]
    return torch.tensor(ids), torch.tensor(mask), width_c


def test_completion_logprobs_match_trls_fused_head_values_and_gradients(tiny_policy) -> None:
    from trl.trainer.utils import add_fused_lm_head

    from rlvf.models import PolicySpec, load_policy

    model, tok = load_policy(PolicySpec(base=str(tiny_policy), device="cpu"), trainable=True)
    model.train()
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    ids, mask, k = _batch(tok)
    weights = torch.randn(ids.shape[0], k, generator=torch.Generator().manual_seed(1))
    params = [p for p in model.parameters() if p.requires_grad]

    # TRL's own route (GRPOTrainer._get_per_token_logps_and_entropies): labels on the completion only
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-k] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    ref_lp, ref_ent = out.log_probs[:, -k:], out.entropy[:, -k:]
    ref_grads = torch.autograd.grad((ref_lp * weights).sum() + ref_ent.sum(), params)

    lp, ent = completion_logprobs(model, ids, mask, k, temperature=0.7, entropy=True, rows=2)
    grads = torch.autograd.grad((lp * weights).sum() + ent.sum(), params)

    completion = mask[:, -k:].bool()
    assert lp.shape == ent.shape == (ids.shape[0], k)
    assert torch.all(lp[~completion] == 0) and torch.all(ent[~completion] == 0)
    assert torch.all(lp[completion] < 0) and torch.all(ent[completion] > 0)
    assert lp[completion].tolist() == pytest.approx(ref_lp[completion].tolist(), abs=2e-5)
    assert ent[completion].tolist() == pytest.approx(ref_ent[completion].tolist(), abs=2e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, rtol=1e-3, atol=1e-5)


def test_completion_logprobs_do_not_depend_on_chunking_or_row_order(tiny_model) -> None:
    """Rows are grouped by completion length and trimmed per group; the result is per row."""
    model, tok = tiny_model
    ids, mask, k = _batch(tok)
    with torch.no_grad():
        whole, _ = completion_logprobs(model, ids, mask, k, rows=ids.shape[0])
        ones, _ = completion_logprobs(model, ids, mask, k, rows=1)
        flipped, _ = completion_logprobs(model, ids.flip(0), mask.flip(0), k, rows=2)
        tiny_budget, _ = completion_logprobs(model, ids, mask, k, budget=1)  # one row per chunk
    assert torch.allclose(whole, ones, atol=2e-5)
    assert torch.allclose(whole, flipped.flip(0), atol=2e-5)
    assert torch.allclose(whole, tiny_budget, atol=2e-5)
