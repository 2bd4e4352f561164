"""Load one run's config: the default recipe, then a recipe, then overrides; validate; hash.

    cfg = load_config("dpo", recipe="small", overrides=["train.learning_rate=1e-4"])
    cfg.train.learning_rate, cfg["dpo.loss_type"], cfg.hash, cfg.invariants_hash

A recipe is a YAML file under `rlvf/recipes/` (named without `.yaml`) or a path. Every
recipe extends `default` (the embedded model's tuned recipe, the one place defaults live);
`extends: other` chains through another recipe first. Overrides are `key=value` strings or a
dict of dotted keys; values are read as YAML scalars, lists may also be comma-separated.
Any mistake (unknown key, wrong type, value out of range) raises a `ConfigError` naming the
key, the value and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rlvf.config.schema import FIELDS, METHODS, REVISIONS, SECTIONS, TRAINING_METHODS, Field, applies
from rlvf.errors import UserError

DEFAULT_RECIPE = "default"
_RECIPE_META_KEYS = ("extends", "description")


class ConfigError(UserError):
    """A bad recipe, key or value; the message names which and why."""


# --------------------------------------------------------------------------- recipes


def recipe_names() -> list[str]:
    """The recipes shipped with rlvf."""
    root = resources.files("rlvf") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def _recipe_text(recipe: str) -> tuple[str, str]:
    """(text, where) for a recipe name or path."""
    looks_like_path = recipe.endswith((".yaml", ".yml")) or "/" in recipe or "\\" in recipe
    if looks_like_path:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe file '{recipe}' does not exist")
        return path.read_text(encoding="utf-8"), str(path)
    res = resources.files("rlvf") / "recipes" / f"{recipe}.yaml"
    if not res.is_file():
        raise ConfigError(
            f"unknown recipe '{recipe}' (shipped recipes: {', '.join(recipe_names())}; or give a .yaml path)"
        )
    return res.read_text(encoding="utf-8"), f"recipe '{recipe}'"


def load_recipe(recipe: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A recipe's content merged over what it extends (ultimately `default`), unvalidated."""
    if recipe in _seen:
        raise ConfigError(f"recipe '{recipe}' extends itself (via {' -> '.join(_seen)})")
    text, where = _recipe_text(recipe)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}:{at} not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of config sections, got {type(data).__name__}")
    parent = data.pop("extends", None)
    data.pop("description", None)
    if recipe == DEFAULT_RECIPE:
        return data
    base = load_recipe(parent or DEFAULT_RECIPE, (*_seen, recipe))
    return deep_merge(base, data)


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --------------------------------------------------------------------------- values


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in FIELDS:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _suggest(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unknown(key: str, method: str | None = None) -> ConfigError:
    """One line for a key no method has; suggestions come from `method`'s own keys when known."""
    candidates = [k for k in FIELDS if method is None or applies(k, method)]
    section = key.split(".", 1)[0]
    if section not in SECTIONS:
        return ConfigError(f"unknown config section '{section}' in '{key}'{_suggest(key, candidates)}")
    return ConfigError(f"unknown config key '{key}'{_suggest(key, candidates)}")


_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _type_name(t: str) -> str:
    if t.startswith("list["):
        return f"a list of {_TYPE_NAMES[t[5:-1]].split(' ', 1)[1]}s"
    return _TYPE_NAMES[t]


def _scalar(key: str, value: Any, t: str, raw: Any, expected: str | None = None) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"config key '{key}' must be {_type_name(expected or t)}, got {raw!r}")

    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (
            "true",
            "yes",
            "on",
            "1",
            "false",
            "no",
            "off",
            "0",
        ):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise bad()
    if t == "int":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise bad() from None
                if f.is_integer():
                    return int(f)
        raise bad()
    if t == "float":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad() from None
        raise bad()
    if t == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    raise AssertionError(t)


def coerce(key: str, value: Any, field: Field) -> Any:
    """Check and normalise one value; raises ConfigError naming the key."""
    raw = value
    if value is None:
        if field.nullable:
            return None
        raise ConfigError(f"config key '{key}' must be {_type_name(field.type)}, got null")
    if field.nullable and isinstance(value, str) and value.strip().lower() in ("null", "none", "~", ""):
        return None
    if field.type.startswith("list["):
        inner = field.type[5:-1]
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = yaml.safe_load(text)
                except yaml.YAMLError:
                    raise ConfigError(
                        f"config key '{key}' must be {_type_name(field.type)}, got {raw!r}"
                    ) from None
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        elif isinstance(value, tuple):
            value = list(value)
        elif not isinstance(value, list):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be {_type_name(field.type)}, got {raw!r}")
        out = [_scalar(key, v, inner, raw, field.type) for v in value]
        if not out and not field.nullable:
            raise ConfigError(f"config key '{key}' must not be empty")
        for v in out:
            _check_range(key, v, field)
        return out
    out = _scalar(key, value, field.type, raw)
    _check_range(key, out, field)
    return out


def _check_range(key: str, v: Any, field: Field) -> None:
    if field.choices is not None and v not in field.choices:
        raise ConfigError(
            f"config key '{key}' must be one of {', '.join(map(str, field.choices))}; got {v!r}"
        )
    if field.minimum is not None and isinstance(v, (int, float)) and v < field.minimum:
        raise ConfigError(f"config key '{key}' must be at least {field.minimum:g}; got {v!r}")
    if field.maximum is not None and isinstance(v, (int, float)) and v > field.maximum:
        raise ConfigError(f"config key '{key}' must be at most {field.maximum:g}; got {v!r}")


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """`["a.b=1", ...]` or `{"a.b": 1}` -> {dotted key: value}. String values stay strings
    here; `coerce` reads them by the key's type."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return (
            flatten(overrides) if any(isinstance(v, Mapping) for v in overrides.values()) else dict(overrides)
        )
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. train.learning_rate=1e-4)")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"override '{item}' has no key")
        out[k] = v
    return out


# --------------------------------------------------------------------------- the config


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def short_hash(obj: Any, n: int = 8) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:n]


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, lists inline: reads like the recipes."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


class _Section:
    """Attribute access to one section of a Config: cfg.train.learning_rate."""

    def __init__(self, name: str, data: dict[str, Any]):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_data", data)

    def __getattr__(self, item: str) -> Any:
        data = object.__getattribute__(self, "_data")
        if item in data:
            return data[item]
        raise AttributeError(f"config section '{self._name}' has no key '{item}'")

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only; use Config.replace(...)")

    def __getitem__(self, item: str) -> Any:
        return self._data[item]

    def __contains__(self, item: str) -> bool:
        return item in self._data

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def __repr__(self) -> str:
        return f"{self._name}{self._data!r}"


class Config:
    """One run's validated, normalised config (read-only).

    Holds exactly the keys that apply to its method, all present, all of the right type.
    """

    def __init__(self, flat: dict[str, Any], recipe: str = DEFAULT_RECIPE):
        order = {k: i for i, k in enumerate(FIELDS)}
        object.__setattr__(self, "_flat", dict(sorted(flat.items(), key=lambda kv: order[kv[0]])))
        object.__setattr__(self, "_tree", unflatten(self._flat))
        object.__setattr__(self, "recipe", recipe)

    # access
    @property
    def method(self) -> str:
        return self._flat["method"]

    def __getattr__(self, item: str) -> Any:
        tree = object.__getattribute__(self, "_tree")
        if item in tree:
            v = tree[item]
            return _Section(item, v) if isinstance(v, dict) else v
        raise AttributeError(f"config for method '{self._flat.get('method')}' has no section '{item}'")

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only; use Config.replace(...)")

    def __getitem__(self, key: str) -> Any:
        if key in self._flat:
            return copy.deepcopy(self._flat[key])
        if key in self._tree:
            return copy.deepcopy(self._tree[key])
        raise KeyError(key)

    def __contains__(self, key: str) -> bool:
        return key in self._flat or key in self._tree

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def flat(self) -> dict[str, Any]:
        return copy.deepcopy(self._flat)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._tree)

    def to_yaml(self) -> str:
        head = f"# rlvf config (method {self.method}, recipe {self.recipe}, config_hash {self.hash})\n"
        return head + yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, width=100)

    def replace(self, overrides: Iterable[str] | Mapping[str, Any]) -> Config:
        """A new validated Config with some keys changed."""
        flat = self.flat()
        for k, v in parse_overrides(overrides).items():
            if k not in FIELDS:
                raise _unknown(k, self.method)
            if not applies(k, self.method):
                raise ConfigError(f"config key '{k}' does not apply to method '{self.method}'")
            flat[k] = coerce(k, v, FIELDS[k])
        return Config(flat, self.recipe)

    # identity
    def _inert(self, key: str) -> bool:
        """Keys that cannot change anything as set: lm-eval's settings while it runs no task (so
        a config with lm-eval off keeps the hash and invariants it had before lm-eval existed)."""
        return key.startswith("eval.lm_eval.") and not self._flat.get("eval.lm_eval.tasks")

    def hashed(self) -> dict[str, Any]:
        """The part of the config that can change results (less keys at a `hash_omits` value,
        and lm-eval's settings while it runs no task)."""
        return {
            k: v
            for k, v in self._flat.items()
            if FIELDS[k].hashed
            and not self._inert(k)
            and not any(v == o and type(v) is type(o) for o in FIELDS[k].hash_omits)
        }

    @property
    def hash(self) -> str:
        """config_hash: short hash of the normalised config less what cannot change results,
        and the method's revision once its code has changed what a config produces."""
        revision = REVISIONS.get(self.method, 1)
        return short_hash(self.hashed() if revision == 1 else {**self.hashed(), "method.revision": revision})

    config_hash = hash

    def invariants(self, adapter: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What must be equal for two runs' numbers to be compared (seed 004's fairness invariants):
        base model and revision, adapter setup, quantisation, eval settings, seed.

        Every training method (rlvf.methods) records how it fine-tunes. Runs that train
        nothing (eval, pairs, bootstrap) have finetune 'none' unless `adapter`
        (the invariants of the run whose policy they load) says otherwise.
        """
        inv: dict[str, Any] = {}
        for k, v in self._flat.items():
            name = FIELDS[k].invariant
            if name and not name.startswith(("lora_", "finetune")) and not self._inert(k):
                inv[name] = v
        if self.method in TRAINING_METHODS:
            inv["finetune"] = self._flat["model.finetune"]
            if inv["finetune"] == "lora":
                for k in ("lora.r", "lora.alpha", "lora.targets"):
                    inv[FIELDS[k].invariant] = self._flat[k]  # type: ignore[index]
        elif adapter:
            for k, v in adapter.items():
                if k == "finetune" or k.startswith("lora_"):
                    inv[k] = v
        else:
            inv["finetune"] = "none"
        return dict(sorted(inv.items()))

    @property
    def invariants_hash(self) -> str:
        return short_hash(self.invariants())

    def __repr__(self) -> str:
        return f"Config(method={self.method!r}, recipe={self.recipe!r}, hash={self.hash})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._flat == other._flat

    def __hash__(self) -> int:
        return hash(_canonical(self._flat))


def validate(method: str, tree: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """Check a merged recipe tree for `method`; returns the normalised flat dict."""
    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}' (one of {', '.join(METHODS)})")
    for section, node in tree.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown config section '{section}'{_suggest(section, SECTIONS)}")
        if isinstance(FIELDS.get(section), Field):
            continue
        if not isinstance(node, Mapping):
            raise ConfigError(f"{where}: config section '{section}' must be a mapping of keys, got {node!r}")
    flat = flatten(tree)
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in FIELDS:
            raise _unknown(key, method)
        if applies(key, method):
            out[key] = coerce(key, value, FIELDS[key])
    missing = [k for k in FIELDS if applies(k, method) and k not in out]
    if missing:
        raise ConfigError(f"{where}: missing config key(s) {', '.join(missing)}")
    _check_consistency(out)
    return out


def _check_consistency(flat: Mapping[str, Any]) -> None:
    if flat.get("train.epochs") is not None and flat["train.epochs"] <= 0:
        raise ConfigError(f"config key 'train.epochs' must be above 0; got {flat['train.epochs']!r}")
    weights = flat.get("dpo.loss_weights")
    if weights is not None and len(weights) != len(flat["dpo.loss_type"]):
        raise ConfigError(
            f"config key 'dpo.loss_weights' needs one weight per loss type: "
            f"{len(weights)} weights for {flat['dpo.loss_type']}"
        )
    if flat.get("data.sft_source") == "traces" and not flat.get("data.traces"):
        raise ConfigError(
            "data.sft_source=traces needs data.traces=PATH (a JSONL of prompt/completion lines)"
        )
    if "data.min_chars" in flat and flat["data.min_chars"] > flat["data.max_chars"]:
        raise ConfigError(
            f"config key 'data.min_chars' ({flat['data.min_chars']}) is above data.max_chars ({flat['data.max_chars']})"
        )
    if flat.get("model.quantization") == "nf4" and flat.get("model.finetune") == "full":
        raise ConfigError(
            "model.quantization=nf4 needs model.finetune=lora (quantised weights cannot be trained)"
        )


def load_config(
    method: str,
    recipe: str | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
) -> Config:
    """The validated config for one `method` run: default <- recipe <- overrides."""
    recipe = recipe or DEFAULT_RECIPE
    tree = load_recipe(recipe)
    tree["method"] = method
    where = f"recipe '{recipe}'"
    # Check the recipe itself first, so a bad recipe key is blamed on the recipe.
    validate(method, tree, where)
    flat = flatten(tree)
    for k, v in parse_overrides(overrides).items():
        if k == "method":
            raise ConfigError("'method' is set by the entry point, not by an override")
        if k not in FIELDS:
            raise _unknown(k, method)
        if not applies(k, method):
            raise ConfigError(f"config key '{k}' does not apply to method '{method}'")
        flat[k] = v
    return Config(validate(method, unflatten(flat), where), recipe)


def config_from_dict(d: Mapping[str, Any]) -> Config:
    """Rebuild a Config from `Config.to_dict()` output (e.g. a run's config.yaml)."""
    method = d.get("method")
    if not isinstance(method, str):
        raise ConfigError("config has no 'method'")
    return Config(validate(method, d))
