"""A trained reward model (the `rm` method's output) as a scorer of completions.

    rm = load_reward_model("models:/rlvf-rm-embedded@candidate")   # or a run id, or a directory
    rm.score(prompts, completions)  # -> one float per completion, higher = more likely to pass

What is scored is exactly what the RM was trained on: ``prompt + completion + EOS``, tokenised
as TRL's RewardTrainer tokenises a training pair, padded on the right, the score read at the
last token (the EOS). Completions are first put through the sampler's clean-up
(`rlvf.generate.cleanup.clean_completion`: stop at the end of the function, strip chat
fences; pass `entry_points` when known, as the sampler does), because that cleaned text is
what the verifier runs and what the training pairs hold: a raw rollout that rambles on after its function is scored on the function alone,
and already-cleaned text (eval samples, pairs) is left as it is (clean-up is idempotent).
`score(..., clean=False)` scores the text as given.

Sequences longer than the RM's training `max_length` keep their end (truncation on the
left): the score is read at the last token, so the end is what must survive.

The RM is loaded for inference only (eval mode, no gradients), on `device` ("auto": the
GPU when there is one). It lives in `rlvf.rewards` so that PPO and best-of-N selection
share one implementation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlvf.errors import UserError

# Next to the weights / adapter of a trained RM (with rlvf_policy.json): how to score with it.
REWARD_FILE = "rlvf_reward_model.json"
# The RM's key among its logged MLflow model's artifacts (the pyfunc's context.artifacts).
ARTIFACT = "reward_model"


class RewardModel:
    """A loaded reward model: `score(prompts, completions)` in batches, without gradients."""

    def __init__(
        self, model: Any, tok: Any, *, max_length: int | None = None, batch_size: int = 16, name: str = ""
    ):
        self.model = model
        self.tok = tok
        self.max_length = max_length
        self.batch_size = batch_size
        self.name = name
        self.device = next(model.parameters()).device

    def texts(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        clean: bool = True,
        entry_points: Sequence[str | None] | None = None,
    ) -> list[str]:
        """The exact strings scored: prompt + (cleaned) completion + EOS, as in training."""
        from rlvf.generate.cleanup import clean_completion

        if len(prompts) != len(completions):
            raise ValueError(f"score: {len(prompts)} prompts for {len(completions)} completions")
        eps = list(entry_points) if entry_points is not None else [None] * len(prompts)
        if len(eps) != len(prompts):
            raise ValueError(f"score: {len(eps)} entry points for {len(prompts)} prompts")
        eos = self.tok.eos_token or ""
        out = []
        for p, c, ep in zip(prompts, completions, eps, strict=True):
            if clean:
                c = clean_completion(p, c, ep or None).completion
            text = p + c
            out.append(text if not eos or text.endswith(eos) else text + eos)
        return out

    def score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        batch_size: int | None = None,
        clean: bool = True,
        entry_points: Sequence[str | None] | None = None,
    ) -> list[float]:
        """One scalar per (prompt, completion); higher means the RM prefers it. `entry_points`
        (the task's function name per row), when known, make the clean-up keep helper code
        exactly as the sampler did."""
        import torch

        texts = self.texts(prompts, completions, clean=clean, entry_points=entry_points)
        if not texts:
            return []
        bs = max(1, batch_size or self.batch_size)
        # Longest first: batches of similar lengths pad less; scores go back in input order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        scores = [0.0] * len(texts)
        was_training = self.model.training
        side, trunc = self.tok.padding_side, self.tok.truncation_side
        self.model.eval()
        self.tok.padding_side, self.tok.truncation_side = "right", "left"
        try:
            with torch.no_grad():
                for start in range(0, len(order), bs):
                    idx = order[start : start + bs]
                    batch = self.tok(
                        [texts[i] for i in idx],
                        return_tensors="pt",
                        padding=True,
                        truncation=self.max_length is not None,
                        max_length=self.max_length,
                    ).to(self.device)
                    logits = self.model(**batch, use_cache=False).logits
                    for i, v in zip(idx, logits[:, 0].float().tolist(), strict=True):
                        scores[i] = float(v)
        finally:
            self.tok.padding_side, self.tok.truncation_side = side, trunc
            self.model.train(was_training)
        return scores

    __call__ = score


def pairwise_accuracy(
    rm: RewardModel, pairs: Sequence[Any], batch_size: int | None = None
) -> dict[str, float]:
    """How often the RM scores a pair's chosen (passing) side above its rejected side (a tie
    counts half), and the mean margin; over `pairs` (`rlvf.records.Pair`)."""
    if not pairs:
        return {"accuracy": float("nan"), "margin": float("nan"), "pairs": 0}
    prompts = [p.prompt for p in pairs]
    chosen = rm.score(prompts, [p.chosen for p in pairs], batch_size=batch_size)
    rejected = rm.score(prompts, [p.rejected for p in pairs], batch_size=batch_size)
    wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True))
    margin = sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)
    return {"accuracy": wins / len(pairs), "margin": margin, "pairs": len(pairs)}


# --------------------------------------------------------------------------- loading


def is_reward_dir(path: Path) -> bool:
    return (Path(path) / REWARD_FILE).is_file()


def load_reward_dir(path: str | Path, *, device: str = "auto", batch_size: int = 16) -> RewardModel:
    """A RewardModel from a directory the `rm` method saved (full weights or a LoRA adapter)."""
    from rlvf.models.loader import load_sequence_classifier
    from rlvf.models.policy import spec_from_dir

    path = Path(path)
    if not is_reward_dir(path):
        raise UserError(f"reward model: {path} is not an rlvf reward model (no {REWARD_FILE})")
    info = json.loads((path / REWARD_FILE).read_text())
    spec = spec_from_dir(path, device=device)
    model, tok = load_sequence_classifier(spec, trainable=False, merge=True)
    return RewardModel(
        model, tok, max_length=info.get("max_length"), batch_size=batch_size, name=info.get("name", str(path))
    )


def write_reward_info(path: Path, **info: Any) -> None:
    """Mark `path` (a saved RM) as a reward model and record how to score with it."""
    (Path(path) / REWARD_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


def _download(uri: str, what: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    from rlvf.tracking.scratch import scratch_dir

    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # a bar per file, for a few small files
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=scratch_dir("rlvf-rm-")))
    except (MlflowException, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{what}: could not download {uri}: {first}") from None
    finally:
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar
    return local


def _from_model_dir(local: Path, ref: str, what: str) -> Path:
    """The RM directory inside a downloaded MLflow model (artifacts/<its directory's name>)
    or `local` itself."""
    inner = sorted(d for d in (local / "artifacts").glob("*") if d.is_dir())
    for candidate in (*inner, local):
        if is_reward_dir(candidate):
            return candidate
    if any((d / "rlvf_policy.json").is_file() for d in (*inner, local)):
        raise UserError(f"{what}: {ref} is a policy, not a reward model (train one with `rlvf rm`)")
    raise UserError(f"{what}: {ref} is not an rlvf reward model (no {REWARD_FILE} in its artifacts)")


def resolve_reward_model(ref: str, what: str = "reward model") -> Path:
    """A reward-model reference -> the local directory holding it.

    `ref`: the run id of an `rm` run (or runs:/<id>), a registered version
    (models:/<name>/<version> or models:/<name>@<alias>), or a local directory; an `rm:` prefix
    (as `eval.select` and `ppo.reward` write it) is accepted. Mistakes are one-line UserErrors.
    """
    from rlvf.tracking import schema
    from rlvf.tracking.runs import get_run, looks_like_run_id

    ref = (ref or "").strip()
    if ref.startswith("rm:"):
        ref = ref[3:].strip()
    if not ref:
        raise UserError(f"{what}: no reward model given (a run id, a models:/ URI or a directory)")
    path = Path(ref).expanduser()
    if path.is_dir():
        return _from_model_dir(path, ref, what)
    if ref.startswith("models:/"):
        return _from_model_dir(_download(ref, what), ref, what)
    if looks_like_run_id(ref) or ref.startswith("runs:/"):
        run_id = ref[len("runs:/") :].split("/", 1)[0] if ref.startswith("runs:/") else ref
        run = get_run(run_id, what)
        method = run.data.tags.get(schema.TAG_METHOD)
        if method and method != "rm":
            raise UserError(f"{what}: run {run_id} is a {method} run, not a reward model (an rm run)")
        return _from_model_dir(_download(f"runs:/{run_id}/{schema.MODEL_ARTIFACT}", what), ref, what)
    raise UserError(
        f"{what}: '{ref}' is neither an rm run id, a models:/<name>/<version|@alias> URI nor a directory"
    )


def load_reward_model(
    ref: str, *, device: str = "auto", batch_size: int = 16, what: str = "reward model"
) -> RewardModel:
    """The reward model `ref` names (see `resolve_reward_model`), ready to `score`."""
    model = load_reward_dir(resolve_reward_model(ref, what), device=device, batch_size=batch_size)
    model.name = ref
    return model


__all__ = [
    "ARTIFACT",
    "REWARD_FILE",
    "RewardModel",
    "is_reward_dir",
    "load_reward_dir",
    "load_reward_model",
    "pairwise_accuracy",
    "resolve_reward_model",
    "write_reward_info",
]
