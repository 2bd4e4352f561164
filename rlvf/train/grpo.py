"""GRPO with TRL's GRPOTrainer, rewarded by the sandboxed verifier.

What rlvf adds to TRL's trainer (a subclass that overrides one method,
`_generate_and_score_completions`, plus a rollout function):

- the reward is `rlvf.rewards.VerifierReward`: completions are cleaned as evaluation cleans
  them and judged in the sandbox; a completion the sandbox could not judge is `None`
  (excluded by TRL), never 0, and the run stops when too many are;
- dynamic sampling (`rlvf.rl.dynamic`): groups whose rewards are all equal have zero
  advantage; they are replaced by groups for further prompts (at most `max_resample` extra
  draws) before the loss sees the batch, and the zero-variance share before and after is
  logged. Advantages are group-relative, so merging groups from several draws keeps them
  exact under `scale_rewards="group"` / `"none"` (under `"batch"` each draw is scaled by
  its own batch std);
- every completion of every step goes to the run (`rlvf.rl.rollouts`), kept or dropped;
- rollouts through rlvf's sampling engine (`rollouts="rlvf"`): rows stop at the end of
  their function (the same rule as `rlvf sample`) and leave the batch as they stop, where
  TRL's `generate` runs every row to EOS or `max_completion_length`; a LoRA adapter is
  merged for sampling (`merged_adapter`), so decode steps skip the adapter's matmuls;
- on a CPU, log-probs and entropies of the completion tokens only (`rlvf.rl.logprobs`): TRL's
  fused LM head projects every position there, prompt and padding included.

This module has a function-level API on purpose: the method file that wires GRPO into the
entry points, the config schema and the pipeline is separate (the method registry).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlvf.errors import UserError
from rlvf.records import Task
from rlvf.rewards import REWARD_MODES, VerifierReward
from rlvf.rl.advantages import LOSS_TYPES, SCALE_MODES, scale_for_loss
from rlvf.rl.dynamic import DynamicStats, dynamic_sample
from rlvf.rl.logprobs import completion_logprobs
from rlvf.rl.rollouts import RolloutRecorder, rollouts_from_scored

ROLLOUT_BACKENDS = ("rlvf", "trl", "vllm-colocate", "vllm-server")


def vllm_args(rollouts: str) -> dict[str, Any]:
    """TRL's vLLM settings for `rollouts` (none unless it names a vLLM mode).

    `vllm-colocate` runs vLLM inside the training process, sharing the GPU; `vllm-server`
    talks to a `trl vllm-serve` started beside it, at TRL's default address unless
    RLVF_VLLM_SERVER_URL says otherwise (where the server runs does not change the results,
    so it is not a config key). vLLM needs a CUDA GPU: on a CPU this is a one-line error.
    """
    import os

    if not rollouts.startswith("vllm"):
        return {}
    from rlvf.generate.engine import vllm_available

    if not vllm_available():
        raise UserError(f"grpo: rollouts '{rollouts}' needs vllm installed and a CUDA GPU")
    args: dict[str, Any] = {"use_vllm": True, "vllm_mode": rollouts.removeprefix("vllm-")}
    url = os.environ.get("RLVF_VLLM_SERVER_URL")
    if rollouts == "vllm-server" and url:
        args["vllm_server_base_url"] = url
    return args


@dataclass(frozen=True)
class GRPOSettings:
    """GRPO's knobs (a plain dataclass until the method registry gives GRPO its recipe section).

    `batch_size` counts completions per optimizer micro-batch; one generation produces
    `generation_batch_size` completions (default: `batch_size * grad_accum`), i.e.
    `generation_batch_size / num_generations` prompts.
    """

    num_generations: int = 4
    batch_size: int = 8
    grad_accum: int = 1
    generation_batch_size: int | None = None
    max_completion_length: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    loss_type: str = "dapo"
    scale_rewards: str | None = None  # None: what loss_type implies (dr_grpo: none, else group)
    num_iterations: int = 1
    reward_mode: str = "fraction"
    learning_rate: float = 1e-5
    max_steps: int = 10
    logging_steps: int = 1
    seed: int = 0
    rollouts: str = "rlvf"
    dynamic_sampling: bool = True
    max_resample: int = 2
    max_infra_rate: float = 0.1
    verify_timeout: float = 3.0
    verify_workers: int | None = None
    rollout_log_every: int = 1
    progress: bool = False
    gradient_checkpointing: bool = False  # TRL's GRPOConfig turns it on; a small model on a CPU pays for it

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise UserError(f"grpo: num_generations must be at least 2 (got {self.num_generations})")
        if self.loss_type not in LOSS_TYPES:
            raise UserError(f"grpo: loss_type '{self.loss_type}' is not one of {', '.join(LOSS_TYPES)}")
        if self.scale_rewards is not None and self.scale_rewards not in SCALE_MODES:
            raise UserError(
                f"grpo: scale_rewards '{self.scale_rewards}' is not one of {', '.join(SCALE_MODES)}"
            )
        if self.reward_mode not in REWARD_MODES:
            raise UserError(f"grpo: reward mode '{self.reward_mode}' is not one of {', '.join(REWARD_MODES)}")
        if self.rollouts not in ROLLOUT_BACKENDS:
            raise UserError(f"grpo: rollouts '{self.rollouts}' is not one of {', '.join(ROLLOUT_BACKENDS)}")
        vllm_args(self.rollouts)  # vLLM without a GPU: the error comes before any run opens
        gen = self.generation_batch_size or self.batch_size * self.grad_accum
        if gen % self.num_generations:
            raise UserError(
                f"grpo: the generation batch ({gen} completions) must be a multiple of num_generations "
                f"({self.num_generations})"
            )
        if self.max_steps < 1:
            raise UserError(f"grpo: max_steps must be at least 1 (got {self.max_steps})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GRPOResult:
    """The trained model (in memory, not saved) and what training recorded."""

    model: Any
    tokenizer: Any
    trainer: Any
    steps: int
    rollouts_written: int
    history: list[dict[str, float]] = field(default_factory=list)
    dynamic: list[DynamicStats] = field(default_factory=list)


def grpo_dataset(tasks: Sequence[Task]):
    """One row per task: the prompt the policy continues and the task id the reward needs."""
    from datasets import Dataset

    if not tasks:
        raise UserError("grpo: no training tasks")
    return Dataset.from_dict({"prompt": [t.prompt for t in tasks], "task_id": [t.task_id for t in tasks]})


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


@contextlib.contextmanager
def merged_adapter(model: Any) -> Iterator[Any]:
    """Sample with the LoRA adapter merged into the base weights, then restore them exactly.

    Yields the module to sample with. A LoRA layer adds two small matmuls and Python overhead
    to every linear of every decode step; merged, a step is the base model's. While merged,
    each LoRA layer is also swapped out of the model for its base linear (a merged LoRA layer
    only calls its base layer, through a wrapper that costs as much as the matmul on a small
    model), and the yielded module is the model inside the PEFT wrapper: the same function,
    without two layers of dispatch per call. Everything is put back afterwards, and the base
    weights are copied back, so unmerging leaves no rounding drift in the frozen base (which
    is also GRPO's reference). Full fine-tuning: `model` itself, untouched.
    """
    import torch

    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover
        yield model
        return
    slots = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, LoraLayer)
    ]
    if not slots or not hasattr(model, "merge_adapter"):
        yield model
        return
    saved = [child.get_base_layer().weight.detach().clone() for _, _, child in slots]
    model.merge_adapter()
    # Only a layer that merged everything it would add is its base layer (no adapter-name routing,
    # no disabled adapters).
    swap = all(child.merged and not child.disable_adapters for _, _, child in slots)
    try:
        if swap:
            for parent, name, child in slots:
                setattr(parent, name, child.get_base_layer())
        yield model.get_base_model() if swap and hasattr(model, "get_base_model") else model
    finally:
        if swap:
            for parent, name, child in slots:
                setattr(parent, name, child)
        model.unmerge_adapter()
        with torch.no_grad():
            for (_, _, child), w in zip(slots, saved, strict=True):
                child.get_base_layer().weight.copy_(w)


def rlvf_rollout_func(tok: Any, tasks: Sequence[Task], settings: GRPOSettings, batch_size: int = 64):
    """A TRL `rollout_func` that samples through rlvf's engine (`rlvf.generate.engine.HFBackend`).

    Every row draws from its own random stream, seeded by (run seed, call, the group's index in
    the *global* generation batch, the row's place in its group). Which process samples a group
    therefore does not change its completions: one process and N data-parallel ranks (each
    holding a contiguous share of whole groups) draw the same samples, while all of a rank's
    groups still share one batched pass.
    Returns the prompt and completion token ids TRL scores (logprobs None: TRL computes them).

    Each completion goes to the trainer's verifier reward (`rlvf_reward.prefetch`) the moment
    its row stops, so the sandbox judges it while the batch's longer rows are still sampled;
    TRL's reward call then finds most verdicts ready.
    """
    from rlvf.generate.engine import HFBackend, SamplingSettings
    from rlvf.rewards.verifier import prefetcher

    entry = {t.prompt: (t.entry_point or None) for t in tasks}
    task_of: dict[str, str | None] = {}
    for t in tasks:  # a prompt two tasks share names no single task: judged the usual way
        task_of[t.prompt] = t.task_id if t.prompt not in task_of else None
    calls = itertools.count()

    def rollout(prompts: list[str], trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        call = next(calls)
        g = trainer.num_generations if trainer.model.training else len(prompts)
        if len(prompts) % g:
            raise UserError(
                f"grpo: each process got {len(prompts)} completions to sample, not whole groups of {g}; "
                "make the generation batch a multiple of num_generations x the number of processes"
            )
        first = trainer.accelerator.process_index * (len(prompts) // g)
        seeds = [_seed(settings.seed, call, first + k // g, k % g) for k in range(len(prompts))]
        sampling = SamplingSettings(
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_completion_length,
            seed=_seed(settings.seed, call),
        )
        on_row = prefetcher(getattr(trainer, "rlvf_reward", None), [task_of.get(p) for p in prompts])
        with merged_adapter(model) as sampler:
            raws = HFBackend(sampler, tok, max(batch_size, g)).run(
                list(prompts),
                [entry.get(p) for p in prompts],
                sampling,
                row_seeds=seeds,
                on_row=on_row,
            )
        distinct = list(dict.fromkeys(prompts))  # a group's prompt is tokenized once
        ids = dict(zip(distinct, tok(distinct, add_special_tokens=False)["input_ids"], strict=True))
        return {
            "prompt_ids": [list(ids[p]) for p in prompts],
            "completion_ids": [list(r.token_ids) or [tok.eos_token_id] for r in raws],
            "logprobs": None,
        }

    return rollout


def _pad_cat(tensors: list[Any], value: float, left: bool) -> Any:
    import torch

    width = max(t.shape[1] for t in tensors)
    out = []
    for t in tensors:
        pad = t.new_full((t.shape[0], width - t.shape[1]), value)
        out.append(torch.cat([pad, t] if left else [t, pad], dim=1))
    return torch.cat(out, dim=0)


_LEFT = ("prompt_ids", "prompt_mask")
_RIGHT = ("completion_ids", "completion_mask", "old_per_token_logps", "ref_per_token_logps", "tool_mask")
_RIGHT_OPTIONAL = ("sampling_per_token_logps",)


def merge_rows(outputs: list[dict[str, Any]], picks: list[tuple[int, int]], pad_id: int) -> dict[str, Any]:
    """One generation batch made of rows `(output index, row)` of several scored batches."""
    import torch

    keys = set(outputs[0])
    unknown = keys - {*_LEFT, *_RIGHT, *_RIGHT_OPTIONAL, "advantages", "num_items_in_batch"}
    if unknown:
        raise ValueError(f"grpo: cannot merge batches carrying {sorted(unknown)} (multimodal/vLLM fields)")
    merged: dict[str, Any] = {}
    for key in keys - {"num_items_in_batch"}:
        if any(key not in o or o[key] is None for o in outputs):
            continue
        parts = []
        for b, o in enumerate(outputs):
            rows = [r for ob, r in picks if ob == b]
            if rows:
                parts.append(o[key][torch.tensor(rows, device=o[key].device)])
        if key == "advantages":
            merged[key] = torch.cat(parts)
        else:
            value = pad_id if key == "prompt_ids" or key == "completion_ids" else 0
            merged[key] = _pad_cat(parts, value, left=key in _LEFT)
    # Keep the order `picks` asked for (parts were gathered per output).
    order = [i for b in range(len(outputs)) for i, (ob, _) in enumerate(picks) if ob == b]
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    for key, value in merged.items():
        merged[key] = value[inverse.to(value.device)]
    mask = (
        merged["completion_mask"] * merged["tool_mask"]
        if "tool_mask" in merged
        else merged["completion_mask"]
    )
    merged["num_items_in_batch"] = mask.sum()
    return merged


def _make_trainer_class(base: type | None = None):
    """rlvf's subclass of TRL's GRPOTrainer, or of `base`, a trainer with the same
    `_generate_and_score_completions` contract (RLOOTrainer): rollouts recorded, and dynamic
    sampling when the settings ask for it (GRPO's batch layout only)."""
    if base is None:
        from trl import GRPOTrainer as base

    class RlvfGRPOTrainer(base):
        """GRPOTrainer + dynamic sampling + the rollout recorder (see the module docstring)."""

        def setup_rlvf(
            self, reward: VerifierReward, recorder: RolloutRecorder, settings: GRPOSettings, dataset: Any
        ) -> None:
            self.rlvf_reward = reward
            self.rlvf_recorder = recorder
            self.rlvf_settings = settings
            self.rlvf_dynamic: list[DynamicStats] = []
            order = list(range(len(dataset)))
            rng = random.Random(_seed(settings.seed, "resample"))
            self._extra_rows = (dataset[i] for _ in itertools.count() for i in rng.sample(order, len(order)))

        def _score(self, inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Any], list[str]]:
            out = super()._generate_and_score_completions(inputs)
            return out, list(self.rlvf_reward.last), [x["prompt"] for x in inputs]

        def _generate_and_score_completions(self, inputs):
            """TRL's step, then dynamic sampling and the rollout record, over the *global* batch.

            With several processes each rank holds a contiguous share of whole groups (TRL's
            sampler hands rank r the r-th slice of the generation batch) and judges its own
            completions. Which groups are kept, and how many more to draw, is decided on the
            gathered rewards of every rank, the same decision one process makes; a draw is
            split evenly over the ranks (TRL's collectives need equal shares), and when the
            groups asked for do not split evenly the last rank pads with a repeat of the last
            prompt, sampled and dropped. Kept rows then move to the rank whose share they
            fill. A group is named (batch, index in that batch's global order)."""
            settings = self.rlvf_settings
            g = self.num_generations
            if not self.model.training:
                return super()._generate_and_score_completions(inputs)
            world, rank = self.accelerator.num_processes, self.accelerator.process_index
            batches = [self._score(inputs)]
            n_local = len(inputs) // g  # groups per rank in the first batch
            rewards = [self._gather_rewards(batches[0][1])]
            real = [n_local * world]  # groups per batch that count (draws may carry padding)

            def rewards_of(pick: tuple[int, int]) -> list[float | None]:
                b, k = pick
                return rewards[b][k]

            def draw(k: int) -> list[tuple[int, int]]:
                per = -(-k // world)
                rows = [next(self._extra_rows) for _ in range(k)]
                rows += rows[-1:] * (per * world - k)  # padding: not taken from the prompt stream
                mine = rows[rank * per : (rank + 1) * per]
                batches.append(self._score([dict(r) for r in mine for _ in range(g)]))
                rewards.append(self._gather_rewards(batches[-1][1]))
                real.append(k)
                return [(len(batches) - 1, j) for j in range(k)]

            first = [(0, k) for k in range(n_local * world)]
            if settings.dynamic_sampling:
                kept, stats = dynamic_sample(first, draw, rewards_of, settings.max_resample)
                self.rlvf_dynamic.append(stats)
                for name, value in stats.as_metrics().items():
                    self._metrics["train"][name].append(value)
            else:
                kept = first
            self._record(batches, set(kept), real)
            if kept == first:
                return batches[0][0]
            pad = self._tokenizer.pad_token_id
            picks = [(b, k * g + j) for b, k in kept for j in range(g)]
            if world == 1:
                return merge_rows([b[0] for b in batches], picks, pad)
            merged = merge_rows([self._gather_output(b[0], pad) for b in batches], picks, pad)
            share = slice(rank * n_local * g, (rank + 1) * n_local * g)
            device = self.accelerator.device
            local = {k: v[share].to(device) for k, v in merged.items() if k != "num_items_in_batch"}
            local["num_items_in_batch"] = merged["num_items_in_batch"].to(device)  # global, as TRL's
            return local

        def _get_per_token_logps_and_entropies(
            self,
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            batch_size=None,
            compute_entropy=False,
            compute_aux_loss=False,
            **extra,
        ):
            """On a CPU, score only the completion positions (`rlvf.rl.logprobs`), not every
            position through TRL's fused head; elsewhere (and for multimodal or MoE batches),
            TRL's own path."""
            if (
                input_ids.device.type != "cpu"
                or compute_aux_loss
                or any(v is not None for v in extra.values())
            ):
                return super()._get_per_token_logps_and_entropies(
                    model,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                    batch_size=batch_size,
                    compute_entropy=compute_entropy,
                    compute_aux_loss=compute_aux_loss,
                    **extra,
                )
            logps, entropies = completion_logprobs(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                temperature=self.temperature,
                entropy=compute_entropy,
                rows=batch_size,
            )
            return logps, entropies, None

        def _gather_rewards(self, scored: list[Any]) -> list[list[float | None]]:
            """Every rank's groups' rewards, in global group order."""
            g = self.num_generations
            groups = [[s.reward for s in scored[k : k + g]] for k in range(0, len(scored), g)]
            if self.accelerator.num_processes == 1:
                return groups
            from accelerate.utils import gather_object

            return gather_object(groups)

        def _gather_output(self, out: dict[str, Any], pad_id: int) -> dict[str, Any]:
            """One scored batch of every rank as one batch (rows in global order, on the CPU)."""
            import torch
            from accelerate.utils import gather_object

            local = {k: v.cpu() for k, v in out.items() if k != "num_items_in_batch" and v is not None}
            parts = gather_object([local])
            merged: dict[str, Any] = {}
            for key in local:
                values = [p[key] for p in parts]
                if values[0].dim() == 1:
                    merged[key] = torch.cat(values)
                else:
                    fill = pad_id if key in ("prompt_ids", "completion_ids") else 0
                    merged[key] = _pad_cat(values, fill, left=key in _LEFT)
            return merged

        def _record(
            self, batches: list[tuple[dict[str, Any], list[Any], list[str]]], kept: set, real: list[int]
        ) -> None:
            """Every completion of this step (kept or dropped) to the recorder; with several
            ranks, rank 0 records every rank's rows in global order."""
            g = self.num_generations
            eos = set(self.eos_token_ids)
            step = self.state.global_step + 1
            world, rank = self.accelerator.num_processes, self.accelerator.process_index
            for b, (out, scored, prompts) in enumerate(batches):
                n_local = len(scored) // g
                mask = out["completion_mask"]
                lengths = mask.sum(dim=1).tolist()
                ids = out["completion_ids"]
                truncated = [
                    n >= self.max_completion_length and int(ids[i, n - 1]) not in eos
                    for i, n in enumerate(int(x) for x in lengths)
                ]
                rows = rollouts_from_scored(
                    step,
                    prompts,
                    scored,
                    advantages=out["advantages"].tolist(),
                    lengths=lengths,
                    truncated=truncated,
                    kept=[(b, rank * n_local + i // g) in kept for i in range(len(scored))],
                )
                # a draw's padding groups (past its real groups) were never asked for
                rows = [r for i, r in enumerate(rows) if rank * n_local + i // g < real[b]]
                if world > 1:
                    from accelerate.utils import gather_object

                    rows = gather_object(rows)  # every rank's rows of batch b, in global order
                if rank == 0:
                    self.rlvf_recorder.add(rows)

    return RlvfGRPOTrainer


def _recorder_callback(recorder: RolloutRecorder):
    from transformers import TrainerCallback

    class RolloutCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            recorder.step_done(state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            recorder.close()

    return RolloutCallback()


def grpo_config(settings: GRPOSettings, out: Path, device: str):
    """TRL's GRPOConfig for `settings`; bf16 only on a GPU that has it (TRL defaults to bf16)."""
    from trl import GRPOConfig

    from rlvf.runtime import trains_in_bf16

    cuda = device.startswith("cuda")
    bf16 = trains_in_bf16(device)
    return GRPOConfig(
        output_dir=str(out),
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        generation_batch_size=settings.generation_batch_size,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        top_p=settings.top_p,
        beta=settings.beta,
        epsilon=settings.epsilon,
        epsilon_high=settings.epsilon_high,
        loss_type=settings.loss_type,
        scale_rewards=scale_for_loss(settings.loss_type, settings.scale_rewards),
        num_iterations=settings.num_iterations,
        logging_steps=settings.logging_steps,
        seed=settings.seed,
        data_seed=settings.seed,
        report_to=[],
        save_strategy="no",
        bf16=bf16,
        fp16=False,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        disable_tqdm=not settings.progress,
        gradient_checkpointing=settings.gradient_checkpointing,
        remove_unused_columns=False,  # the reward needs the task_id column
        log_completions=False,  # rlvf keeps every rollout itself
        **vllm_args(settings.rollouts),
    )


def train_grpo(
    policy: Any,
    tasks: Sequence[Task],
    settings: GRPOSettings,
    out: Path,
    *,
    lora: Any | None = None,
    run_id: str | None = None,
    client: Any | None = None,
    callbacks: Sequence[Any] = (),
    reward: VerifierReward | None = None,
) -> GRPOResult:
    """Train `policy` (a `PolicySpec`) with GRPO on `tasks`; the model stays in memory.

    `lora` a `LoraSpec` for a new adapter (None: full fine-tuning, or the policy's own
    adapter). Rollouts go to `run_id` through `client` (or stay under `out/rollouts`).
    """
    import os

    from rlvf.models.loader import load_policy, peft_config, resolve_device
    from rlvf.runtime import cpu_threads
    from rlvf.train.callback import TrackingCallback

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is "experimental" in TRL 1.16
    out = Path(out)
    dataset = grpo_dataset(tasks)
    device = resolve_device(policy.device)
    model, tok = load_policy(policy, trainable=True)
    reward = reward or VerifierReward(
        list(tasks),
        mode=settings.reward_mode,
        timeout=settings.verify_timeout,
        workers=settings.verify_workers,
        max_infra_rate=settings.max_infra_rate,
    )
    recorder = RolloutRecorder(run_id, client, every=settings.rollout_log_every, local_dir=out / "rollouts")
    tracking = TrackingCallback(None)
    rollout_func = rlvf_rollout_func(tok, tasks, settings) if settings.rollouts == "rlvf" else None
    trainer = _make_trainer_class()(
        model=model,
        reward_funcs=[reward],
        args=grpo_config(settings, out / "trainer", device),
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft_config(lora) if lora is not None and policy.adapter is None else None,
        callbacks=[tracking, _recorder_callback(recorder), *callbacks],
        rollout_func=rollout_func,
    )
    trainer.setup_rlvf(reward, recorder, settings, dataset)
    if not settings.progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    try:
        with cpu_threads(device):
            trainer.train()
    finally:
        recorder.close()  # a run that stops (e.g. the infra guard) still keeps its rollouts
    return GRPOResult(
        model=trainer.model,
        tokenizer=tok,
        trainer=trainer,
        steps=trainer.state.global_step,
        rollouts_written=recorder.rows_written,
        history=tracking.history,
        dynamic=list(trainer.rlvf_dynamic),
    )
