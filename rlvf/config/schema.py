"""What a run's config may hold: every key, its type, which methods use it, and whether it
changes results (and so enters `config_hash`) or is one of the fairness invariants.

The values themselves live in `rlvf/recipes/default.yaml` (the one source of defaults);
this module only says what is allowed. A key that a method does not use is dropped from
that method's normalised config, so an `eval` run's hash does not move when a training
knob does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

METHODS = ("bootstrap", "pairs", "sft", "dpo", "eval")

# Which top-level sections each method's config holds ("*" = every method).
SECTIONS: dict[str, tuple[str, ...]] = {
    "method": ("*",),
    "seed": ("*",),
    "model": ("*",),
    "lora": ("sft", "dpo"),
    "generate": ("pairs", "sft", "dpo"),
    "data": ("pairs", "sft", "dpo"),
    "verify": ("pairs", "sft", "dpo", "eval"),
    "train": ("sft", "dpo"),
    "dpo": ("dpo",),
    "eval": ("sft", "dpo", "eval"),
    "registry": ("sft", "dpo"),
    "tracking": ("*",),
}


@dataclass(frozen=True)
class Field:
    """One config key.

    type: "int", "float", "str", "bool", "list[str]", "list[int]", "list[float]".
    hashed: False for what cannot change results (paths, names, logging, workers).
    invariant: the name this key has in the fairness invariants, if it is one.
    methods: restricts the key to some methods inside its section (None: the section's).
    """

    type: str
    help: str
    nullable: bool = False
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    hashed: bool = True
    invariant: str | None = None
    methods: tuple[str, ...] | None = None


F = Field

SCHEMA: dict[str, Any] = {
    "method": F("str", "the entry point this config runs (set by the entry point)", choices=METHODS),
    "seed": F("int", "seed for data shuffling, weight init and training", invariant="seed"),
    "model": {
        "policy": F(
            "str",
            "base policy: 'embedded', 'embedded:small', a hub id or a local model directory",
            invariant="base_model",
        ),
        "revision": F("str", "hub revision of the base policy", nullable=True, invariant="base_revision"),
        "init": F(
            "str",
            "start from a trained policy instead of the base: a run id whose model/ to load, "
            "a models:/ URI, or a local adapter/model directory",
            nullable=True,
        ),
        "dtype": F("str", "weights dtype", choices=("auto", "float32", "bfloat16", "float16")),
        "quantization": F(
            "str", "weight quantisation of the base", choices=("none", "nf4"), invariant="quantization"
        ),
        "finetune": F(
            "str",
            "what training updates: a LoRA adapter or all weights (tiny models)",
            choices=("lora", "full"),
            invariant="finetune",
        ),
        "device": F("str", "where to run: auto picks cuda when present", choices=("auto", "cpu", "cuda")),
    },
    "lora": {
        "r": F("int", "LoRA rank", minimum=1, invariant="lora_r"),
        "alpha": F("int", "LoRA alpha", minimum=1, invariant="lora_alpha"),
        "dropout": F("float", "LoRA dropout", minimum=0.0, maximum=1.0),
        "targets": F("list[str]", "module names LoRA wraps ('all-linear' for all)", invariant="lora_targets"),
    },
    "generate": {
        "n_samples": F("int", "completions sampled per training prompt", minimum=1),
        "temperature": F("float", "sampling temperature for training data", minimum=0.0),
        "top_p": F("float", "nucleus sampling for training data", minimum=0.0, maximum=1.0),
        "max_new_tokens": F("int", "longest completion sampled", minimum=1),
        "batch_size": F(
            "int",
            "prompts per generate call (sampling is seeded per batch, so it changes samples)",
            minimum=1,
        ),
    },
    "data": {
        "suite": F("str", "task suite the training prompts come from (procedural:train, jsonl:PATH, ...)"),
        "per_cell": F("int", "procedural tasks per (type, difficulty) cell", minimum=1),
        "limit": F("int", "use N tasks, evenly spaced through the suite", nullable=True, minimum=1),
        "pairs": F(
            "str",
            "existing pairs: a pairs JSONL path or the run id of a pairs run (empty: build them now)",
            nullable=True,
            methods=("dpo",),
        ),
        "pairs_per_prompt": F("int", "most pairs kept per prompt", minimum=1, methods=("pairs", "dpo")),
        "dedupe": F("bool", "drop duplicate completions (after whitespace normalisation)"),
        "min_chars": F("int", "drop completions shorter than this", minimum=0),
        "max_chars": F("int", "drop completions longer than this", minimum=1),
        "n_pairs": F(
            "int",
            "train on a fixed-size subset of this many pairs; subsets of one pool are nested",
            nullable=True,
            minimum=1,
            methods=("pairs", "dpo"),
        ),
        "sft_source": F(
            "str",
            "SFT data: the policy's own passed samples or a teacher-trace JSONL (data.traces)",
            choices=("samples", "traces"),
            methods=("sft",),
        ),
        "traces": F(
            "str", "teacher-trace JSONL (prompt, completion per line)", nullable=True, methods=("sft",)
        ),
        "max_per_prompt": F("int", "most SFT examples kept per prompt", minimum=1, methods=("sft",)),
    },
    "verify": {
        "timeout": F("float", "seconds a candidate may run against its tests", minimum=0.1),
        "workers": F(
            "int", "parallel sandboxes (default: the cores)", nullable=True, minimum=1, hashed=False
        ),
    },
    "train": {
        "epochs": F("float", "passes over the training data", minimum=0.0),
        "max_steps": F("int", "stop after this many optimizer steps (-1: epochs decide)", minimum=-1),
        "learning_rate": F("float", "peak learning rate", minimum=0.0),
        "lr_scheduler": F(
            "str", "learning-rate schedule", choices=("linear", "cosine", "constant", "constant_with_warmup")
        ),
        "warmup_ratio": F("float", "fraction of steps warming up", minimum=0.0, maximum=1.0),
        "weight_decay": F("float", "AdamW weight decay", minimum=0.0),
        "batch_size": F("int", "examples per device step", minimum=1),
        "grad_accum": F("int", "steps accumulated per optimizer step", minimum=1),
        "max_length": F("int", "longest prompt+completion in tokens", minimum=8),
        "gradient_checkpointing": F("bool", "recompute activations to save memory (slower)"),
        "logging_steps": F("int", "optimizer steps between logged training metrics", minimum=1, hashed=False),
    },
    "dpo": {
        "beta": F("float", "DPO beta: strength of the pull towards the reference", minimum=0.0),
        "loss_type": F("list[str]", "TRL loss types, combined (e.g. [sigmoid, sft])"),
        "loss_weights": F("list[float]", "one weight per loss type", nullable=True),
        "precompute_ref_log_probs": F("bool", "compute the reference log-probs once before training"),
    },
    "eval": {
        "suites": F(
            "list[str]", "suites to evaluate on (procedural, humaneval, jsonl:PATH)", invariant="eval_suites"
        ),
        "seeds": F(
            "list[int]",
            "sampling seeds; pass@1 is reported as mean and std over them",
            invariant="eval_seeds",
        ),
        "n_samples": F(
            "int",
            "samples per task per seed (pass@k is reported for k = 1, 5, 10, ... up to it)",
            minimum=1,
            invariant="eval_n_samples",
        ),
        "per_cell": F(
            "int", "procedural tasks per (type, difficulty) cell", minimum=1, invariant="eval_per_cell"
        ),
        "limit": F(
            "int",
            "evaluate N tasks of each suite, evenly spaced",
            nullable=True,
            minimum=1,
            invariant="eval_limit",
        ),
        "temperature": F(
            "float", "sampling temperature (0: greedy)", minimum=0.0, invariant="eval_temperature"
        ),
        "top_p": F("float", "nucleus sampling", minimum=0.0, maximum=1.0, invariant="eval_top_p"),
        "max_new_tokens": F("int", "longest completion", minimum=1, invariant="eval_max_new_tokens"),
        "base": F(
            "bool",
            "also record the base policy's eval for the same settings (cached)",
            methods=("sft", "dpo"),
        ),
        "batch_size": F(
            "int",
            "prompts per generate call (sampling is seeded per batch, so it changes samples)",
            minimum=1,
        ),
    },
    "registry": {
        "register": F("bool", "register the trained policy as a model version", hashed=False),
        "name": F("str", "registered model name (default: rlvf-<base model>)", nullable=True, hashed=False),
        "alias": F("str", "alias moved to the new version (empty: none)", nullable=True, hashed=False),
    },
    "tracking": {
        "experiment": F(
            "str",
            "MLflow experiment (default: MLflow's own, or what `mlflow run` chose)",
            nullable=True,
            hashed=False,
        ),
        "run_name": F("str", "MLflow run name", nullable=True, hashed=False),
        "label": F("str", "short name for results tables (rlvf.label tag)", nullable=True, hashed=False),
        "log_model": F("bool", "log the trained policy as an MLflow model", hashed=False),
        "output_dir": F(
            "str", "where checkpoints and local files go (default: a temp dir)", nullable=True, hashed=False
        ),
        "progress": F("bool", "show progress bars", hashed=False),
    },
}


def iter_fields(tree: dict[str, Any] | None = None, prefix: str = ""):
    """Yield (dotted key, Field) for every key in the schema."""
    tree = SCHEMA if tree is None else tree
    for name, node in tree.items():
        key = f"{prefix}{name}"
        if isinstance(node, Field):
            yield key, node
        else:
            yield from iter_fields(node, key + ".")


FIELDS: dict[str, Field] = dict(iter_fields())


def applies(key: str, method: str) -> bool:
    """Whether `key` (dotted) belongs in `method`'s config."""
    section = key.split(".", 1)[0]
    owners = SECTIONS.get(section, ())
    if "*" not in owners and method not in owners:
        return False
    f = FIELDS.get(key)
    return f is None or f.methods is None or method in f.methods
