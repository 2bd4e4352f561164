"""GRPO through TRL's real GRPOTrainer on embedded:small, with the real sandboxed reward."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch
from stores import seed_store

from rlvf.errors import UserError
from rlvf.records import Task
from rlvf.train.grpo import GRPOSettings, merge_rows


def _task(name: str, doc: str, arg: str, want: str) -> Task:
    # The first case passes whenever the code runs, so a tiny model's completions differ in
    # reward often enough for every group-relative step to have a signal.
    return Task(
        task_id=f"t/{name}",
        prompt=f'def {name}(text):\n    """{doc}"""\n',
        entry_point=name,
        test=textwrap.dedent(
            f"""
            def check(candidate):
                assert [candidate({arg})]
                assert isinstance(candidate({arg}), str)
                assert candidate({arg}) == {want}
            """
        ),
        canonical_solution="",
    )


TASKS = [
    _task("reverse_string", "Return text reversed.", "'abc'", "'cba'"),
    _task("upper_case", "Return text in upper case.", "'abc'", "'ABC'"),
    _task("strip_spaces", "Return text without leading and trailing spaces.", "' ab '", "'ab'"),
    _task("first_word", "Return the first word of text.", "'ab cd'", "'ab'"),
]


def test_settings_are_checked() -> None:
    with pytest.raises(UserError, match="loss_type"):
        GRPOSettings(loss_type="ppo")
    with pytest.raises(UserError, match="multiple of num_generations"):
        GRPOSettings(num_generations=3, batch_size=8)
    with pytest.raises(UserError, match="rollouts"):
        GRPOSettings(rollouts="sglang")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_vllm_rollouts_need_a_gpu() -> None:
    from rlvf.train.grpo import vllm_args

    assert vllm_args("rlvf") == {}
    with pytest.raises(UserError, match="needs vllm installed and a CUDA GPU"):
        vllm_args("vllm-colocate")


def test_engine_returns_the_sampled_token_ids(tiny_model) -> None:
    from rlvf.generate.engine import HFBackend, SamplingSettings

    model, tok = tiny_model
    reported: list[tuple[int, object]] = []
    prompts = [t.prompt for t in TASKS] * 2
    raws = HFBackend(model, tok, len(prompts)).run(
        prompts,
        [t.entry_point for t in TASKS] * 2,
        SamplingSettings(max_new_tokens=24, seed=3),
        on_row=lambda i, raw: reported.append((i, raw)),
    )
    # every row is handed on once, with the record the run returns; in one batch, the rows
    # that stopped early come while it samples, before those that ran to the token limit
    assert sorted(i for i, _ in reported) == list(range(len(prompts)))
    assert all(raw == raws[i] for i, raw in reported)
    finishes = [raw.finish for _, raw in reported]
    cut = finishes.index("length")
    assert cut > 0 and set(finishes[cut:]) == {"length"}, finishes
    for raw in raws:
        assert raw.token_ids
        ids = list(raw.token_ids)
        if raw.finish == "eos":
            assert ids[-1] == tok.eos_token_id
            ids = ids[:-1]
        assert len(ids) == raw.n_tokens
        assert tok.decode(ids, skip_special_tokens=True) == raw.text


def test_merge_rows_pads_and_keeps_the_asked_order() -> None:
    a = {
        "prompt_ids": torch.tensor([[5, 6], [7, 8]]),
        "prompt_mask": torch.tensor([[1, 1], [1, 1]]),
        "completion_ids": torch.tensor([[1, 2, 3], [4, 0, 0]]),
        "completion_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]),
        "advantages": torch.tensor([0.5, -0.5]),
        "num_items_in_batch": torch.tensor(4),
    }
    b = {
        "prompt_ids": torch.tensor([[9], [9]]),
        "prompt_mask": torch.tensor([[1], [1]]),
        "completion_ids": torch.tensor([[3], [2]]),
        "completion_mask": torch.tensor([[1], [1]]),
        "advantages": torch.tensor([1.0, -1.0]),
        "num_items_in_batch": torch.tensor(2),
    }
    m = merge_rows([a, b], [(1, 1), (0, 0), (1, 0)], pad_id=0)
    assert m["prompt_ids"].tolist() == [[0, 9], [5, 6], [0, 9]]  # prompts pad on the left
    assert m["prompt_mask"].tolist() == [[0, 1], [1, 1], [0, 1]]
    assert m["completion_ids"].tolist() == [[2, 0, 0], [1, 2, 3], [3, 0, 0]]  # completions on the right
    assert m["completion_mask"].tolist() == [[1, 0, 0], [1, 1, 1], [1, 0, 0]]
    assert m["advantages"].tolist() == [-1.0, 0.5, 1.0]
    assert int(m["num_items_in_batch"]) == 5


@pytest.fixture
def mlflow_client(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    old = {
        k: os.environ.pop(k, None) for k in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    }
    mlflow.set_tracking_uri(seed_store(tmp_path / "mlflow.db"))
    yield MlflowClient()
    mlflow.set_tracking_uri("")
    for k, v in old.items():
        if v is not None:
            os.environ[k] = v


@pytest.mark.slow
def test_two_grpo_steps_change_every_trainable_param_and_keep_every_rollout(
    tiny_policy, mlflow_client, tmp_path
) -> None:
    from transformers import TrainerCallback

    from rlvf.models.loader import LoraSpec, PolicySpec
    from rlvf.rl.rollouts import ARTIFACT_DIR, read_rollouts
    from rlvf.train.grpo import train_grpo

    before: dict[str, torch.Tensor] = {}

    class Snapshot(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            before.update({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    exp = mlflow_client.create_experiment("grpo", artifact_location=str(tmp_path / "artifacts"))
    run_id = mlflow_client.create_run(exp).info.run_id
    settings = GRPOSettings(
        num_generations=8,
        batch_size=16,
        max_completion_length=48,
        temperature=0.8,
        learning_rate=1e-3,
        max_steps=2,
        max_resample=3,
        seed=0,
    )
    result = train_grpo(
        PolicySpec(base=str(tiny_policy), device="cpu"),
        TASKS,
        settings,
        tmp_path / "out",
        lora=LoraSpec(r=4, alpha=8, dropout=0.0),
        run_id=run_id,
        client=mlflow_client,
        callbacks=[Snapshot()],
    )
    mlflow_client.set_terminated(run_id)
    assert result.steps == 2
    after = dict(result.model.named_parameters())
    assert before and all(n.count("lora_") for n in before)
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
    assert not unchanged, unchanged
    # Every completion of every step, including the groups dynamic sampling dropped.
    expected = sum(16 + 8 * d.groups_drawn for d in result.dynamic)
    assert len(result.dynamic) == 2 and result.rollouts_written == expected
    local = mlflow_client.download_artifacts(run_id, ARTIFACT_DIR, str(tmp_path / "down"))
    rows = read_rollouts(local)
    assert len(rows) == expected
    assert {r["step"] for r in rows} == {1, 2}
    assert sum(r["kept"] for r in rows) == 2 * 16
    assert {r["task_id"] for r in rows} <= {t.task_id for t in TASKS}
    logged = set().union(*result.history)
    for key in ("train/reward", "train/verifier_infra_failure_rate", "train/verifier_tampering_rate"):
        assert key in logged
    assert "train/dynamic_sampling_zero_variance_after" in logged
    # each completion was judged while its batch was still sampling, none judged twice
    assert result.trainer.rlvf_reward.prefetch_hits == result.rollouts_written


def test_merged_adapter_samples_the_same_policy_and_restores_the_base_exactly(tiny_policy) -> None:
    from rlvf.models.loader import LoraSpec, PolicySpec, apply_lora, load_policy
    from rlvf.train.grpo import merged_adapter

    model, tok = load_policy(PolicySpec(base=str(tiny_policy), device="cpu"), trainable=True)
    model = apply_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # a trained adapter: B is no longer zero
    model.eval()
    ids = tok(TASKS[0].prompt, return_tensors="pt")["input_ids"]
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    from peft.tuners.lora import LoraLayer

    n_lora = sum(isinstance(m, LoraLayer) for m in model.modules())
    weights = [
        (m.get_base_layer().weight, m.get_base_layer().weight.detach().clone())
        for m in model.modules()
        if isinstance(m, LoraLayer)
    ]
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with merged_adapter(model) as sampler:
            merged = model(input_ids=ids).logits
            direct = sampler(input_ids=ids).logits
            # merged, the adapter's layers are out of the way: the sampler is a plain model
            assert not any(isinstance(m, LoraLayer) for m in sampler.modules())
            assert any(not torch.equal(w, before) for w, before in weights)  # the adapter is merged in
        after = model(input_ids=ids).logits
    assert torch.allclose(plain, merged, atol=1e-4)
    assert torch.equal(merged, direct)
    assert torch.equal(plain, after)
    assert sum(isinstance(m, LoraLayer) for m in model.modules()) == n_lora
    assert all(torch.equal(base[n], p) for n, p in model.named_parameters() if n in base)
