"""Online DPO: the pairing step never turns a tie (or an unjudged completion) into a pair, on
real verifier outcomes; and a run on embedded:small with the small recipe, read back from a
real sqlite MLflow store: config, per-step pairing / reward / DPO metrics, the rollouts and
pairs it trained on (no pair with equal rewards, every tie counted), eval, a registered version."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from stores import sqlite_store

from rlvf.config import load_config
from rlvf.tracking import schema
from rlvf.train.online_dpo import PAIRS_ARTIFACT, best_vs_worst
from rlvf.verify.categories import INFRA_ERROR


def _task():
    from rlvf.tasks import load_suite

    return next(t for t in load_suite("procedural:train") if len(t.wrong_solutions) >= 2)


def _unjudged(s):
    """The verdict the sandbox gives when it could not judge a completion (reward None)."""
    return dataclasses.replace(s, reward=None, outcome=dataclasses.replace(s.outcome, category=INFRA_ERROR))


@pytest.fixture(scope="module")
def judged():
    """A task's reference solution and two wrong ones, judged by the real verifier, in both modes."""
    from rlvf.rewards import score_completions

    task = _task()
    texts = [task.canonical_solution, task.wrong_solutions[0].completion, task.wrong_solutions[1].completion]
    out = {}
    for mode in ("fraction", "binary"):
        good, bad, bad2 = score_completions({task.task_id: task}, [task.task_id] * 3, texts, mode=mode)
        out[mode] = (good, bad, bad2)
    return task, out


def test_best_vs_worst_pairs_only_differing_rewards(judged):
    task, by_mode = judged
    good, bad, bad2 = by_mode["binary"]
    assert good.reward == 1.0 and bad.reward == bad2.reward == 0.0  # the verifier's own verdicts
    assert bad.completion != bad2.completion
    groups = [
        [good, bad, good],  # a pair: the first of the best against the worst
        [bad, bad2],  # two different wrong answers, equal rewards: a tie
        [good, good],  # both pass: a tie
        [good, _unjudged(bad)],  # one verdict only: unjudged, not a pair against "0"
        [_unjudged(good), bad, _unjudged(bad2)],  # one verdict only again
        [bad, _unjudged(good), good],  # the unjudged one takes no part; the others pair
    ]
    # groups of different sizes go one at a time (best_vs_worst takes one group size per draw)
    made, totals = [], Counter()
    for members in groups:
        pairs, stats = best_vs_worst([task.prompt], members, len(members), step=7)
        made.append(pairs)
        totals.update(dataclasses.asdict(stats))
    assert [len(p) for p in made] == [1, 0, 0, 0, 0, 1]
    first, last = made[0][0], made[5][0]
    assert (first.chosen_index, first.rejected_index) == (0, 1) and first.step == 7
    assert (last.chosen_index, last.rejected_index) == (2, 0)
    for p in (first, last):
        assert p.chosen == good.completion and p.rejected == bad.completion
        assert p.chosen_reward == 1.0 and p.rejected_reward == 0.0
        assert p.chosen_category == "pass" and p.rejected_category == bad.outcome.category
    assert totals["ties"] == 2 and totals["unjudged"] == 2 and totals["infra"] == 4 and totals["pairs"] == 2


def test_every_reward_pattern(judged):
    """All groups of three with rewards from {None, 0, partial, 1} (on real outcomes): a pair
    exactly when at least two have a verdict and their rewards differ, always best vs worst."""
    task, by_mode = judged
    good, bad, bad2 = by_mode["fraction"]
    text = {None: _unjudged(good), 0.0: bad, 0.5: bad2, 1.0: good}  # one text per reward
    n_pairs = n_ties = 0
    for rewards in itertools.product(text, repeat=3):
        group = [dataclasses.replace(text[r], reward=r) for r in rewards]
        pairs, stats = best_vs_worst([task.prompt], group, 3)
        judged_rewards = [r for r in rewards if r is not None]
        differ = len(judged_rewards) >= 2 and max(judged_rewards) > min(judged_rewards)
        assert len(pairs) == int(differ), rewards
        assert stats.ties == int(len(judged_rewards) >= 2 and not differ), rewards
        assert stats.infra == rewards.count(None)
        if differ:
            (p,) = pairs
            assert p.chosen_reward == max(judged_rewards) > p.rejected_reward == min(judged_rewards)
            assert (
                rewards[p.chosen_index] == p.chosen_reward and rewards[p.rejected_index] == p.rejected_reward
            )
        n_pairs += len(pairs)
        n_ties += stats.ties
    assert n_pairs and n_ties


def test_groups_must_fill_the_draw(judged):
    task, by_mode = judged
    with pytest.raises(ValueError):
        best_vs_worst([task.prompt, task.prompt], list(by_mode["binary"]), 2)


def test_completion_logps_batched_equal_one_at_a_time(tiny_model):
    """Right padding and the completion mask: a batch of uneven pairs scores each completion
    as it scores alone, and only the completion's tokens count."""
    import torch

    from rlvf.train.online_dpo import completion_logps

    model, tok = tiny_model
    prompts = [
        tok("def add(a, b):\n", add_special_tokens=False)["input_ids"],
        tok("x = ", add_special_tokens=False)["input_ids"],
    ]
    comps = [
        tok("    return a + b\n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
        [tok.eos_token_id],
    ]
    with torch.no_grad():
        both, counts = completion_logps(model, prompts, comps, tok.pad_token_id)
        alone = [
            completion_logps(model, [p], [c], tok.pad_token_id)[0][0]
            for p, c in zip(prompts, comps, strict=True)
        ]
        full = torch.log_softmax(model(torch.tensor([prompts[1] + comps[1]])).logits[0, -2].float(), -1)
    assert counts.tolist() == [len(c) for c in comps]
    assert torch.allclose(both, torch.stack(alone), atol=1e-4)
    assert both[1].item() == pytest.approx(full[tok.eos_token_id].item(), abs=1e-4)


# ------------------------------------------------------------------------- a run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("online_dpo")) as root:
        yield root


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _total(client, run_id, key):
    return sum(v for _, v in _history(client, run_id, key))


@pytest.mark.slow
def test_online_dpo_run_reads_back_from_the_store(store):
    from mlflow import MlflowClient

    from rlvf.pipeline.lifecycle import STAGES
    from rlvf.rl.rollouts import ARTIFACT_DIR, read_rollouts

    client = MlflowClient()
    cfg = load_config("online_dpo", "small", ["eval.n_samples=1", "eval.limit=8", "tracking.label=odpo"])
    res = STAGES["online_dpo"](cfg)
    r = client.get_run(res.run_id)
    run_id, m = r.info.run_id, r.data.metrics
    assert r.info.status == "FINISHED" and r.data.tags[schema.TAG_METHOD] == "online_dpo"
    # config: every online_dpo key as a param
    for key in cfg.flat():
        if key.startswith("online_dpo."):
            assert f"cfg.{key}" in r.data.params, key
    assert r.data.params["cfg.online_dpo.num_generations"] == str(cfg["online_dpo.num_generations"])
    # per-step metrics
    steps = cfg["online_dpo.max_steps"]
    assert m["train/steps"] == steps
    for key in (
        "train/pairs",
        "train/ties_skipped",
        "train/infra_failures",
        "train/reward_mean",
        "train/loss",
    ):
        assert [s for s, _ in _history(client, run_id, key)] == list(range(1, steps + 1)), key
    pairs_total, ties_total = m["train/pairs_total"], m["train/ties_total"]
    assert pairs_total == _total(client, run_id, "train/pairs") >= 1
    assert ties_total == _total(client, run_id, "train/ties_skipped") >= 1
    for key in ("train/dpo_loss", "train/rewards_margins", "train/reward_chosen", "train/reward_rejected"):
        assert _history(client, run_id, key), key
    # the rollouts: every completion, in groups of num_generations, as drawn
    g = cfg["online_dpo.num_generations"]
    rows = read_rollouts(client.download_artifacts(run_id, ARTIFACT_DIR, str(store / "down")))
    assert len(rows) == _total(client, run_id, "train/completions") and len(rows) % g == 0
    groups = [rows[i : i + g] for i in range(0, len(rows), g)]
    ties = paired = 0
    for group in groups:
        assert len({x["task_id"] for x in group}) == 1
        rewards = [x["reward"] for x in group if x["reward"] is not None]
        kept = [x for x in group if x["kept"]]
        if len(rewards) >= 2 and max(rewards) == min(rewards):
            ties += 1
            assert not kept  # a tie never reaches the loss
        if kept:
            paired += 1
            assert len(kept) == 2 and kept[0]["reward"] != kept[1]["reward"]
    assert ties == ties_total and paired == pairs_total
    # the pairs it trained on: chosen strictly better than rejected
    pairs = [
        json.loads(line)
        for line in Path(client.download_artifacts(run_id, PAIRS_ARTIFACT, str(store / "pairs")))
        .read_text()
        .splitlines()
    ]
    assert len(pairs) == pairs_total
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    # the lifecycle: eval over the recipe's seeds, the base, the comparison, one version
    for seed in cfg["eval.seeds"]:
        assert f"eval/procedural/seed_{seed}/pass_at_1" in m
    assert "base_eval/procedural/pass_at_1" in m and "compare/procedural/delta_pass_at_1" in m
    (version,) = client.search_model_versions()
    assert version.run_id == run_id and res.registered == (version.name, str(version.version))
    assert version.tags[schema.TAG_METHOD] == "online_dpo"


@pytest.mark.parametrize(
    "bad",
    [["online_dpo.loss_type=[ipo]"], ["online_dpo.loss_type=[sft]"], ["online_dpo.loss_weights=[1.0]"]],
)
def test_a_bad_loss_setting_is_refused_before_a_run_opens(store, bad):
    from mlflow import MlflowClient

    from rlvf.errors import UserError
    from rlvf.pipeline.lifecycle import STAGES

    client = MlflowClient()
    before = {
        r.info.run_id for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    }
    with pytest.raises(UserError, match="online_dpo: "):
        STAGES["online_dpo"](load_config("online_dpo", "small", bad))
    after = {
        r.info.run_id for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    }
    assert after == before
