"""`Field`: the declaration of one config key. Dependency-free, so a method module can declare
its own keys without importing the config loader (which derives the schema from the methods)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One config key.

    type: "int", "float", "str", "bool", "list[str]", "list[int]", "list[float]".
    hashed: False for what cannot change results (paths, names, logging, workers).
    hash_omits: values at which the key is left out of `config_hash`: a key added after
        runs were recorded, whose default reproduces them (e.g. `dpo.rounds: 1`), keeps
        those runs' hashes.
    invariant: the name this key has in the fairness invariants, if it is one.
    methods: restricts the key to some methods inside its section (None: the section's);
        derived from the method registry for keys a method adds to a shared section.
    """

    type: str
    help: str
    nullable: bool = False
    choices: Any = None
    minimum: float | None = None
    maximum: float | None = None
    hashed: bool = True
    hash_omits: tuple[Any, ...] = ()
    invariant: str | None = None
    methods: tuple[str, ...] | None = None
