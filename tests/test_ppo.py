"""rlvf's PPO on embedded:small with the real sandboxed reward: the engine's packed rollouts,
the reward path (a completion that exits 0 before the tests run earns the lowest reward, and
a reward model cannot lift it over a passing one), PPO raising the mean reward, and the
whole method read back from a real sqlite MLflow store."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from stores import sqlite_store

from rlvf.config import load_config
from rlvf.generate.engine import _Raw, pack_rollout
from rlvf.records import Task

ADD = Task(
    task_id="t/add3",
    prompt='def add3(a, b):\n    """Return a + b + 3."""\n',
    entry_point="add3",
    test="def check(candidate):\n    assert candidate(1, 2) == 6\n    assert candidate(0, 0) == 3\n",
    canonical_solution="    return a + b + 3\n",
)


def test_pack_rollout_pads_prompts_left_and_completions_right():
    raws = [
        _Raw(text="x", n_tokens=3, finish="length", token_ids=(7, 8, 9), logprobs=(-0.1, -0.2, -0.3)),
        _Raw(text="y", n_tokens=0, finish="eos", token_ids=(2,), logprobs=(-0.5,)),
    ]
    b = pack_rollout([[5], [5, 6]], raws, pad_id=0)
    assert b.prompt_width == 2
    assert b.input_ids.tolist() == [[0, 5, 7, 8, 9], [5, 6, 2, 0, 0]]
    assert b.attention_mask.tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert b.completion_ids.tolist() == [[7, 8, 9], [2, 0, 0]]
    assert b.completion_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert torch.allclose(b.sampling_logprobs, torch.tensor([[-0.1, -0.2, -0.3], [-0.5, 0.0, 0.0]]))
    assert b.lengths == [3, 1]


def test_engine_logprobs_match_the_trainers_forward(tiny_model):
    """The log-probs the sampler reports are the ones PPO's forward computes on the packed batch
    (same temperature): the rollout and the optimisation score the same policy."""
    from rlvf.generate.engine import HFBackend, SamplingSettings
    from rlvf.train.ppo import _forward

    model, tok = tiny_model
    prompts = [ADD.prompt, 'def sq(x):\n    """Return x squared."""\n']
    settings = SamplingSettings(temperature=0.7, max_new_tokens=16, seed=5)
    raws = HFBackend(model, tok, 8).run(prompts, ["add3", "sq"], settings, logprobs=True)
    assert all(len(r.logprobs) == len(r.token_ids) > 0 for r in raws)
    plain = HFBackend(model, tok, 8).run(prompts, ["add3", "sq"], settings)
    assert [r.token_ids for r in plain] == [r.token_ids for r in raws] and not plain[0].logprobs
    b = pack_rollout(tok(prompts, add_special_tokens=False)["input_ids"], raws, tok.pad_token_id)
    with torch.no_grad():
        logp, _, _ = _forward(model, b.input_ids, b.attention_mask, b.completion_ids, b.prompt_width, 0.7)
    m = b.completion_mask.bool()
    assert torch.allclose(logp[m], b.sampling_logprobs[m], atol=1e-3)


def _trainer(tiny_policy, tasks, **kw):
    from rlvf.models.loader import PolicySpec, load_policy
    from rlvf.train.ppo import PPOSettings, PPOTrainer

    model, tok = load_policy(PolicySpec(base=str(tiny_policy), device="cpu"), trainable=True)
    scorer = kw.pop("scorer", None)
    return PPOTrainer(model, tok, tasks, PPOSettings(**kw), scorer=scorer)


def test_exit_zero_before_the_tests_earns_the_lowest_reward_through_ppo(tiny_policy):
    """`sys.exit(0)` / `os._exit(0)` in the body ends the program with status 0 before any
    assert runs; PPO's reward path pays it the lowest reward, on its last token, and a reward
    model that prefers it still cannot lift it over a passing completion."""
    from rlvf.rl.gae import token_rewards

    cheats = ["    import sys\n    sys.exit(0)\n", "    import os\n    os._exit(0)\n"]
    texts = [*cheats, "    return a + b + 3\n"]
    tr = _trainer(tiny_policy, [ADD], rollout_batch_size=3, minibatch_size=1, verify_timeout=3.0)
    ids = [tuple(tr.tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    raws = [
        _Raw(text=t, n_tokens=len(i), finish="stop", token_ids=i) for t, i in zip(texts, ids, strict=True)
    ]
    prompt_ids = tr.tok([ADD.prompt] * 3, add_special_tokens=False)["input_ids"]
    batch = pack_rollout(prompt_ids, raws, tr.tok.pad_token_id)
    paid, scored = tr.score([ADD] * 3, batch)
    assert [s.outcome.category for s in scored[:2]] == ["tampering", "tampering"]
    assert paid == [tr.reward.lowest, tr.reward.lowest, 1.0]
    r = token_rewards(
        torch.tensor(paid), torch.zeros(3, batch.completion_ids.shape[1]), batch.completion_mask, 0.1
    )
    for row, n in enumerate(batch.lengths):
        assert float(r[row, n - 1]) == paid[row] and float(r[row].sum()) == paid[row]

    def loves_cheats(prompts, completions):
        return [100.0 if "exit" in c else -100.0 for c in completions]

    rm = _trainer(
        tiny_policy,
        [ADD],
        rollout_batch_size=3,
        minibatch_size=1,
        reward="verifier+rm:test",
        scorer=loves_cheats,
    )
    paid, _ = rm.score([ADD] * 3, batch)
    assert max(paid[:2]) < 1.0 <= paid[2]


def _runs_only(t: Task) -> Task:
    """The task's first check only: does the completion run on the first input?"""
    first = next(line for line in t.test.splitlines() if "assert" in line)
    return dataclasses.replace(t, test=f"def check(candidate):\n{first}\n")


@pytest.mark.slow
def test_ppo_raises_mean_reward_on_embedded_small(tiny_policy):
    """Six iterations of 24 rollouts on three procedural task families whose reward (binary:
    the function runs on the first input) embedded:small earns about a third of the time at
    T 0.7. The mean reward of 64 completions from the trained policy beats 64 from the
    starting policy on the same prompts (measured 0.30-0.38 -> 0.61-0.72 over seeds 1-3)."""
    from rlvf.tasks import load_suite

    families = ("reverse_string", "is_palindrome", "fibonacci")
    tasks = [_runs_only(t) for t in load_suite("procedural:train") if t.task_id.split("/")[1] in families]
    torch.set_num_threads(1)
    tr = _trainer(
        tiny_policy,
        tasks,
        iterations=6,
        rollout_batch_size=24,
        minibatch_size=8,
        ppo_epochs=2,
        max_completion_length=64,
        learning_rate=2e-4,
        temperature=0.7,
        reward_mode="binary",
        lam=1.0,
        seed=1,
    )

    def mean_reward() -> float:
        order = [i % len(tasks) for i in range(64)]
        picked = [tasks[i] for i in order]
        saved, tr._order = tr._order, iter(order)
        try:
            s = tr.settings
            tr.settings = dataclasses.replace(s, rollout_batch_size=64)
            _, batch = tr.rollout(10**6)
        finally:
            tr.settings, tr._order = s, saved
        paid, _ = tr.score(picked, batch)
        judged = [p for p in paid if p is not None]
        return sum(judged) / len(judged)

    before = mean_reward()
    tr.train()
    after = mean_reward()
    rewards = [h["reward_mean"] for h in tr.history if "reward_mean" in h]
    assert len(rewards) == 6
    assert after > before + 0.1, (before, after, rewards)
    assert all(h["kl"] < 0.5 for h in tr.history if "kl" in h)


# --------------------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("ppo_method")) as root:
        yield root


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_ppo_run_reads_back_from_the_store(store):
    from mlflow import MlflowClient

    from rlvf.pipeline.lifecycle import STAGES
    from rlvf.pipeline.sampling import training_tasks
    from rlvf.rl.rollouts import ARTIFACT_DIR, read_rollouts

    client = MlflowClient()
    cfg = load_config("ppo", "small", ["tracking.label=ppo-test", "ppo.target_kl=0.01"])
    res = STAGES["ppo"](cfg)
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED" and r.data.tags["rlvf.method"] == "ppo"
    for key in cfg.flat():
        if key.startswith("ppo."):
            assert f"cfg.{key}" in r.data.params, key
    assert r.data.params["cfg.ppo.reward"] == "verifier"
    steps = list(range(1, cfg["ppo.iterations"] + 1))
    run_id = r.info.run_id
    for key in (
        "train/loss",
        "train/policy_loss",
        "train/value_loss",
        "train/kl",
        "train/kl_coef",
        "train/entropy",
        "train/clip_frac",
        "train/approx_kl",
        "train/explained_variance",
        "train/reward_mean",
        "train/reward_std",
        "train/time_rollout_s",
    ):
        assert [s for s, _ in _history(client, run_id, key)] == steps, key
    for rate in ("tampering", "forbidden_side_effect", "timeout", "format_failure", "infra_failure"):
        values = [v for _, v in _history(client, run_id, f"train/verifier_{rate}_rate")]
        assert len(values) == len(steps) and all(0.0 <= v <= 1.0 for v in values), rate
    held = _history(client, run_id, "train/heldout_pass1")
    assert [s for s, _ in held] == list(range(0, steps[-1] + 1, cfg["ppo.eval_every"]))
    rows = read_rollouts(client.download_artifacts(run_id, ARTIFACT_DIR, str(store / "down")))
    assert len(rows) == len(steps) * cfg["ppo.rollout_batch_size"]
    assert sorted({row["step"] for row in rows}) == steps
    assert {row["task_id"] for row in rows} <= {t.task_id for t in training_tasks(cfg)}
    assert all(row["kept"] == (row["reward"] is not None) for row in rows)
    rewards = {s: v for s, v in _history(client, run_id, "train/reward_mean")}
    for step in steps:
        paid = [row["reward"] for row in rows if row["step"] == step and row["reward"] is not None]
        assert rewards[step] == pytest.approx(sum(paid) / len(paid))
    for seed in cfg["eval.seeds"]:
        assert f"eval/procedural/seed_{seed}/pass_at_1" in r.data.metrics
    assert "base_eval/procedural/pass_at_1" in r.data.metrics
    assert "compare/procedural/delta_pass_at_1" in r.data.metrics
    mv = client.get_model_version(
        r.data.tags["rlvf.registered_model"], r.data.tags["rlvf.registered_version"]
    )
    assert mv.run_id == run_id and res.registered is not None


def test_bad_settings_are_refused_before_a_run_opens(store):
    from mlflow import MlflowClient

    from rlvf.errors import UserError
    from rlvf.pipeline.lifecycle import STAGES

    client = MlflowClient()

    def n_runs():
        return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))

    before = n_runs()
    with pytest.raises(UserError, match="minibatch_size"):
        STAGES["ppo"](load_config("ppo", "small", ["ppo.minibatch_size=64"]))
    with pytest.raises(UserError, match=r"ppo\.reward"):
        STAGES["ppo"](load_config("ppo", "small", ["ppo.reward=best-guess"]))
    assert n_runs() == before


def _rows(**series):
    n = max(len(v) for v in series.values())
    return [
        {"step": i + 1, **{f"train/{k}": v[i] for k, v in series.items() if i < len(v)}} for i in range(n)
    ]


def test_health_flags():
    from rlvf.methods import get

    health = get("ppo").training.health
    assert health(_rows(kl=[0.0, 0.01, 0.02, 0.02], value_loss=[0.05, 0.04, 0.03, 0.03])) == []
    assert health(_rows(kl=[0.0, 0.1, 0.8, 1.5])) == ["kl_runaway"]
    assert health(_rows(value_loss=[0.05, 0.05, 0.5, 0.9])) == ["value_loss_diverged"]
    assert health(_rows(value_loss=[0.05, float("nan")])) == ["value_loss_diverged"]
    hacking = _rows(reward_mean=[0.2, 0.3, 0.6, 0.8], heldout_pass1=[0.5, 0.4, 0.3])
    assert health(hacking) == ["reward_up_heldout_down"]
    assert health(_rows(reward_mean=[0.2, 0.3, 0.6, 0.8], heldout_pass1=[0.5, 0.55, 0.6])) == []
