"""What a run's config may hold: every key, its type, which methods use it, and whether it
changes results (and so enters `config_hash`) or is one of the fairness invariants.

The values themselves live in `rlvf/recipes/default.yaml` (the one source of defaults);
this module only says what is allowed. The shared sections are declared here; each method
declares its own section and keys in its module (rlvf.methods), and `rebuild()` joins them.
A key that a method does not use is dropped from that method's normalised config, so an
`eval` run's hash does not move when a training knob does.
"""

from __future__ import annotations

from typing import Any

from rlvf.config.fields import Field

# Filled in by `rebuild()` from the method registry (rlvf.methods): the methods, which
# top-level sections each method's config holds ("*" = every method), every key, and the
# methods that train. Mutated in place, so a method registered at runtime shows up in them.
METHODS: list[str] = []
SECTIONS: dict[str, tuple[str, ...]] = {}
FIELDS: dict[str, Field] = {}
TRAINING_METHODS: list[str] = []
REVISIONS: dict[str, int] = {}

# Sections every method's config holds.
COMMON_SECTIONS = ("method", "seed", "model", "tracking", "cost")
# Where method sections go among the shared ones (keeps `dpo` before `eval`, as it always was).
METHOD_SECTIONS_BEFORE = "eval"

F = Field

# The shared sections; methods add their own section and keys (see rebuild()).
SHARED: dict[str, Any] = {
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
        "dedupe": F("bool", "drop duplicate completions (after whitespace normalisation)"),
        "min_chars": F("int", "drop completions shorter than this", minimum=0),
        "max_chars": F("int", "drop completions longer than this", minimum=1),
    },
    "verify": {
        "timeout": F("float", "seconds a candidate may run against its tests", minimum=0.1),
        "workers": F(
            "int", "parallel sandboxes (default: the cores)", nullable=True, minimum=1, hashed=False
        ),
        # Where the sandboxes run does not change a verdict (tests/test_verify_ray.py holds the
        # two backends to the same verdicts), so none of these keys enters config_hash.
        "backend": F(
            "str",
            "where samples are judged: 'local' (this machine's sandboxes) or 'ray' (sandboxes "
            "hosted by Ray actors on a cluster)",
            choices=("local", "ray"),
            hashed=False,
        ),
        "ray_address": F(
            "str",
            "Ray cluster to use (host:port or ray://host:port); null: the cluster `ray start` "
            "runs on this machine (or RAY_ADDRESS), else a local one started for the run",
            nullable=True,
            hashed=False,
        ),
        "ray_actors": F(
            "int",
            "Ray actors judging at once (default: the cluster's CPUs)",
            nullable=True,
            minimum=1,
            hashed=False,
        ),
        "ray_auth": F(
            "str",
            "Ray's token authentication (RAY_AUTH_MODE), set explicitly so the driver, a later "
            "`ray start` and a joining node agree",
            choices=("token", "disabled"),
            hashed=False,
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
        "batch_size": F("int", "examples per step, over all training processes", minimum=1),
        "grad_accum": F("int", "steps accumulated per optimizer step", minimum=1),
        "max_length": F("int", "longest prompt+completion in tokens", minimum=8),
        "gradient_checkpointing": F("bool", "recompute activations to save memory (slower)"),
        "processes": F(
            "int",
            "CPU training processes (gloo data parallel, global batch unchanged); "
            "ppo and online_dpo train in one",
            minimum=1,
        ),
        "logging_steps": F("int", "optimizer steps between logged training metrics", minimum=1, hashed=False),
        "save_steps": F(
            "int",
            "optimizer steps between checkpoints (what --resume continues from; 0: none)",
            minimum=0,
            hashed=False,
        ),
        "save_total_limit": F("int", "checkpoints kept (the newest)", minimum=1, hashed=False),
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
        "batch_size": F(
            "int",
            "prompts per generate call (sampling is seeded per batch, so it changes samples)",
            minimum=1,
        ),
        "lm_eval": {
            "tasks": F(
                "list[str]",
                "lm-eval tasks run beside the code suites on the same policy: lm-eval's names "
                "(ifeval, gsm8k, mmlu, ...; their data comes from the hub) or rlvf's local "
                "rlvf_doctest, rlvf_solution_mc; [] for none",
                nullable=True,
                invariant="lm_eval_tasks",
            ),
            "num_fewshot": F(
                "int",
                "few-shot examples (null: each task's own)",
                nullable=True,
                minimum=0,
                invariant="lm_eval_num_fewshot",
            ),
            "limit": F(
                "int",
                "first N documents of each task (null: all)",
                nullable=True,
                minimum=1,
                invariant="lm_eval_limit",
            ),
            "batch_size": F("int", "requests per forward pass (padding can move the last digit)", minimum=1),
            "seed": F("int", "lm-eval's random, numpy, torch and few-shot seeds", invariant="lm_eval_seed"),
        },
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
            "str",
            "where checkpoints and local files go, one folder per run (default: $RLVF_HOME/runs)",
            nullable=True,
            hashed=False,
        ),
        "progress": F("bool", "show progress bars", hashed=False),
        "outage_s": F(
            "float",
            "seconds a tracking server may stay unreachable before the run is kept on disk "
            "(a spool: `rlvf upload` sends it later) and training goes on",
            minimum=0.0,
            hashed=False,
        ),
    },
    # What a run costs (rlvf.tracking.runinfo): read after the run, never hashed.
    "cost": {
        "gpu_type": F(
            "str",
            "GPU the runs use (e.g. H100): wall time is also logged as cost/gpu_hours "
            "(on CUDA without it, torch's device name)",
            nullable=True,
            hashed=False,
        ),
        "gpus": F("int", "GPUs a run holds (GPU-hours = wall hours x gpus)", minimum=1, hashed=False),
        "usd_per_hour": F(
            "float",
            "hourly price of what a run holds: logged as cost/usd (and train/cost_usd)",
            nullable=True,
            minimum=0.0,
            hashed=False,
        ),
    },
}


SCHEMA: dict[str, Any] = {}


def iter_fields(tree: dict[str, Any] | None = None, prefix: str = ""):
    """Yield (dotted key, Field) for every key in the schema."""
    tree = SCHEMA if tree is None else tree
    for name, node in tree.items():
        key = f"{prefix}{name}"
        if isinstance(node, Field):
            yield key, node
        else:
            yield from iter_fields(node, key + ".")


def rebuild() -> None:
    """Derive SCHEMA, FIELDS, SECTIONS, METHODS and TRAINING_METHODS from the registry."""
    import copy
    import dataclasses

    from rlvf.methods import methods

    registered = methods()
    tree: dict[str, Any] = {}
    sections: dict[str, tuple[str, ...]] = {}
    added: dict[str, tuple[Field, list[str]]] = {}
    for m in registered:
        for key, f in m.all_fields().items():
            if key in added and added[key][0] != f:
                raise ValueError(f"methods declare config key '{key}' differently")
            added.setdefault(key, (f, []))[1].append(m.name)
    for name, node in SHARED.items():
        if name == METHOD_SECTIONS_BEFORE:
            for m in registered:
                if m.section:
                    tree[m.name] = dict(m.section)
                    sections[m.name] = (m.name,)
        tree[name] = copy.copy(node) if isinstance(node, dict) else node
        if name in COMMON_SECTIONS:
            sections[name] = ("*",)
        else:
            sections[name] = tuple(m.name for m in registered if name in m.sections())
    for key, (f, owners) in added.items():
        section, leaf = key.split(".", 1)
        if section not in tree or not isinstance(tree[section], dict):
            raise ValueError(f"method key '{key}' is not in a shared section")
        tree[section][leaf] = dataclasses.replace(f, methods=tuple(owners))
    METHODS[:] = [m.name for m in registered]
    TRAINING_METHODS[:] = [m.name for m in registered if m.trains]
    REVISIONS.clear()
    REVISIONS.update({m.name: m.revision for m in registered})
    SCHEMA.clear()
    SCHEMA.update(tree)
    SECTIONS.clear()
    SECTIONS.update(sections)
    FIELDS.clear()
    FIELDS.update(iter_fields())


def applies(key: str, method: str) -> bool:
    """Whether `key` (dotted) belongs in `method`'s config."""
    section = key.split(".", 1)[0]
    owners = SECTIONS.get(section, ())
    if "*" not in owners and method not in owners:
        return False
    f = FIELDS.get(key)
    return f is None or f.methods is None or method in f.methods


rebuild()
