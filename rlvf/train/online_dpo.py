"""Online DPO: preference pairs made on the fly from the current policy and the verifier.

Each optimizer step samples `num_generations` completions for each of its prompts from the
policy being trained (rlvf's sampling engine, as GRPO's rollouts), judges them with the
shared verifier reward (`rlvf.rewards.VerifierReward`: clean like eval, run in the sandbox,
a score, the lowest reward, or None when the sandbox could not judge), pairs the best of
each group against its worst (`best_vs_worst`) and takes a DPO step against a frozen
reference (the starting policy).

rlvf's own loop rather than `trl.experimental.online_dpo`: TRL's trainer draws two
completions per prompt and calls the first one chosen when their rewards are equal
(`first >= second`). On code most groups are ties (every sample fails, or every sample
passes), so most of its pairs would teach noise. Here:

- a tie is never a pair: a group whose best and worst rewards are equal is skipped and
  counted (`ties_skipped`);
- a completion the sandbox could not judge (reward None) is on neither side; a group with
  fewer than two judged completions is skipped (`unjudged_prompts`), and the run stops when
  too many completions go unjudged (the shared infra guard);
- completions are as long as code needs (`max_completion_length`, not TRL's 64 tokens) and
  stop where the function ends (the sampler's rule);
- a step whose prompts gave no pair draws further prompts (at most `max_resample` times);
  a step still without a pair has no gradient, so the optimizer leaves the weights alone.

The loss is DPO's sigmoid loss, optionally with an SFT term on the chosen side
(`loss_type: [sigmoid, sft]`, weighted by `loss_weights`), the combination that helped
offline DPO on the tiny model (rlvf.methods.dpo). Every completion goes to the run's
`rollouts/` (kept = a side of a pair), every pair to `data/online_pairs.jsonl`.

Under a launcher the transformers Trainer hands each rank a contiguous share of every batch
of prompts and averages the gradients (DDP). Each rank samples its groups (per-row random
streams: one process and N ranks draw the same completions), judges and pairs them; whether
a step resamples, the loss's normalisation (the step's pair count) and every logged number
are decided over every rank's groups, and rank 0 alone records the rollouts and the pairs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rlvf.datasets.pairs import normalise
from rlvf.errors import UserError

LOSS_TYPES = ("sigmoid", "sft")
PAIRS_ARTIFACT = "data/online_pairs.jsonl"


# --------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class OnlinePair:
    """One pair made from one group: the best completion against the worst, rewards differing."""

    step: int
    group: int  # the group's place in its draw
    task_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_reward: float
    rejected_reward: float
    chosen_index: int  # index in the group
    rejected_index: int
    chosen_category: str
    rejected_category: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairingStats:
    """What happened to the groups of one draw."""

    groups: int = 0
    pairs: int = 0
    ties: int = 0  # best and worst rewards equal: skipped
    unjudged: int = 0  # fewer than two completions with a verdict: skipped
    same_text: int = 0  # best and worst are the same text (a flaky verdict): skipped
    infra: int = 0  # completions the sandbox could not judge (reward None)

    def add(self, other: PairingStats) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


def best_vs_worst(
    prompts: Sequence[str], scored: Sequence[Any], group: int, step: int = 0
) -> tuple[list[OnlinePair], PairingStats]:
    """Pair each group's best completion against its worst, only when their rewards differ.

    `scored` holds `rlvf.rewards.Scored` results, `group` consecutive ones per prompt of
    `prompts` (one prompt per group). Rewards of None (no verdict) take no part; among equal
    best (or worst) rewards the first completion is taken. Every pair has
    chosen_reward > rejected_reward, by construction.
    """
    if len(scored) != group * len(prompts):
        raise ValueError(f"online DPO: {len(scored)} completions for {len(prompts)} groups of {group}")
    pairs: list[OnlinePair] = []
    stats = PairingStats()
    for g, prompt in enumerate(prompts):
        members = list(scored[g * group : (g + 1) * group])
        stats.groups += 1
        judged = [(i, s) for i, s in enumerate(members) if s.reward is not None]
        stats.infra += len(members) - len(judged)
        if len(judged) < 2:
            stats.unjudged += 1
            continue
        best_i, best = max(judged, key=lambda js: (js[1].reward, -js[0]))
        worst_i, worst = min(judged, key=lambda js: (js[1].reward, js[0]))
        if not best.reward > worst.reward:
            stats.ties += 1
            continue
        if normalise(best.completion) == normalise(worst.completion):
            stats.same_text += 1
            continue
        stats.pairs += 1
        pairs.append(
            OnlinePair(
                step=step,
                group=g,
                task_id=best.task_id,
                prompt=prompt,
                chosen=best.completion,
                rejected=worst.completion,
                chosen_reward=float(best.reward),
                rejected_reward=float(worst.reward),
                chosen_index=best_i,
                rejected_index=worst_i,
                chosen_category=best.outcome.category,
                rejected_category=worst.outcome.category,
            )
        )
    return pairs, stats


# --------------------------------------------------------------------------- the loss


def completion_logps(model: Any, prompts: list[list[int]], completions: list[list[int]], pad_id: int):
    """Sum of each completion's token log-probs after its prompt, and its token count."""
    import torch

    device = next(model.parameters()).device
    width = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    target = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attn[i, : len(p) + len(c)] = 1
        target[i, len(p) : len(p) + len(c)] = True
    ids, attn, target = ids.to(device), attn.to(device), target.to(device)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = target[:, 1:]
    return (logps * mask).sum(-1), mask.sum(-1)


def dpo_losses(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """DPO's sigmoid loss per pair, and the implicit rewards beta * log(pi / ref) of each side."""
    import torch.nn.functional as F

    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen - rejected), chosen.detach(), rejected.detach()


# --------------------------------------------------------------------------- the trainer


@dataclass(frozen=True)
class OnlineDPOSettings:
    num_generations: int = 4
    max_completion_length: int = 192
    temperature: float = 1.0
    beta: float = 0.1
    loss_type: tuple[str, ...] = ("sigmoid", "sft")
    loss_weights: tuple[float, ...] | None = (0.25, 1.0)
    reward_mode: str = "fraction"
    max_resample: int = 2
    max_infra_rate: float = 0.1
    max_length: int = 384
    verify_timeout: float = 3.0
    verify_workers: int | None = None
    sample_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise UserError(f"online_dpo: num_generations must be at least 2 (got {self.num_generations})")
        unknown = [t for t in self.loss_type if t not in LOSS_TYPES]
        if unknown or not self.loss_type:
            raise UserError(
                f"online_dpo: loss_type {list(self.loss_type)} must be made of {', '.join(LOSS_TYPES)}"
            )
        if "sigmoid" not in self.loss_type:
            raise UserError("online_dpo: loss_type must include sigmoid (the preference loss)")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise UserError(
                f"online_dpo: {len(self.loss_weights)} loss_weights for {len(self.loss_type)} loss types"
            )

    def weight(self, loss: str) -> float:
        if loss not in self.loss_type:
            return 0.0
        return 1.0 if self.loss_weights is None else self.loss_weights[self.loss_type.index(loss)]


@dataclass(frozen=True)
class _Verdict:
    """What a step's numbers need of one `rlvf.rewards.Scored` (gathered from every rank)."""

    reward: float | None
    outcome: Any
    format_failure: bool


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


def _collate(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Prompts stay text: each step samples its own completions."""
    return {"prompt": [r["prompt"] for r in rows], "task_id": [r["task_id"] for r in rows]}


def prompts_dataset(tasks: Sequence[Any]):
    from datasets import Dataset

    if not tasks:
        raise UserError("online_dpo: no training prompts")
    return Dataset.from_dict({"prompt": [t.prompt for t in tasks], "task_id": [t.task_id for t in tasks]})


_TRAINER: type | None = None


def trainer_class() -> type:
    global _TRAINER
    if _TRAINER is None:
        _TRAINER = _make_trainer_class()
    return _TRAINER


def _make_trainer_class() -> type:
    import torch
    from transformers import Trainer

    from rlvf.rewards import InfraFailureError, VerifierReward, batch_rates

    class OnlineDPOTrainer(Trainer):
        """A transformers Trainer whose step samples, verifies, pairs and takes a DPO step."""

        def __init__(
            self,
            *,
            model: Any,
            args: Any,
            train_dataset: Any,
            processing_class: Any,
            tasks: Sequence[Any],
            settings: OnlineDPOSettings,
            recorder: Any = None,
            run: Any = None,
            peft_config: Any = None,
            callbacks: Sequence[Any] = (),
        ) -> None:
            if peft_config is not None:
                from peft import get_peft_model

                model = get_peft_model(model, peft_config)
            super().__init__(
                model=model,
                args=args,
                train_dataset=train_dataset,
                processing_class=processing_class,
                data_collator=_collate,
                callbacks=list(callbacks),
            )
            from rlvf.train.dist import Group

            self.settings = settings
            self.tasks = {t.task_id: t for t in tasks}
            # the ranks (the Trainer's accelerator joined them): each holds a share of every batch
            self.group = Group(self.accelerator.num_processes, self.accelerator.process_index)
            self._global_pairs = 0
            # The reference: the adapter switched off (LoRA), else a frozen copy of the start.
            self.ref_model = None
            if not hasattr(self.model, "peft_config"):
                self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
            self.reward = VerifierReward(
                tasks,
                mode=settings.reward_mode,
                timeout=settings.verify_timeout,
                workers=settings.verify_workers,
                max_infra_rate=settings.max_infra_rate,
            )
            self.recorder = recorder if self.group.rank == 0 else None  # rank 0 records every rank's
            self.run = run
            self.pairs: list[OnlinePair] = []
            self.totals = PairingStats()
            self._stats: dict[str, list[float]] = defaultdict(list)
            self._draws = itertools.count()
            order = list(range(len(train_dataset)))
            rng = random.Random(_seed(settings.seed, "resample"))
            self._extra = (train_dataset[i] for _ in itertools.count() for i in rng.sample(order, len(order)))

        # ---- sampling and pairing
        def _draw(self, model: Any, prompts: list[str], task_ids: list[str], step: int):
            """This rank's groups of one draw: sampled, judged, paired. Every completion draws
            from its own random stream, seeded by (run seed, draw, its group's index in the
            global draw, its place in the group), so one process and N ranks (each holding a
            contiguous share of the groups) sample the same completions. Returns the pairs
            (named by their global group), the pairing stats, the verdicts and the draw's
            global pair count; rank 0 records every rank's rollouts."""
            from rlvf.generate.engine import HFBackend, SamplingSettings
            from rlvf.rewards.verifier import prefetcher
            from rlvf.rl.rollouts import rollouts_from_scored
            from rlvf.train.grpo import merged_adapter

            s, g, tok = self.settings, self.settings.num_generations, self.processing_class
            draw = next(self._draws)
            first = self.group.rank * len(prompts)  # this rank's first group in the global draw
            sampling = SamplingSettings(
                temperature=s.temperature,
                max_new_tokens=s.max_completion_length,
                seed=_seed(s.seed, draw),
            )
            row_seeds = [_seed(s.seed, draw, first + j, k) for j in range(len(prompts)) for k in range(g)]
            entry = [self.tasks[t].entry_point or None for t in task_ids]
            side = tok.padding_side
            tok.padding_side = "left"
            try:
                with merged_adapter(model):
                    raws = HFBackend(model, tok, s.sample_batch_size).run(
                        [p for p in prompts for _ in range(g)],
                        [e for e in entry for _ in range(g)],
                        sampling,
                        row_seeds=row_seeds,
                        on_row=prefetcher(self.reward, [t for t in task_ids for _ in range(g)]),
                    )
            finally:
                tok.padding_side = side
            ids = [t for t in task_ids for _ in range(g)]
            failure = None  # with several ranks a sandbox failure on one stops them all, together
            try:
                self.reward(
                    prompts=[p for p in prompts for _ in range(g)],
                    completions=[r.text for r in raws],
                    task_id=ids,
                )
            except InfraFailureError as e:
                if self.group.world == 1:
                    raise
                failure = str(e)
            scored = list(self.reward.last)
            pairs, stats = best_vs_worst(prompts, scored, g, step)
            sides = {p.group * g + i for p in pairs for i in (p.chosen_index, p.rejected_index)}
            rows = rollouts_from_scored(
                step,
                [p for p in prompts for _ in range(g)],
                scored,
                lengths=[r.n_tokens for r in raws],
                truncated=[r.finish == "length" for r in raws],
                kept=[k in sides for k in range(len(scored))],
            )
            every = self.group.gather((len(pairs), rows, failure))
            if self.recorder is not None:
                self.recorder.add([r for _, part, _ in every for r in part])  # global order
            failures = [f for _, _, f in every if f]
            if failures:
                raise InfraFailureError(failures[0])
            pairs = [dataclasses.replace(p, group=first + p.group) for p in pairs]
            return pairs, stats, scored, sum(n for n, _, _ in every)

        def make_pairs(self, model: Any, inputs: dict[str, list[Any]]) -> list[OnlinePair]:
            """The step's pairs: its prompts' groups, then further prompts while none paired."""
            step = self.state.global_step + 1
            prompts, task_ids = list(inputs["prompt"]), list(inputs["task_id"])
            pairs, stats, scored, n_pairs = self._draw(model, prompts, task_ids, step)
            draws = 0
            while not n_pairs and draws < self.settings.max_resample:  # no pair on any rank
                everyone = [next(self._extra) for _ in range(len(prompts) * self.group.world)]
                rows = everyone[self.group.share(len(everyone))]
                more, more_stats, more_scored, n_pairs = self._draw(
                    model, [r["prompt"] for r in rows], [r["task_id"] for r in rows], step
                )
                pairs, draws = more, draws + 1
                stats.add(more_stats)
                scored += more_scored
            self._global_pairs = n_pairs
            # the step's numbers over every rank's groups, as one process counts them
            every = self.group.gather(
                (stats, [(s.reward, s.outcome, s.format_failure) for s in scored], pairs)
            )
            stats = PairingStats()
            for st, _, _ in every:
                stats.add(st)
            scored = [_Verdict(*v) for _, vs, _ in every for v in vs]
            all_pairs = [p for _, _, ps in every for p in ps]
            self.totals.add(stats)
            if self.group.rank == 0:
                self.pairs.extend(all_pairs)
            judged = [s.reward for s in scored if s.reward is not None]
            record = {
                "pairs": stats.pairs,
                "ties_skipped": stats.ties,
                "unjudged_prompts": stats.unjudged,
                "same_text_skipped": stats.same_text,
                "infra_failures": stats.infra,
                "resampled": draws,
                "completions": len(scored),
                "reward_mean": sum(judged) / len(judged) if judged else float("nan"),
                "pairs_total": self.totals.pairs,
                "ties_total": self.totals.ties,
                "infra_total": self.totals.infra,
            }
            if all_pairs:
                record["reward_chosen"] = sum(p.chosen_reward for p in all_pairs) / len(all_pairs)
                record["reward_rejected"] = sum(p.rejected_reward for p in all_pairs) / len(all_pairs)
            for name, value in batch_rates(scored).items():
                record[f"verifier/{name}_rate"] = value
            for k, v in record.items():
                self._stats[k].append(float(v))
            return pairs

        # ---- the loss
        def _tokens(self, pairs: list[OnlinePair]) -> tuple[list[list[int]], list[list[int]]]:
            tok, limit = self.processing_class, self.settings.max_length
            prompts, completions = [], []
            for side in ("chosen", "rejected"):
                for p in pairs:
                    c = tok(getattr(p, side), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                    q = tok(p.prompt, add_special_tokens=False)["input_ids"]
                    c = c[: max(1, limit - len(q))]
                    prompts.append(q[-(limit - len(c)) :])
                    completions.append(c)
            return prompts, completions

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """DPO (+ SFT) over the step's pairs. With several ranks each holds the pairs of its
            own groups: its loss is its pairs' sum over the step's global pair count, times the
            ranks (DDP averages the gradients), so the update is one process's mean over all
            pairs; a rank without a pair of its own still runs one forward of weight 0, which
            every rank's gradient all-reduce needs."""
            unwrapped = self.accelerator.unwrap_model(model)
            pairs = self.make_pairs(unwrapped, inputs)
            n_all = self._global_pairs
            if not n_all:
                self._stats["steps_without_pairs"].append(1.0)
                return torch.zeros((), device=self.args.device, requires_grad=True)
            self._stats["steps_without_pairs"].append(0.0)
            s, n = self.settings, len(pairs)
            pad = self.processing_class.pad_token_id
            if not pairs:
                ids = torch.full((1, 1), pad, dtype=torch.long, device=self.args.device)
                loss = model(input_ids=ids).logits.sum() * 0.0
                per_pair: list[tuple[float, ...]] = []
            else:
                prompts, completions = self._tokens(pairs)
                logps, lengths = completion_logps(model, prompts, completions, pad)
                with torch.no_grad():  # the unwrapped model: no DDP collective on one rank alone
                    if self.ref_model is not None:
                        ref, _ = completion_logps(self.ref_model, prompts, completions, pad)
                    else:
                        with unwrapped.disable_adapter():
                            ref, _ = completion_logps(unwrapped, prompts, completions, pad)
                losses, chosen_r, rejected_r = dpo_losses(
                    logps[:n], logps[n:], ref[:n], ref[n:], self.settings.beta
                )
                sft = -(logps[:n] / lengths[:n].clamp(min=1))
                scale = self.group.world / n_all  # 1 / n in one process: the mean over pairs
                loss = (s.weight("sigmoid") * losses.sum() + s.weight("sft") * sft.sum()) * scale
                per_pair = list(
                    zip(
                        losses.tolist(),
                        sft.tolist(),
                        chosen_r.tolist(),
                        rejected_r.tolist(),
                        logps[:n].tolist(),
                        logps[n:].tolist(),
                        strict=True,
                    )
                )
            every = [v for part in self.group.gather(per_pair) for v in part]
            cols = list(zip(*every, strict=True))
            mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
            margins = [c - r for c, r in zip(cols[2], cols[3], strict=True)]
            for k, v in {
                "dpo_loss": mean(cols[0]),
                "sft_loss": mean(cols[1]),
                "rewards/chosen": mean(cols[2]),
                "rewards/rejected": mean(cols[3]),
                "rewards/margins": mean(margins),
                "rewards/accuracies": mean([float(m > 0) for m in margins]),
                "logps/chosen": mean(cols[4]),
                "logps/rejected": mean(cols[5]),
            }.items():
                self._stats[k].append(v)
            return loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and self._stats:
                for k, values in self._stats.items():
                    finite = [v for v in values if math.isfinite(v)]
                    if finite:  # per-step means over the interval; running totals as they stand
                        logs[k] = finite[-1] if k.endswith("_total") else sum(finite) / len(finite)
                self._stats = defaultdict(list)
            super().log(logs, start_time)

        def train(self, *args: Any, **kwargs: Any):
            """Train; the rollouts and pairs so far reach the run even when training fails
            (a failure to write them then does not hide the training error)."""
            done = False
            try:
                out = super().train(*args, **kwargs)
                done = True
                return out
            except InfraFailureError as e:
                raise UserError(str(e)) from None
            finally:
                with contextlib.nullcontext() if done else contextlib.suppress(Exception):
                    if self.recorder is not None:
                        self.recorder.close()
                    if self.run is not None and self.pairs:
                        self.run.log_jsonl(PAIRS_ARTIFACT, [p.to_dict() for p in self.pairs])

    return OnlineDPOTrainer
