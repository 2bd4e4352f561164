"""Run configuration: YAML recipes + overrides, validated, with `config_hash` and invariants.

See `rlvf.config.loader` for how a config is assembled and `rlvf.config.schema` for every key.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use: rlvf.config.fields must import without the loader, because the schema
# is derived from the method modules, which declare their keys with `Field`.
_FROM = {
    "Config": "loader",
    "ConfigError": "loader",
    "config_from_dict": "loader",
    "load_config": "loader",
    "load_recipe": "loader",
    "parse_overrides": "loader",
    "recipe_names": "loader",
    "short_hash": "loader",
    "FIELDS": "schema",
    "METHODS": "schema",
    "SCHEMA": "schema",
}


def __getattr__(name: str) -> Any:
    if name in _FROM:
        return getattr(importlib.import_module(f"rlvf.config.{_FROM[name]}"), name)
    raise AttributeError(f"module 'rlvf.config' has no attribute '{name}'")


__all__ = [
    "FIELDS",
    "METHODS",
    "SCHEMA",
    "Config",
    "ConfigError",
    "config_from_dict",
    "load_config",
    "load_recipe",
    "parse_overrides",
    "recipe_names",
    "short_hash",
]
