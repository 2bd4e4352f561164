"""Config: recipes, overrides, validation messages, config_hash and invariants."""

from __future__ import annotations

import pytest
import yaml

from rlvf.config import ConfigError, config_from_dict, load_config, recipe_names
from rlvf.config.schema import FIELDS, METHODS, SECTIONS, applies


def test_shipped_recipes_load_for_every_method():
    assert {"default", "small"} <= set(recipe_names())
    for recipe in recipe_names():
        for method in METHODS:
            cfg = load_config(method, recipe)
            assert cfg.method == method
            # exactly the keys that apply, all present
            assert set(cfg.flat()) == {k for k in FIELDS if applies(k, method)}


def test_default_recipe_names_every_key():
    """default.yaml is the one source of defaults: it must hold every key of the schema."""
    from importlib import resources

    tree = yaml.safe_load((resources.files("rlvf") / "recipes" / "default.yaml").read_text())
    tree.pop("description", None)
    from rlvf.config.loader import flatten

    assert set(flatten(tree)) | {"method"} == set(FIELDS)


def test_tuned_dpo_defaults():
    cfg = load_config("dpo")
    assert cfg.dpo.loss_type == ["sigmoid", "sft"]
    assert cfg.dpo.precompute_ref_log_probs is True
    assert cfg.train.gradient_checkpointing is False
    assert 1e-4 <= cfg.train.learning_rate <= 5e-4
    assert len(cfg.eval.seeds) == 3


def test_overrides_are_typed_and_win():
    cfg = load_config(
        "dpo",
        "small",
        [
            "train.learning_rate=1e-4",
            "dpo.loss_type=sigmoid,sft",
            "eval.seeds=[1, 2]",
            "data.n_pairs=120",
            "data.dedupe=no",
            "data.pairs=null",
        ],
    )
    assert cfg.train.learning_rate == 1e-4 and isinstance(cfg.train.learning_rate, float)
    assert cfg["dpo.loss_type"] == ["sigmoid", "sft"]
    assert cfg["eval.seeds"] == [1, 2]
    assert cfg["data.n_pairs"] == 120
    assert cfg["data.dedupe"] is False
    assert cfg["data.pairs"] is None
    # dict overrides, nested or dotted
    assert load_config("dpo", None, {"train": {"epochs": 3}})["train.epochs"] == 3.0
    assert load_config("dpo", None, {"train.epochs": 3})["train.epochs"] == 3.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.lerning_rate=1",
            "unknown config key 'train.lerning_rate' (did you mean 'train.learning_rate'?)",
        ),
        ("trian.epochs=1", "unknown config section 'trian'"),
        ("train.learning_rate=fast", "config key 'train.learning_rate' must be a number, got 'fast'"),
        ("train.batch_size=2.5", "config key 'train.batch_size' must be an integer, got '2.5'"),
        ("eval.seeds=a,b", "config key 'eval.seeds' must be a list of integers, got 'a,b'"),
        ("data.dedupe=maybe", "config key 'data.dedupe' must be true or false, got 'maybe'"),
        ("model.finetune=half", "config key 'model.finetune' must be one of lora, full; got 'half'"),
        ("dpo.beta=-1", "config key 'dpo.beta' must be at least 0"),
        ("dpo.loss_weights=1,2,3", "needs one weight per loss type"),
        ("train.epochs", "must look like key=value"),
        ("method=sft", "'method' is set by the entry point"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("dpo", None, [override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_key_of_another_method_is_refused():
    with pytest.raises(ConfigError, match=r"'train\.epochs' does not apply to method 'eval'"):
        load_config("eval", None, ["train.epochs=1"])


def test_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_config("dpo", "nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("dpo", str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("dpo", str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  epoch: 2\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch'"):
        load_config("dpo", str(typo))
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config("dpo", str(loop))


def test_user_recipe_extends_a_shipped_one(tmp_path):
    r = tmp_path / "mine.yaml"
    r.write_text("extends: small\ntrain:\n  learning_rate: 3.0e-4\n")
    cfg = load_config("dpo", str(r))
    assert cfg["model.policy"] == "embedded:small"  # from small
    assert cfg["train.learning_rate"] == 3e-4  # from mine
    assert cfg["dpo.beta"] == load_config("dpo")["dpo.beta"]  # from default


def test_config_hash_ignores_what_cannot_change_results():
    base = load_config("dpo", "small")
    same = load_config(
        "dpo",
        "small",
        [
            "tracking.run_name=x",
            "tracking.output_dir=/tmp/o",
            "registry.alias=prod",
            "verify.workers=7",
            "verify.backend=ray",  # where samples are judged does not change verdicts
            "verify.ray_address=10.0.0.1:6379",
            "verify.ray_actors=8",
            "verify.ray_auth=disabled",
            "train.logging_steps=5",
            "tracking.experiment=e",
        ],
    )
    assert same.hash == base.hash
    assert load_config("dpo", "small", ["train.learning_rate=3e-4"]).hash != base.hash
    assert load_config("dpo", "small", ["seed=1"]).hash != base.hash
    # 2 and 2.0 are the same value
    assert (
        load_config("dpo", "small", ["train.epochs=2"]).hash
        == load_config("dpo", "small", ["train.epochs=2.0"]).hash
    )
    assert len(base.hash) == 8


def test_eval_hash_ignores_training_knobs():
    """An eval run's config holds no training section, so its hash cannot move with one."""
    cfg = load_config("eval", "small")
    assert "train" not in cfg.to_dict() and "dpo" not in cfg.to_dict()


def test_invariants():
    dpo = load_config("dpo")
    inv = dpo.invariants()
    assert inv["base_model"] == "embedded"
    assert inv["finetune"] == "full"
    assert inv["seed"] == 42
    assert inv["eval_suites"] == ["procedural"]
    assert "lora_r" not in inv  # full fine-tuning: no adapter setup
    lora = load_config("dpo", None, ["model.finetune=lora"]).invariants()
    assert lora["lora_r"] == 16 and lora["lora_alpha"] == 32 and lora["lora_targets"] == ["all-linear"]
    # what the invariants hold constant moves the hash; the method's own knobs do not
    assert load_config("dpo", None, ["dpo.beta=0.3"]).invariants_hash == dpo.invariants_hash
    assert load_config("sft").invariants_hash == dpo.invariants_hash
    assert load_config("dpo", None, ["eval.n_samples=9"]).invariants_hash != dpo.invariants_hash
    assert load_config("dpo", None, ["model.policy=embedded:small"]).invariants_hash != dpo.invariants_hash
    # runs that train nothing: finetune none, unless they load a trained policy
    assert load_config("eval").invariants()["finetune"] == "none"
    assert load_config("eval").invariants({"finetune": "full"}) == dpo.invariants()


def test_round_trip_through_yaml():
    cfg = load_config("dpo", "small", ["train.learning_rate=1e-4"])
    back = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert back == cfg and back.hash == cfg.hash


def test_config_is_read_only():
    cfg = load_config("dpo")
    with pytest.raises(AttributeError):
        cfg.train.learning_rate = 1.0  # type: ignore[misc]
    changed = cfg.replace(["train.learning_rate=1e-3"])
    assert changed.train.learning_rate == 1e-3 and cfg.train.learning_rate != 1e-3


def test_schema_sections_are_consistent():
    for key in FIELDS:
        assert key.split(".", 1)[0] in SECTIONS, key
