"""orpo: ORPO (TRL's `trl.experimental.orpo.ORPOTrainer`) on verified preference pairs.

The same pairs as DPO (a pairs file, a pairs run's data/pairs.jsonl, or pairs built now from
the policy's own verified samples), and the same `data.pairs` / `data.n_pairs` keys. ORPO has
no reference model: its loss is the chosen side's NLL plus `orpo.beta` (the paper's lambda)
times the log odds-ratio term, so one model is held in memory and nothing is precomputed.
"""

from __future__ import annotations

import os
from typing import Any

from rlvf.config.fields import Field
from rlvf.methods import dpo
from rlvf.methods.registry import Method, Training

SECTION: dict[str, Field] = {
    "beta": Field("float", "ORPO lambda: weight of the odds-ratio term next to the chosen NLL", minimum=0.0),
}


def config_class() -> type:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental warns on import
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig


def trainer_args(cfg: Any) -> dict[str, Any]:
    return dict(
        max_length=cfg["train.max_length"],
        beta=cfg["orpo.beta"],
        remove_unused_columns=False,  # TRL's pair collator needs its own columns
    )


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer(
        model=model,
        args=args,
        train_dataset=dpo.pairs_dataset(rows),
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )


METHOD = Method(
    name="orpo",
    help="ORPO (TRL, no reference model) on verified pairs (a file, a pairs run id, or built now); "
    "evaluates against the base, logs and registers the result. The same as "
    "`mlflow run . -e orpo --env-manager local`.",
    uses=("generate", "data", "verify"),
    section=SECTION,
    fields=dpo.FIELDS,
    shortcuts={"orpo_beta": "orpo.beta"},
    mlproject=("policy", "init", "pairs", "n_pairs", "learning_rate", "epochs", "orpo_beta", "seeds", "seed"),
    scan=("data.n_pairs",),
    training=Training(
        title="ORPO",
        noun="pairs",
        resolve=dpo.resolve,
        build_data=dpo.build_data,
        config_class=config_class,
        trainer_args=trainer_args,
        make_trainer=make_trainer,
        curves=("train/loss", "train/nll_loss", "train/log_odds_ratio", "train/rewards_margins"),
        examples=dpo.examples,
    ),
)
