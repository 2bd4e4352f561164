"""Run configuration: YAML recipes + overrides, validated, with `config_hash` and invariants.

See `rlvf.config.loader` for how a config is assembled and `rlvf.config.schema` for every key.
"""

from rlvf.config.loader import (
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    load_recipe,
    parse_overrides,
    recipe_names,
    short_hash,
)
from rlvf.config.schema import FIELDS, METHODS, SCHEMA

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
