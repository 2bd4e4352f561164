"""What a method declares, and the registry every method-dependent table is derived from.

A method is one module under `rlvf/methods/` that defines `METHOD = Method(...)`: its config
section and the keys it adds to shared sections, its command-line shortcuts, the shared
sections it reads, and either a stage (`run`: bootstrap, pairs, eval) or a `Training` (how it
builds its data, how it trains, which metrics are its curves and health checks), which the one
training lifecycle (`rlvf.pipeline.lifecycle`) runs. The config schema, the CLI commands,
the entry-point scripts' options, the stage table, the invariants rule, the scan tag and the
report's curves all read this registry, so a new method touches no other module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvf.config.fields import Field

# Sections a training method always reads: the lifecycle trains (train, lora), evaluates
# (eval) and registers (registry) every trained policy. A method whose model is not a
# policy (`Training.policy` False: a reward model) is not evaluated as one: no eval section.
LIFECYCLE_SECTIONS = ("lora", "train", "eval", "registry")
POLICY_ONLY_SECTIONS = ("eval",)

# Keys the lifecycle adds for every training method.
LIFECYCLE_FIELDS: dict[str, Field] = {
    "eval.base": Field("bool", "also record the base policy's eval for the same settings (cached)"),
    "tracking.resume": Field(
        "str",
        "continue this run id from its last checkpoint (same config_hash; rlvf.pipeline.resume)",
        nullable=True,
        hashed=False,
    ),
}


@dataclass(frozen=True)
class Training:
    """How a training method gets its data and trains; the lifecycle does the rest.

    resolve(cfg): checks and loads what can be checked before a run is opened (a missing
        file, an unknown run id); returns `Inputs`.
    build_data(ctx): the training rows (a list), logging data metrics and the dataset input
        into ctx.run; ctx is a `rlvf.pipeline.lifecycle.DataContext`.
    make_trainer(cfg, model=, tok=, rows=, args=, peft_config=, callbacks=): a transformers
        Trainer (TRL's, usually) ready to `.train()`.
    config_class(): the TRL config class; its fields filter the shared trainer arguments.
    trainer_args(cfg): this method's own trainer arguments (beta, max_length, ...).
    rename: trainer log key -> metric name, where `train/<key, '/' -> '_'>` is not wanted.
    curves: stepped metrics the report plots for this method (first: the loss).
    health(history): extra warnings from the logged history (the shared ones: NaN or
        diverging loss).
    examples(n): n training rows that need no model (from the procedural suite's reference
        and wrong solutions): every method's smoke test trains on them.
    processes: whether `train.processes` > 1 may split training over CPU processes
        (`rlvf.train.ranks`): true for methods that train on fixed rows; methods that sample
        and verify inside the loop (GRPO) train in one.
    policy: the trained model is a policy, which the lifecycle evaluates (pass@1 against the
        base: the eval section and eval.base) and registers. False for a model that writes
        no code (a reward model): the method's config has no eval section and its `finish`
        evaluates and registers it its own way.
    load_model(spec, trainable=): (model, tokenizer) to train; None: the causal LM
        (`rlvf.models.loader.load_policy`).
    finish(ctx, trained, result): what follows training (ctx: the DataContext build_data got,
        whose `state` carries what build_data kept back, e.g. held-out rows); None: the
        policy's `rlvf.pipeline.finish.finish_training`.
    rounds(cfg): how many sample-train rounds cfg asks for (None or 1: one training run).
        Past one, each round is a nested run that builds its data from the latest policy
        (`build_data` with that policy as ctx.init), trains from it and evaluates it; the
        parent registers the last (`rlvf.pipeline.rounds`).
    keep_data(cfg): whether a round also trains on the earlier rounds' rows.
    """

    title: str
    noun: str
    build_data: Callable[[Any], list[Any]]
    make_trainer: Callable[..., Any]
    config_class: Callable[[], type]
    trainer_args: Callable[[Any], dict[str, Any]] = lambda cfg: {}
    resolve: Callable[[Any], Any] | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    curves: tuple[str, ...] = ("train/loss",)
    health: Callable[[list[dict[str, float]]], list[str]] | None = None
    examples: Callable[[int], list[Any]] | None = None
    processes: bool = True
    policy: bool = True
    load_model: Callable[..., Any] | None = None
    finish: Callable[[Any, Any, Any], None] | None = None
    rounds: Callable[[Any], int] | None = None
    keep_data: Callable[[Any], bool] | None = None


@dataclass
class Inputs:
    """What `Training.resolve` found before the run opened: the run its data came from (the
    new run's parent) and anything the method wants back in `build_data`."""

    parent_run_id: str | None = None
    data: Any = None


@dataclass(frozen=True)
class Method:
    """One entry point (see the module doc).

    uses: shared config sections it reads (training methods also get LIFECYCLE_SECTIONS).
    section: its own config section, named after it (e.g. `dpo.beta`).
    fields: keys it adds to shared sections (e.g. `data.pairs`); several methods may declare
        the same Field object, the key then applies to each.
    shortcuts: option name -> config key (`--beta` sets `dpo.beta`).
    mlproject: the shortcuts its MLproject entry point declares, in order.
    scan: config keys tagged as `rlvf.scan` (the free parameter of a scaling plot).
    run: the stage for methods that do not train (cfg -> StageResult).
    kind: the tracking run kind (`train` for training methods).
    revision: bumped when the method's code changes what the same config produces (e.g. how
        its rollouts draw samples): past 1 it enters the config_hash, so a run made before
        is never reused for, or compared as, the same config.
    """

    name: str
    help: str
    uses: tuple[str, ...] = ()
    section: Mapping[str, Field] = field(default_factory=dict)
    fields: Mapping[str, Field] = field(default_factory=dict)
    shortcuts: Mapping[str, str] = field(default_factory=dict)
    mlproject: tuple[str, ...] = ()
    scan: tuple[str, ...] = ()
    run: Callable[[Any], Any] | None = None
    training: Training | None = None
    kind: str = "train"
    revision: int = 1

    @property
    def trains(self) -> bool:
        return self.training is not None

    @property
    def trains_policy(self) -> bool:
        return self.training is not None and self.training.policy

    def sections(self) -> tuple[str, ...]:
        lifecycle = ()
        if self.trains:
            lifecycle = tuple(
                s for s in LIFECYCLE_SECTIONS if self.trains_policy or s not in POLICY_ONLY_SECTIONS
            )
        return tuple(dict.fromkeys((*self.uses, *lifecycle)))

    def all_fields(self) -> dict[str, Field]:
        """Keys this method adds to shared sections (its own section's keys not included)."""
        return {**(LIFECYCLE_FIELDS if self.trains_policy else {}), **self.fields}


_REGISTRY: dict[str, Method] = {}
_LOADED = False


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    from rlvf.methods import REGISTERED

    for module in REGISTERED:
        m = importlib.import_module(module).METHOD
        _REGISTRY.setdefault(m.name, m)
    _LOADED = True


def methods() -> list[Method]:
    """Every registered method, in registration order."""
    _load()
    return list(_REGISTRY.values())


def names() -> list[str]:
    return [m.name for m in methods()]


def get(name: str) -> Method:
    _load()
    if name not in _REGISTRY:
        from rlvf.errors import UserError

        raise UserError(f"unknown method '{name}' (one of {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def is_training(name: str) -> bool:
    _load()
    m = _REGISTRY.get(name)
    return bool(m and m.trains)


def _changed() -> None:
    """Re-derive the tables that were already built from the registry."""
    schema = sys.modules.get("rlvf.config.schema")
    if schema is not None:
        schema.rebuild()


def register(method: Method) -> Method:
    """Add a method at runtime (plugins, tests); the REGISTERED list is the usual way."""
    _load()
    if method.name in _REGISTRY:
        raise ValueError(f"method '{method.name}' is already registered")
    _REGISTRY[method.name] = method
    _changed()
    return method


def unregister(name: str) -> None:
    _load()
    _REGISTRY.pop(name, None)
    _changed()


def scan_params(cfg: Any) -> dict[str, Any]:
    """The `rlvf.scan` tag of a run of cfg: its method's scan keys that are set, by leaf name."""
    _load()
    m = _REGISTRY.get(cfg.method)
    keys: Sequence[str] = m.scan if m else ()
    return {k.rsplit(".", 1)[-1]: cfg.get(k) for k in keys if cfg.get(k) is not None}


def curves(method: str | None) -> tuple[str, ...]:
    """The stepped metrics the report plots for a method's runs (the loss for unknown ones)."""
    _load()
    m = _REGISTRY.get(method or "")
    return m.training.curves if m and m.training else ("train/loss",)
