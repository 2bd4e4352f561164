"""The training layer every method shares: metric names, health flags, trainer arguments per
method, and for every registered training method two real TRL steps on embedded:small that
change every trainable parameter and save a policy that loads back with the same weights."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rlvf.methods import get, methods
from rlvf.train.callback import health_flags, metric_key

TRAINING = [m.name for m in methods() if m.trains]


def test_metric_names():
    assert metric_key("loss") == "train/loss"
    assert metric_key("rewards/chosen") == "train/rewards_chosen"
    assert metric_key("logps/rejected") == "train/logps_rejected"
    assert metric_key("grad_norm") == "train/grad_norm"
    assert metric_key("reward", {"reward": "train/reward_mean"}) == "train/reward_mean"


def _hist(key, values):
    return [{"step": i, key: v} for i, v in enumerate(values)]


def test_health_flags_shared_and_per_method():
    assert health_flags(_hist("train/loss", [1.0, 0.9, 0.8, 0.7])) == []
    assert health_flags(_hist("train/loss", [1.0, math.nan, 0.8])) == ["loss_nan"]
    assert health_flags(_hist("train/loss", [0.5, 0.5, 3.0, 4.0])) == ["loss_diverged"]
    falling = _hist("train/logps_chosen", [-10.0, -10.0, -12.0, -13.0])
    dpo = get("dpo").training.health
    assert health_flags(falling, dpo) == ["chosen_logps_fell"]
    assert health_flags(falling) == []  # not a shared check: SFT has no chosen side
    assert health_flags(_hist("train/logps_chosen", [-10.0, -10.0, -9.0, -9.5]), dpo) == []


def test_trainer_args_per_method(tmp_path):
    from rlvf.config import load_config
    from rlvf.train.common import trainer_args

    for name in TRAINING:
        training = get(name).training
        cfg = load_config(name, "small")
        args = trainer_args(cfg, tmp_path, "cpu", training)
        cls = training.config_class()
        accepted = {f.name for f in dataclasses.fields(cls)}
        assert set(args) <= accepted, name
        assert args["learning_rate"] == cfg["train.learning_rate"] and args["report_to"] == []
        cls(**args)  # the TRL config takes them
    sft = trainer_args(load_config("sft", "small"), tmp_path, "cpu", get("sft").training)
    assert sft["completion_only_loss"] is True and sft["max_length"] == 256
    dpo = trainer_args(load_config("dpo", "small"), tmp_path, "cpu", get("dpo").training)
    assert dpo["beta"] == 0.1 and dpo["loss_type"] == ["sigmoid", "sft"] and dpo["max_length"] == 256


def test_trainer_args_drop_what_a_config_does_not_take(tmp_path):
    """A method whose TRL config lacks a shared argument does not get it; a method's own
    argument its config does not take is an error, not silently dropped."""
    from rlvf.config import load_config
    from rlvf.methods import Training
    from rlvf.train.common import trainer_args

    @dataclasses.dataclass
    class Narrow:  # a TRL-like config without max_length or remove_unused_columns
        output_dir: str = ""
        learning_rate: float = 0.0
        seed: int = 0
        num_generations: int = 2

    cfg = load_config("sft", "small")
    t = Training(
        "n", "rows", lambda ctx: [], lambda *a, **k: None, lambda: Narrow, lambda cfg: {"num_generations": 4}
    )
    assert trainer_args(cfg, tmp_path, "cpu", t) == {
        "output_dir": str(tmp_path),
        "learning_rate": cfg["train.learning_rate"],
        "seed": cfg["seed"],
        "num_generations": 4,
    }
    bad = dataclasses.replace(t, trainer_args=lambda cfg: {"max_length": 8})
    with pytest.raises(TypeError, match="max_length"):
        trainer_args(cfg, tmp_path, "cpu", bad)


class _Watch:
    """Keeps the trainable parameters at the start and the end of training."""

    def __init__(self):
        from transformers import TrainerCallback

        watch = self

        class CB(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kw):
                watch.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

            def on_train_end(self, args, state, control, model=None, **kw):
                watch.after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

        self.callback = CB()


@pytest.mark.parametrize("name", TRAINING)
def test_two_steps_change_every_trainable_parameter_and_reload(name, tmp_path, tiny_policy):
    import torch

    from rlvf.config import load_config
    from rlvf.models.loader import load_policy
    from rlvf.models.policy import POLICY_FILE, spec_from_dir
    from rlvf.train.common import train_policy

    method = get(name)
    cfg = load_config(
        name,
        "small",
        ["train.max_steps=2", "train.batch_size=2", "tracking.progress=false", "model.device=cpu"],
    )
    watch = _Watch()
    rows = method.training.examples(4)
    res = train_policy(method, cfg, rows, tmp_path / "out", extra_callbacks=[watch.callback])
    assert res.steps == 2 and res.n_examples == len(rows)
    assert any("train/loss" in h for h in res.history)
    assert watch.before and set(watch.before) == set(watch.after)
    unchanged = [n for n in watch.before if torch.equal(watch.before[n], watch.after[n])]
    assert not unchanged, f"{name}: parameters not updated: {unchanged[:5]}"
    # save + reload: the policy directory loads back with the trained weights (through the
    # method's own loader: a reward model has a score head, not a language-model head)
    assert (res.policy_dir / POLICY_FILE).exists()
    model, _ = (method.training.load_model or load_policy)(spec_from_dir(res.policy_dir, device="cpu"))
    reloaded = dict(model.named_parameters())
    for n, p in watch.after.items():
        assert torch.allclose(reloaded[n].float(), p.float()), n
