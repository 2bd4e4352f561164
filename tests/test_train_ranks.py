"""Training in two CPU processes (`train.processes: 2`, gloo through accelerate) against one
process with the same global batch: same steps, the same curve within float tolerance, one
policy written, and the ranks' weights checked identical by the parent.

The comparison uses plain sigmoid DPO: its loss is a mean over pairs, which two equal halves
average exactly. A token-mean term (the default recipe's SFT term) is averaged per rank, as in
any data-parallel run, and agrees only to about a percent."""

from __future__ import annotations

import math

import pytest


def _train(tmp_path, processes: int):
    from rlvf.config import load_config
    from rlvf.methods import get
    from rlvf.train.common import train_policy

    cfg = load_config(
        "dpo",
        "small",
        [
            f"train.processes={processes}",
            "train.max_steps=3",
            "train.batch_size=4",
            "dpo.loss_type=[sigmoid]",
            "dpo.loss_weights=null",
            "tracking.progress=false",
        ],
    )
    rows = get("dpo").training.examples(12)
    return train_policy(get("dpo"), cfg, rows, tmp_path / f"p{processes}")


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    from rlvf.models.loader import load_policy

    one = _train(tmp_path, 1)
    two = _train(tmp_path, 2)
    assert one.steps == two.steps == 3
    loss = lambda r: [h["train/loss"] for h in r.history if "train/loss" in h]  # noqa: E731
    assert len(loss(one)) == len(loss(two)) == 3
    for a, b in zip(loss(one), loss(two), strict=True):
        assert math.isclose(a, b, rel_tol=1e-3), (loss(one), loss(two))
    # only rank 0 wrote the policy, and it loads
    assert (tmp_path / "p2" / "policy" / "model.safetensors").is_file()
    assert not (tmp_path / "p2" / "ranks" / "error.txt").exists()
    model, _ = load_policy(two.spec)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_batch_must_split_over_the_processes(monkeypatch):
    from rlvf.errors import UserError
    from rlvf.train.common import per_device_batch

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert per_device_batch(8) == 4
    with pytest.raises(UserError, match="does not split evenly over 2 training processes"):
        per_device_batch(5)


def test_methods_that_sample_in_the_loop_train_in_one_process():
    from rlvf.config import load_config
    from rlvf.methods import get
    from rlvf.train.ranks import wanted

    assert wanted(get("dpo"), load_config("dpo", "default"), "cpu") == 2
    assert wanted(get("dpo"), load_config("dpo", "small"), "cpu") == 1
    for name in ("grpo", "rloo", "ppo", "online_dpo"):
        assert wanted(get(name), load_config(name, "default"), "cpu") == 1, name
    assert wanted(get("dpo"), load_config("dpo", "default"), "cuda") == 1
