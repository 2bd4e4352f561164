"""Training in two CPU processes (`train.processes: 2`, gloo through accelerate) against one
process with the same global batch: same steps, the same curve within float tolerance, one
policy written, and the ranks' weights checked identical by the parent.

The DPO comparison uses plain sigmoid DPO: its loss is a mean over pairs, which two equal
halves average exactly. A token-mean term (the default recipe's SFT term) is averaged per
rank, as in any data-parallel run, and agrees only to about a percent.

GRPO samples in the loop, so the two runs can only agree if each group's completions do not
depend on which rank samples it: rlvf's rollout function samples every group as its own batch
under a seed of (run seed, call, the group's index in the global generation batch). One
generation per optimizer step (generation batch = train.batch_size) keeps TRL's per-rank
shuffle of a generation out of the comparison; `grpo.max_resample=0` keeps dynamic sampling's
filter and cross-rank reordering in play but no extra draws (an odd draw is padded on the
ranks, which TRL's per-generation metrics then see)."""

from __future__ import annotations

import math

import pytest
from stores import seed_store


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


def _grpo_overrides(processes: int, tmp_path) -> list[str]:
    return [
        f"train.processes={processes}",
        "train.batch_size=8",
        "grpo.generation_batch_size=8",
        "grpo.max_steps=2",
        "grpo.max_completion_length=32",
        "grpo.max_resample=0",
        "grpo.eval_every=0",
        "eval.seeds=[0]",
        "eval.n_samples=1",
        "eval.limit=1",
        "eval.max_new_tokens=16",
        f"tracking.output_dir={tmp_path / 'runs'}",
        "tracking.label=grpo-ranks",
    ]


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    import mlflow

    for k in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(tmp_path)  # the store's artifacts go under the temp dir
    mlflow.set_tracking_uri(seed_store(tmp_path / "mlflow.db"))
    yield tmp_path
    mlflow.set_tracking_uri("")


@pytest.mark.slow
def test_grpo_in_two_processes_is_one_run_like_one_process(sqlite_store, monkeypatch):
    """The whole GRPO lifecycle on two ranks: one MLflow run, one version, every rank's rollouts
    in rank 0's artifact, identical weights on both ranks; and the training of one process
    with the same global batch: same samples, same curve, the same policy within float noise."""
    import torch
    from mlflow import MlflowClient

    from rlvf.config import load_config
    from rlvf.methods import get
    from rlvf.models.loader import load_policy
    from rlvf.models.policy import spec_from_dir
    from rlvf.pipeline.lifecycle import STAGES
    from rlvf.pipeline.sampling import training_tasks
    from rlvf.rl.rollouts import ARTIFACT_DIR, read_rollouts
    from rlvf.train.common import base_spec, train_policy

    tmp = sqlite_store
    cfg = load_config("grpo", "small", _grpo_overrides(2, tmp))
    res = STAGES["grpo"](cfg)
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [res.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    versions = client.search_model_versions()
    assert len(versions) == 1 and versions[0].run_id == res.run_id
    # each rank wrote the digest of its weights at the end; they agree
    ranks = tmp / "runs" / res.run_id / "ranks"
    digests = [(ranks / f"weights-rank{r}.sha256").read_text() for r in (0, 1)]
    assert len(digests[0]) == 64 and digests[0] == digests[1]
    # the rollouts artifact (rank 0's alone) holds both ranks' groups of every step
    rows = read_rollouts(client.download_artifacts(res.run_id, ARTIFACT_DIR, str(tmp / "down")))
    assert sorted({r["step"] for r in rows}) == [1, 2]
    assert len(rows) == 2 * 8
    for step in (1, 2):
        groups = [r["task_id"] for r in rows if r["step"] == step][::4]
        assert len(groups) == 2 and groups[0] != groups[1]  # rank 0's group, then rank 1's

    # one process, the same global batch, on the same prompts (one thread, as each rank)
    monkeypatch.setenv("RLVF_THREADS", "1")
    cfg1 = load_config("grpo", "small", _grpo_overrides(1, tmp))
    one = train_policy(get("grpo"), cfg1, training_tasks(cfg1), tmp / "p1")
    rows1 = read_rollouts(tmp / "p1" / "rollouts")
    assert [(r["task_id"], r["completion"], r["reward"]) for r in rows1] == [
        (r["task_id"], r["completion"], r["reward"]) for r in rows
    ]
    for key in ("train/loss", "train/reward_mean", "train/kl", "train/entropy", "train/grad_norm"):
        two = sorted((m.step, m.value) for m in client.get_metric_history(res.run_id, key))
        mine = [(h["step"], h[key]) for h in one.history if key in h]
        assert [s for s, _ in two] == [s for s, _ in mine] == [1, 2], key
        for (_, a), (_, b) in zip(mine, two, strict=True):
            assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), (key, mine, two)
    # The same update: Adam turns float noise in a near-zero gradient into a step of up to
    # the learning rate, so a handful of weights differ by ~1e-5; the update as a whole agrees.
    base = _weights(load_policy(base_spec(cfg1))[0])
    d1 = _weights(load_policy(one.spec)[0]) - base
    d2 = _weights(load_policy(spec_from_dir(tmp / "runs" / res.run_id / "policy", device="cpu"))[0]) - base
    assert d1.norm() > 0
    assert (d1 - d2).norm() / d1.norm() < 1e-3
    assert torch.isclose(d1, d2, rtol=1e-3, atol=1e-6).float().mean() > 0.999


def _weights(model):
    import torch

    return torch.cat([p.detach().flatten() for _, p in sorted(model.state_dict().items())])


def test_batch_must_split_over_the_processes(monkeypatch):
    from rlvf.errors import UserError
    from rlvf.train.common import per_device_batch

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert per_device_batch(8) == 4
    with pytest.raises(UserError, match="does not split evenly over 2 training processes"):
        per_device_batch(5)


def test_which_methods_train_in_several_processes():
    from rlvf.config import load_config
    from rlvf.methods import get
    from rlvf.train.ranks import wanted

    assert wanted(get("dpo"), load_config("dpo", "default"), "cpu") == 2
    assert wanted(get("dpo"), load_config("dpo", "small"), "cpu") == 1
    for name in ("grpo", "rloo"):  # each rank samples and judges its share of whole groups
        assert wanted(get(name), load_config(name, "default"), "cpu") == 2, name
    for name in ("ppo", "online_dpo"):  # several ranks only under a launcher (tests/test_launch_rl.py)
        assert wanted(get(name), load_config(name, "default"), "cpu") == 1, name
    assert wanted(get("dpo"), load_config("dpo", "default"), "cuda") == 1


def test_rl_loops_take_a_multi_rank_launch_whose_batch_splits(monkeypatch):
    """PPO and online DPO train on every rank of a launch (tests/test_launch_rl.py); each rank
    takes an equal share of every batch, or the run is refused in one line before it opens."""
    from rlvf.config import load_config
    from rlvf.errors import UserError
    from rlvf.methods import get

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, key, said in (
        ("ppo", "ppo.rollout_batch_size", "rollout_batch_size"),
        ("online_dpo", "train.batch_size", "train.batch_size"),
    ):
        get(name).training.resolve(load_config(name, "small", [f"{key}=4"]))
        with pytest.raises(UserError, match=rf"^{name}: {said} \(5\) does not split evenly over 2 training"):
            get(name).training.resolve(load_config(name, "small", [f"{key}=5"]))


def test_each_rank_must_get_whole_groups():
    from rlvf.config import load_config
    from rlvf.errors import UserError
    from rlvf.methods import get

    ok = ["train.processes=2", "train.batch_size=8", "grpo.generation_batch_size=8"]
    get("grpo").training.resolve(load_config("grpo", "small", ok))  # two groups of 4: one per rank
    bad = ["train.processes=2", "train.batch_size=4", "grpo.generation_batch_size=4"]
    with pytest.raises(UserError, match="must split into whole groups of 4 over 2 training processes"):
        get("grpo").training.resolve(load_config("grpo", "small", bad))
    bad = ["train.processes=2", "train.batch_size=4", "rloo.generation_batch_size=4"]
    with pytest.raises(UserError, match="must split into whole groups of 4 over 2 training processes"):
        get("rloo").training.resolve(load_config("rloo", "small", bad))
