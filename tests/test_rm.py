"""The reward model end to end on embedded:small and a real sqlite store: `rm` trains TRL's
RewardTrainer on pairs the real sandbox verified, logs its held-out accuracy, registers a
version that `load_reward_model` loads back; `eval` with `eval.select: rm:<...>` reports
best-of-N against random and oracle picks; a bad reference is one line and leaves no run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stores import seed_store, sqlite_store

from rlvf.config import load_config
from rlvf.evaluate.bestofn import Candidate, group_values, select
from rlvf.records import Pair, Sample, read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------- pure parts


def test_best_of_n_selection_by_hand():
    """seed 0: t1 the RM picks the passing one; t2 nothing passes; t3 a tie goes to the
    lowest index (which passed). seed 1: the RM picks the failing one of a pass/fail pair."""
    c = Candidate
    groups = {
        (0, "t1"): [c(0, False, 0.1), c(1, True, 0.9)],
        (0, "t2"): [c(0, False, 0.5), c(1, False, 0.2)],
        (0, "t3"): [c(0, True, 0.3), c(1, False, 0.3)],
        (1, "t1"): [c(0, True, -1.0), c(1, False, 2.0)],
        (1, "t2"): [c(0, True, 0.0), c(1, True, 1.0)],
        (1, "t3"): [c(0, False, 0.0), c(1, False, 0.0)],
    }
    assert group_values(groups[(0, "t3")]) == {"rm": 1.0, "random": 0.5, "oracle": 1.0}
    res = select("procedural", 2, groups, ["t1", "t2", "t3"])
    assert res.per_seed[0] == pytest.approx({"rm": 2 / 3, "random": 1 / 3, "oracle": 2 / 3})
    assert res.per_seed[1] == pytest.approx({"rm": 1 / 3, "random": 1 / 2, "oracle": 2 / 3})
    m = res.metrics("eval/bon/procedural")
    assert m["eval/bon/procedural/rm_pass1"] == pytest.approx(0.5)
    assert m["eval/bon/procedural/random_pass1"] == pytest.approx(5 / 12)
    assert m["eval/bon/procedural/oracle_pass1"] == pytest.approx(2 / 3)
    assert m["eval/bon/procedural/rm_gain"] == pytest.approx(0.5 - 5 / 12)
    assert [r["picked"] for r in res.selections] == [1, 0, 0, 1, 1, 0]
    with pytest.raises(ValueError, match="no samples"):
        select("procedural", 2, groups, ["t1", "t4"])


def test_split_by_prompt_holds_whole_prompts_out():
    from rlvf.errors import UserError
    from rlvf.methods.rm import split_by_prompt

    pairs = [Pair(f"p{i // 3}", "c", f"r{i}", f"t{i // 3}", 0, i) for i in range(30)]  # 10 prompts x 3
    train, held = split_by_prompt(pairs, 0.2, seed=1)
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in held})
    assert len({p.prompt for p in held}) == 2 and len(train) + len(held) == 30
    assert split_by_prompt(pairs, 0.2, seed=1) == (train, held)  # seeded
    # a prompt's place depends on itself only: one more prompt can only displace, not reshuffle
    more = [*pairs, Pair("p-extra", "c", "r", "tx", 0, 1)]
    _, held_more = split_by_prompt(more, 0.2, seed=1)
    assert {p.prompt for p in held_more} <= {p.prompt for p in held} | {"p-extra"}
    with pytest.raises(UserError, match="at least 2"):
        split_by_prompt(pairs[:3], 0.2, seed=1)


# ------------------------------------------------------------------------- a real store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("rm"), eval_cache=True) as root:
        yield root


@pytest.fixture(scope="module")
def client(store):
    from mlflow import MlflowClient

    return MlflowClient()


@pytest.fixture(scope="module")
def verified_pairs(store):
    """Pairs from the real pairs builder over samples the real sandbox judged: each task's
    reference solution and its plausible wrong ones, as one policy's samples."""
    from rlvf.datasets.pairs import build_pairs
    from rlvf.tasks import load_suite
    from rlvf.verify import verify_samples

    tasks = [t for t in load_suite("procedural:train") if t.wrong_solutions][:24]
    samples = []
    for t in tasks:
        texts = [t.canonical_solution, *(w.completion for w in t.wrong_solutions[:2])]
        samples.extend(Sample(t.task_id, i, text, policy="hand") for i, text in enumerate(texts))
    outcomes = verify_samples(tasks, samples, timeout=3.0, progress=False)
    pairs, stats = build_pairs(tasks, samples, outcomes, pairs_per_prompt=2, seed=0)
    assert stats.prompts_paired >= 10, stats
    path = store / "verified_pairs.jsonl"
    write_jsonl(path, pairs)
    return path, pairs


@pytest.fixture(scope="module")
def rm_run(store, verified_pairs):
    from rlvf.pipeline.lifecycle import stage_for

    path, _ = verified_pairs
    cfg = load_config(
        "rm",
        "small",
        [f"data.pairs={path}", "train.max_steps=12", "rm.learning_rate=1e-3", "rm.heldout_fraction=0.25"],
    )
    return cfg, stage_for("rm")(cfg)


@pytest.mark.slow
def test_rm_run_logs_heldout_accuracy_and_registers(client, rm_run, verified_pairs):
    from rlvf.tracking import schema

    cfg, res = rm_run
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED"
    t, m, p = r.data.tags, r.data.metrics, r.data.params
    assert t[schema.TAG_METHOD] == "rm" and t[schema.TAG_CONFIG_HASH] == cfg.hash
    assert p["cfg.rm.heldout_fraction"] == "0.25" and p["cfg.data.pairs"] == str(verified_pairs[0])
    assert not any(k.startswith("cfg.eval.") for k in p)  # an RM has no pass@1 eval
    # held-out accuracy, over pairs of prompts the RM never trained on
    held = [
        Pair.from_dict(o)
        for _, o in read_jsonl(client.download_artifacts(res.run_id, "rm/heldout_pairs.jsonl"))
    ]
    assert m["rm/heldout_pairs"] == len(held) > 0
    assert 0.0 <= m["rm/heldout_accuracy"] <= 1.0
    train_prompts = {pr.prompt for pr in verified_pairs[1]} - {h.prompt for h in held}
    assert m["rm/train_prompts"] == len(train_prompts) and m["rm/heldout_prompts"] == len(
        {h.prompt for h in held}
    )
    assert m["rm/train_pairs"] + m["rm/heldout_pairs"] == len(verified_pairs[1])
    assert m["train/steps"] == 12 and "train/accuracy" in m
    assert not any(k.startswith(("eval/", "base_eval/", "compare/")) for k in m)
    # a registered version of the RM's own registered model, tagged with its accuracy
    name, version = res.registered
    assert name == "rlvf-rm-embedded-small"
    v = client.get_model_version(name, version)
    assert v.run_id == res.run_id and v.tags["rlvf.method"] == "rm"
    assert float(v.tags["rlvf.heldout_accuracy"]) == pytest.approx(m["rm/heldout_accuracy"], abs=1e-4)
    assert str(client.get_model_version_by_alias(name, "candidate").version) == version
    assert t["rlvf.registered_model"] == name


@pytest.mark.slow
def test_load_reward_model_round_trips_the_registered_rm(client, rm_run, verified_pairs):
    from rlvf.rewards.reward_model import load_reward_model, pairwise_accuracy

    _, res = rm_run
    name, version = res.registered
    rm = load_reward_model(f"models:/{name}/{version}", device="cpu")
    # the RM learnt its training pairs: mostly, the passing side scores above the failing one
    train = [pr for pr in verified_pairs[1] if pr.prompt not in _heldout_prompts(client, res.run_id)]
    logged = client.get_run(res.run_id).data.metrics
    assert pairwise_accuracy(rm, train)["accuracy"] > 0.5
    passing, failing = rm.score([train[0].prompt] * 2, [train[0].chosen, train[0].rejected])
    assert math.isfinite(passing) and math.isfinite(failing)
    # the same numbers the run logged, through every kind of reference
    held = _heldout(client, res.run_id)
    assert pairwise_accuracy(rm, held)["accuracy"] == pytest.approx(logged["rm/heldout_accuracy"])
    by_alias = load_reward_model(f"rm:models:/{name}@candidate", device="cpu")
    by_run = load_reward_model(res.run_id, device="cpu")
    for other in (by_alias, by_run):
        assert other.score([train[0].prompt], [train[0].chosen]) == pytest.approx([passing], abs=1e-5)
    # the registered MLflow model is a pyfunc that scores prompt/completion rows the same way
    import mlflow

    served = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    assert served.predict([{"prompt": train[0].prompt, "completion": train[0].chosen}]) == pytest.approx(
        [passing], abs=1e-5
    )
    # a raw rollout that rambles on after its function is scored on the function alone
    ramble = train[0].chosen + "\nprint('trailing junk')\n"
    assert rm.score([train[0].prompt], [ramble]) == pytest.approx([passing], abs=1e-5)


def _heldout(client, run_id):
    return [
        Pair.from_dict(o) for _, o in read_jsonl(client.download_artifacts(run_id, "rm/heldout_pairs.jsonl"))
    ]


def _heldout_prompts(client, run_id):
    return {p.prompt for p in _heldout(client, run_id)}


@pytest.mark.slow
def test_best_of_n_eval_reports_rm_random_oracle(client, rm_run):
    from rlvf.pipeline.lifecycle import stage_for

    _, rm_res = rm_run
    cfg = load_config(
        "eval",
        "small",
        [f"eval.select=rm:{rm_res.run_id}", "eval.select_n=4", "eval.limit=6", "eval.seeds=[0]"],
    )
    res = stage_for("eval")(cfg)
    r = client.get_run(res.run_id)
    assert r.info.status == "FINISHED" and r.data.params["cfg.eval.select"] == f"rm:{rm_res.run_id}"
    m = r.data.metrics
    rm_p, rnd, orc = (m[f"eval/bon/{k}_pass1"] for k in ("rm", "random", "oracle"))
    assert m["eval/bon/n"] == 4 and m["eval/bon/procedural/n_tasks"] == 6
    assert 0.0 <= rm_p <= orc <= 1.0 and 0.0 <= rnd <= orc
    assert m["eval/bon/rm_gain"] == pytest.approx(rm_p - rnd)
    # the logged numbers follow from the logged selections
    rows = [
        o for _, o in read_jsonl(client.download_artifacts(res.run_id, "bon/procedural/selections.jsonl"))
    ]
    assert len(rows) == 6 and all(len(o["scores"]) == 4 for o in rows)
    for o in rows:
        best = max(range(4), key=lambda i: (o["scores"][i], -i))
        assert o["picked"] == best and o["rm"] == float(o["passed"][best])
    assert rm_p == pytest.approx(sum(o["rm"] for o in rows) / 6)
    assert orc == pytest.approx(sum(any(o["passed"]) for o in rows) / 6)
    assert rnd == pytest.approx(sum(sum(o["passed"]) / 4 for o in rows) / 6)
    assert any("best-of-4" in line for line in res.summary)


@pytest.mark.slow
def test_bad_reference_is_one_line_and_leaves_no_run(client, store, capsys):
    """The real command line: exit 2, one line on stderr, no run opened (so none left RUNNING)."""
    from rlvf.pipeline.cli import script_main

    env = {**os.environ, "MLFLOW_TRACKING_URI": seed_store(store / "mlflow.db"), "PYTHONPATH": str(ROOT)}
    before = {r.info.run_id for r in client.search_runs(_experiments(client))}
    proc = subprocess.run(
        [sys.executable, "-m", "rlvf.pipeline", "eval", "--recipe", "small", "--select", "rm:nonexistent"],
        capture_output=True,
        text=True,
        env=env,
        cwd=store,
        timeout=300,
    )
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: eval.select: 'nonexistent' is neither an rm run id"), lines
    # the same entry point in-process, for the other mistakes
    for ref, expected in (("rm:" + "0" * 32, "eval.select: no MLflow run"), ("best", "is not a selector")):
        assert script_main("eval", ["--recipe", "small", "--select", ref]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    runs = client.search_runs(_experiments(client))
    assert {r.info.run_id for r in runs} == before
    assert not [r for r in runs if r.info.status == "RUNNING"]


def _experiments(client):
    return [e.experiment_id for e in client.search_experiments()]


@pytest.mark.slow
def test_other_references_are_refused_by_name(client, store, rm_run):
    """A run that is not an rm run, or a registered model that does not exist: one line each;
    and an RM is no policy to start training from."""
    from rlvf.errors import UserError
    from rlvf.pipeline.inputs import resolve_init
    from rlvf.rewards.reward_model import load_reward_model
    from rlvf.tracking.runs import start_run

    with pytest.raises(UserError, match="is not an rlvf policy model"):
        resolve_init(rm_run[1].run_id)

    with start_run(load_config("eval", "small"), "eval", method="base") as run:
        pass
    with pytest.raises(UserError, match=r"ppo.reward: run .* is a base run, not a reward model"):
        load_reward_model(run.run_id, what="ppo.reward")
    with pytest.raises(UserError, match="could not download models:/no-such-model/1"):
        load_reward_model("models:/no-such-model/1")


@pytest.mark.slow
def test_a_lora_reward_model_keeps_its_score_head(tmp_path, tiny_policy):
    """With LoRA the new score head is trained in full and saved with the adapter: the
    reloaded RM scores exactly as the trained one did at the end of training."""
    from transformers import TrainerCallback

    from rlvf.methods import get
    from rlvf.rewards.reward_model import RewardModel, load_reward_dir, write_reward_info
    from rlvf.train.common import train_policy

    method = get("rm")
    rows = method.training.examples(4)
    prompts, completions = [r.prompt for r in rows] * 2, [r.chosen for r in rows] + [r.rejected for r in rows]
    seen: dict[str, list[float]] = {}

    class Score(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, processing_class=None, **kw):
            seen["end"] = RewardModel(model, processing_class, max_length=256).score(prompts, completions)

    cfg = load_config(
        "rm",
        "small",
        [
            "model.finetune=lora",
            "train.max_steps=2",
            "train.batch_size=2",
            "model.device=cpu",
            "rm.learning_rate=1e-2",
        ],
    )
    res = train_policy(method, cfg, rows, tmp_path / "out", extra_callbacks=[Score()])
    assert (res.policy_dir / "adapter_config.json").exists()
    write_reward_info(res.policy_dir, max_length=256)
    rm = load_reward_dir(res.policy_dir, device="cpu")
    assert not hasattr(rm.model, "peft_config")  # merged for scoring
    assert rm.score(prompts, completions) == pytest.approx(seen["end"], abs=1e-4)
