"""rlvf's compact PPO for causal LMs (TRL 1.16 has no PPOTrainer), on CPU or GPU unchanged.

One iteration:

1. rollout: `rollout_batch_size` prompts (a seeded shuffle of the training tasks, cycled),
   one completion each through rlvf's sampling engine (`HFBackend.run(logprobs=True)`,
   packed by `pack_rollout`), a LoRA adapter merged for sampling;
2. reward: the shared verifier reward (`rlvf.rewards.VerifierReward`: cleaned as eval
   cleans, judged in the sandbox), optionally a reward model (`rlvf.rewards.combine`);
   a completion the sandbox could not judge (reward None) is *skipped*, never scored 0;
3. reference / value forward: the policy's log-probs and values and the frozen reference's
   log-probs on the sampled tokens (at the sampling temperature);
4. per-token rewards (score on the last real token, -kl_coef * KL on every token),
   GAE, advantage whitening (`rlvf.rl.gae`);
5. optimisation: `ppo_epochs` passes over shuffled minibatches of `minibatch_size`
   completions, clipped policy + `vf_coef` x clipped value loss (`rlvf.rl.ppo_loss`),
   gradient clipping; then the adaptive KL coefficient moves (`rlvf.rl.kl.KLController`).

The value model is a **value head on the policy's trunk** (a linear layer on the last hidden
state): the policy forward that gives the log-probs gives the values too, so an iteration
costs one forward per minibatch instead of two, and no second model sits in memory. On a
CPU that halves the critic's cost; the price is that value gradients also shape the trunk
(`vf_coef` weighs them). The head is a training device, not part of the saved policy.

The reference is the starting policy, frozen: for a fresh LoRA adapter, the same model with
its adapter disabled (no copy); for full fine-tuning, or an adapter trained further
(`model.init` a LoRA policy), a frozen copy.

Everything runs with dropout off (model.eval()): the log-probs PPO's ratio compares must
come from the same function, so the first minibatch's ratio is exactly 1.

Under a launcher (`accelerate launch`, `torchrun`) the loop is data-parallel over the ranks
(`rlvf.train.dist`): each rank samples and judges a contiguous share of every rollout batch,
each row from its own random stream, so one process and N ranks draw the same rollouts; the
whitening, the KL and every logged mean are taken over every rank's rows, the minibatches are
drawn over the global batch, and the gradients are summed over the ranks before each step,
so the ranks keep identical weights. Rank 0 alone records the rollouts and measures the
held-out pass@1.

The trainer speaks the transformers callback protocol (`TrainerState` / `TrainerControl`,
`on_train_begin` / `on_log` / `on_step_end` / `on_train_end`) so rlvf's tracking callback,
progress bar and the training lifecycle drive it as they drive a TRL trainer; one PPO
iteration is one `global_step`.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rlvf.errors import UserError
from rlvf.records import Task
from rlvf.rewards import REWARD_MODES, VerifierReward, batch_rates
from rlvf.rewards.combine import RewardSpec, Scorer, parse_reward, rewards_for
from rlvf.rl.kl import KL_ESTIMATORS, KLController
from rlvf.rl.rollouts import RolloutRecorder, rollouts_from_scored

PHASES = ("rollout", "reward", "forward", "optimise")


@dataclass(frozen=True)
class PPOSettings:
    """PPO's knobs (the `ppo` recipe section; see rlvf/methods/ppo.py for each key's meaning)."""

    reward: str = "verifier"
    reward_model: str | None = None
    reward_mode: str = "fraction"
    kl_estimator: str = "k1"
    kl_coef: float = 0.05
    target_kl: float | None = None
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 1.0
    whiten_advantages: bool = True
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ppo_epochs: int = 4
    minibatch_size: int = 8
    rollout_batch_size: int = 32
    max_completion_length: int = 128
    temperature: float = 1.0
    max_grad_norm: float = 1.0
    iterations: int = 10
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    seed: int = 0
    max_infra_rate: float = 0.1
    verify_timeout: float = 3.0
    verify_workers: int | None = None
    sample_batch_size: int = 64
    eval_every: int = 0

    def __post_init__(self) -> None:
        parse_reward(self.reward, self.reward_model)  # a UserError when wrong
        if self.reward_mode not in REWARD_MODES:
            raise UserError(f"ppo: reward_mode '{self.reward_mode}' is not one of {', '.join(REWARD_MODES)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise UserError(
                f"ppo: kl_estimator '{self.kl_estimator}' is not one of {', '.join(KL_ESTIMATORS)}"
            )
        if self.minibatch_size > self.rollout_batch_size:
            raise UserError(
                f"ppo: minibatch_size ({self.minibatch_size}) is larger than rollout_batch_size "
                f"({self.rollout_batch_size})"
            )
        if self.temperature <= 0:
            raise UserError(f"ppo: temperature must be > 0 (PPO samples; got {self.temperature})")
        for name in (
            "iterations",
            "ppo_epochs",
            "minibatch_size",
            "rollout_batch_size",
            "max_completion_length",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"ppo: {name} must be at least 1 (got {getattr(self, name)})")
        if self.target_kl is not None and self.target_kl <= 0:
            raise UserError(f"ppo: target_kl must be > 0 or null (got {self.target_kl})")

    @property
    def reward_spec(self) -> RewardSpec:
        return parse_reward(self.reward, self.reward_model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PPOArgs:
    """What the lifecycle's shared trainer arguments give PPO (the rest is `PPOSettings`)."""

    output_dir: str = ""
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    seed: int = 0
    max_grad_norm: float = 1.0
    use_cpu: bool = False
    bf16: bool = False
    disable_tqdm: bool = True
    report_to: list[str] = field(default_factory=list)
    logging_steps: int = 1
    logging_first_step: bool = True


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


class ValueHead:
    """A linear value head on the trunk's last hidden state (see the module doc for why)."""

    def __init__(self, hidden: int, device: Any, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.linear = torch.nn.Linear(hidden, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(1, hidden, generator=g) / math.sqrt(hidden) * 0.1)
            self.linear.bias.zero_()
        self.linear.to(device)

    def __call__(self, hidden: Any) -> Any:
        return self.linear(hidden.float()).squeeze(-1)

    def parameters(self):
        return self.linear.parameters()


class _Callbacks:
    """The callback list of a transformers Trainer, minus what PPO does not need."""

    def __init__(self, callbacks: Sequence[Any]) -> None:
        self.callbacks = list(callbacks)

    def add(self, cb: Any) -> None:
        self.callbacks.append(cb() if isinstance(cb, type) else cb)

    def pop(self, cb: Any) -> Any:
        for c in self.callbacks:
            if (isinstance(cb, type) and isinstance(c, cb)) or c is cb:
                self.callbacks.remove(c)
                return c
        return None

    def call(self, event: str, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for c in self.callbacks:
            fn = getattr(c, event, None)
            if fn is not None:
                fn(args, state, control, **kwargs)


def _forward(
    model: Any, input_ids: Any, attention_mask: Any, completion_ids: Any, pw: int, temperature: float
):
    """(log-probs of the completion tokens at `temperature`, logits, last hidden states) at
    the completion positions; positions follow the left padding as the sampler's did."""
    import torch

    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        output_hidden_states=True,
        use_cache=False,
    )
    T = completion_ids.shape[1]
    logits = out.logits[:, pw - 1 : pw - 1 + T].float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids[..., None]).squeeze(-1)
    hidden = out.hidden_states[-1][:, pw - 1 : pw - 1 + T]
    return logp, logits, hidden


class PPOTrainer:
    """PPO on `tasks` (see the module doc). `.train()` runs it; `.model` is the policy."""

    def __init__(
        self,
        model: Any,
        tok: Any,
        tasks: Sequence[Task],
        settings: PPOSettings,
        args: PPOArgs | None = None,
        *,
        callbacks: Sequence[Any] = (),
        peft_config: Any | None = None,
        recorder: RolloutRecorder | None = None,
        scorer: Scorer | None = None,
        heldout: Callable[[Any], float] | None = None,
        reward: VerifierReward | None = None,
    ) -> None:
        import torch
        from transformers import TrainerControl, TrainerState

        from rlvf.train.dist import Group

        if not tasks:
            raise UserError("ppo: no training tasks")
        self.settings = s = settings
        self.group = Group.join(cuda=next(model.parameters()).device.type == "cuda")
        self.group.share(s.rollout_batch_size, "ppo: rollout_batch_size")  # a UserError if uneven
        if self.group.world > 1 and next(model.parameters()).device.type == "cuda":
            import os

            model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}")
        self.args = args or PPOArgs(learning_rate=s.learning_rate, seed=s.seed)
        self.tok = tok
        self.tasks = list(tasks)
        self.task_map = {t.task_id: t for t in self.tasks}
        torch.manual_seed(s.seed)
        fresh_lora = peft_config is not None
        if fresh_lora:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self.model = model
        self.device = next(model.parameters()).device
        # The reference: the adapter-disabled base for a fresh adapter, else a frozen copy.
        self.ref_model = None
        if not fresh_lora:
            self.ref_model = copy.deepcopy(model).eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)
        hidden = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd
        self.value_head = ValueHead(hidden, self.device, _seed(s.seed, "value_head"))
        params = [p for p in model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
        self._params = params
        self.kl = KLController(s.kl_coef, s.target_kl, s.kl_horizon)
        self.spec = s.reward_spec
        self.scorer = scorer
        if self.spec.rm is not None and scorer is None:
            from rlvf.rewards.combine import load_scorer

            self.scorer = load_scorer(self.spec.rm)
        self.reward = reward or VerifierReward(
            self.tasks,
            mode=s.reward_mode,
            timeout=s.verify_timeout,
            workers=s.verify_workers,
            max_infra_rate=s.max_infra_rate,
        )
        lead = self.group.rank == 0
        self.recorder = recorder if lead else None  # rank 0 records every rank's rollouts
        self.heldout = heldout if lead else None
        self.callbacks = _Callbacks(callbacks)
        self.state = TrainerState(max_steps=s.iterations, logging_steps=1)
        self.state.is_world_process_zero = self.state.is_local_process_zero = lead
        self.control = TrainerControl()
        self.history: list[dict[str, float]] = []
        self.timings: list[dict[str, float]] = []
        rng = random.Random(_seed(s.seed, "prompts"))
        self._order = self._prompt_stream(rng)
        self._gen = torch.Generator().manual_seed(_seed(s.seed, "minibatches"))
        self._autocast = bool(self.args.bf16) and str(self.device).startswith("cuda")

    # -- the transformers Trainer surface the lifecycle uses
    def add_callback(self, cb: Any) -> None:
        self.callbacks.add(cb)

    def pop_callback(self, cb: Any) -> Any:
        return self.callbacks.pop(cb)

    def remove_callback(self, cb: Any) -> None:
        self.callbacks.pop(cb)

    def _event(self, name: str, **kwargs: Any) -> None:
        self.callbacks.call(
            name, self.args, self.state, self.control, model=self.model, optimizer=self.optimizer, **kwargs
        )

    def _prompt_stream(self, rng: random.Random):
        while True:
            order = list(range(len(self.tasks)))
            rng.shuffle(order)
            yield from order

    def _amp(self):
        import contextlib

        import torch

        if self._autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _ref_logp(self, batch: Any, rows: Any) -> Any:
        import contextlib

        model = self.ref_model if self.ref_model is not None else self.model
        ctx = model.disable_adapter() if self.ref_model is None else contextlib.nullcontext()
        with ctx:
            logp, _, _ = _forward(
                model,
                batch.input_ids[rows],
                batch.attention_mask[rows],
                batch.completion_ids[rows],
                batch.prompt_width,
                self.settings.temperature,
            )
        return logp

    # -- one iteration
    def rollout(self, iteration: int) -> tuple[list[Task], Any]:
        """Sample one completion for each of this rank's share of the next `rollout_batch_size`
        prompts (all of them in one process). Every row draws from its own random stream,
        seeded by (run seed, iteration, its place in the global batch), so which rank samples
        it does not change its completion: one process and N ranks draw the same rollouts."""
        from rlvf.generate.engine import HFBackend, SamplingSettings, pack_rollout
        from rlvf.rewards.verifier import prefetcher
        from rlvf.train.grpo import merged_adapter

        s = self.settings
        everyone = [self.tasks[next(self._order)] for _ in range(s.rollout_batch_size)]
        share = self.group.share(len(everyone), "ppo: rollout_batch_size")
        tasks = everyone[share]
        row_seeds = [_seed(s.seed, "rollout", iteration, share.start + k) for k in range(len(tasks))]
        sampling = SamplingSettings(
            temperature=s.temperature,
            top_p=1.0,
            max_new_tokens=s.max_completion_length,
            seed=_seed(s.seed, "rollout", iteration),
        )
        side = self.tok.padding_side
        self.tok.padding_side = "left"
        try:
            with merged_adapter(self.model):
                raws = HFBackend(self.model, self.tok, s.sample_batch_size, prune=True).run(
                    [t.prompt for t in tasks],
                    [t.entry_point or None for t in tasks],
                    sampling,
                    logprobs=True,
                    row_seeds=row_seeds,
                    on_row=prefetcher(self.reward, [t.task_id for t in tasks]),
                )
        finally:
            self.tok.padding_side = side
        self.model.eval()
        prompt_ids = self.tok([t.prompt for t in tasks], add_special_tokens=False)["input_ids"]
        return tasks, pack_rollout(prompt_ids, raws, self.tok.pad_token_id, self.device)

    def score(self, tasks: list[Task], batch: Any) -> tuple[list[float | None], list[Any]]:
        """The paid rewards (None: skipped) and the verifier's verdicts, in order.

        With several ranks a sandbox failure on one stops them all (each would otherwise wait
        for the other at the next collective), and a reward model's tie-breaking, which
        ranks completions within the batch, sees the whole batch as one process does."""
        from rlvf.rewards.combine import combine
        from rlvf.rewards.verifier import InfraFailureError

        g = self.group
        prompts = [t.prompt for t in tasks]
        texts = [r.text for r in batch.raws]
        failure = None
        try:
            verifier = self.reward(prompts=prompts, completions=texts, task_id=[t.task_id for t in tasks])
        except InfraFailureError as e:
            if g.world == 1:
                raise
            failure, verifier = str(e), [sc.reward for sc in self.reward.last]
        if g.world > 1:
            failures = [f for f in g.gather(failure) if f]
            if failures:
                raise InfraFailureError(failures[0])
        scored = list(self.reward.last)
        cleaned = [sc.completion for sc in scored]
        if g.world > 1 and self.spec.rm is not None and self.spec.verifier:
            rm = rewards_for(replace(self.spec, verifier=False), None, prompts, cleaned, self.scorer)
            every = g.gather((list(verifier), rm))
            paid_all = combine(
                [v for vs, _ in every for v in vs],
                [r for _, rs in every for r in rs],
                lowest=self.reward.lowest,
            )
            return paid_all[g.share(len(paid_all))], scored
        paid = rewards_for(self.spec, verifier, prompts, cleaned, self.scorer, lowest=self.reward.lowest)
        return paid, scored

    def step(self, iteration: int) -> dict[str, float]:
        """One PPO iteration; returns its metrics (the trainer log keys).

        With several ranks each one samples, judges and runs the forward passes of its share
        of the rollout batch; what one process computes over the whole batch (advantage
        whitening, the KL the controller follows, every logged mean) is computed over every
        rank's rows, and the minibatches are drawn over the global batch (see `_optimise`)."""
        import torch

        from rlvf.rl.gae import gae, token_rewards, whiten
        from rlvf.rl.kl import kl_estimate
        from rlvf.rl.ppo_loss import explained_variance

        s, g = self.settings, self.group
        t0 = time.perf_counter()
        tasks, batch = self.rollout(iteration)
        t1 = time.perf_counter()
        paid, scored = self.score(tasks, batch)
        t2 = time.perf_counter()
        keep = [i for i, r in enumerate(paid) if r is not None]
        lengths = batch.lengths
        truncated = [r.finish == "length" for r in batch.raws]
        tokens = [int(n) for n in batch.completion_mask[keep].sum(1).tolist()] if keep else []
        every = g.gather((paid, scored, lengths, truncated, tokens))
        paid_all = [p for e in every for p in e[0]]
        scored_all = [sc for e in every for sc in e[1]]
        lengths_all = [n for e in every for n in e[2]]
        truncated_all = [t for e in every for t in e[3]]
        row_tokens = [n for e in every for n in e[4]]  # tokens of every kept row, in global order
        offset = sum(len(e[4]) for e in every[: g.rank])  # this rank's first row among them
        n_kept = len(row_tokens)
        logs: dict[str, float] = {f"verifier/{k}_rate": v for k, v in batch_rates(scored_all).items()}
        logs["completion_length"] = sum(lengths_all) / max(len(lengths_all), 1)
        logs["truncated_rate"] = sum(truncated_all) / max(len(truncated_all), 1)
        logs["skipped"] = float(len(paid_all) - n_kept)
        adv0: list[float | None] = [None] * len(paid)
        if n_kept:
            rows = torch.tensor(keep, dtype=torch.long, device=self.device)
            mask = batch.completion_mask[rows].float()
            scores = torch.tensor([paid[i] for i in keep], dtype=torch.float32, device=self.device)
            if keep:
                with torch.no_grad(), self._amp():
                    old_logp, _, hidden = _forward(
                        self.model,
                        batch.input_ids[rows],
                        batch.attention_mask[rows],
                        batch.completion_ids[rows],
                        batch.prompt_width,
                        s.temperature,
                    )
                    old_values = self.value_head(hidden) * mask
                    ref_logp = self._ref_logp(batch, rows)
                old_logp, ref_logp = old_logp.float(), ref_logp.float()
            else:  # every row of this rank's share went unjudged; the others' rows train
                old_logp, ref_logp, old_values = (torch.zeros_like(mask) for _ in range(3))
            kl = kl_estimate(old_logp, ref_logp, s.kl_estimator) * mask
            rewards = token_rewards(scores, kl, mask, self.kl.coef)
            adv, returns = gae(rewards, old_values, mask, s.gamma, s.lam)
            for j, i in enumerate(keep):
                adv0[i] = float(adv[j, 0])
            if s.whiten_advantages:
                adv = whiten(adv, mask, mean_of=g.masked_mean)
            t3 = time.perf_counter()
            logs.update(
                self._optimise(batch, rows, mask, old_logp, old_values, adv, returns, offset, row_tokens)
            )
            t4 = time.perf_counter()
            kl_tok = float(g.masked_mean(kl, mask))
            kl_seq = float(g.sum((kl * mask).sum()) / n_kept)
            reward_mean = g.sum(scores.sum()) / n_kept
            gap = (batch.sampling_logprobs[rows] - old_logp).abs()
            logs.update(
                reward_mean=float(reward_mean),
                reward_std=float((g.sum(((scores - reward_mean) ** 2).sum()) / n_kept).sqrt()),
                kl=kl_tok,
                kl_seq=kl_seq,
                explained_variance=explained_variance(old_values, returns, mask, mean_of=g.masked_mean),
                value_mean=float(g.masked_mean(old_values, mask)),
                return_mean=float(g.masked_mean(returns, mask)),
                sampling_logprob_gap=float(g.masked_mean(gap, mask)),
            )
            if self.spec.rm is not None:
                judged = [sc.reward for sc in scored_all if sc.reward is not None]
                logs["verifier_score_mean"] = sum(judged) / max(len(judged), 1)
            if self.kl.adaptive:
                logs["kl_coef"] = self.kl.coef
                self.kl.update(kl_tok, n_kept)
        else:
            t3 = t4 = time.perf_counter()
        rows_out = rollouts_from_scored(
            iteration,
            [t.prompt for t in tasks],
            [replace(sc, reward=p) for sc, p in zip(scored, paid, strict=True)],
            advantages=[a if a is not None else float("nan") for a in adv0],
            lengths=lengths,
            truncated=truncated,
            kept=[p is not None for p in paid],
        )
        rows_all = [r for part in g.gather(rows_out) for r in part]  # every rank's, in global order
        if self.recorder is not None:
            self.recorder.add(rows_all)
        self.timings.append({"rollout": t1 - t0, "reward": t2 - t1, "forward": t3 - t2, "optimise": t4 - t3})
        for k, v in self.timings[-1].items():
            logs[f"time/{k}_s"] = v
        return logs

    def _optimise(
        self, batch, rows, mask, old_logp, old_values, adv, returns, offset: int, row_tokens: list[int]
    ) -> dict[str, float]:
        """`ppo_epochs` passes of minibatches drawn over the global batch of kept rows (the same
        permutation on every rank). Each rank runs the forward of the minibatch's rows it holds
        and weighs its token-mean losses by its share of the minibatch's tokens, so the summed
        gradients are exactly one process's pooled token mean; then the update is the same on
        every rank. A rank that holds none of a minibatch's rows adds nothing but still sums."""
        import torch

        from rlvf.rl.kl import masked_mean
        from rlvf.rl.ppo_loss import entropy_from_logits, policy_loss, value_loss

        s, g = self.settings, self.group
        n, n_local = len(row_tokens), rows.shape[0]
        mb = min(s.minibatch_size, n)
        names = ("loss", "policy_loss", "value_loss", "clip_frac", "value_clip_frac", "approx_kl", "entropy")
        sums = torch.zeros(len(names), dtype=torch.float64)
        grad_norms = 0.0
        count = 0
        for _ in range(s.ppo_epochs):
            perm = torch.randperm(n, generator=self._gen)
            for start in range(0, n, mb):
                everyone = perm[start : start + mb]
                mine = everyone[(everyone >= offset) & (everyone < offset + n_local)] - offset
                total = sum(row_tokens[i] for i in everyone.tolist())
                self.optimizer.zero_grad(set_to_none=True)
                if len(mine):
                    idx = mine.to(self.device)
                    r = rows[idx]
                    m = mask[idx]
                    with self._amp():
                        logp, logits, hidden = _forward(
                            self.model,
                            batch.input_ids[r],
                            batch.attention_mask[r],
                            batch.completion_ids[r],
                            batch.prompt_width,
                            s.temperature,
                        )
                    values = self.value_head(hidden)
                    pl = policy_loss(logp.float(), old_logp[idx], adv[idx], m, s.cliprange)
                    vl, vclip = value_loss(values, old_values[idx], returns[idx], m, s.cliprange_value)
                    loss = pl.loss + s.vf_coef * vl
                    share = float(m.sum()) / max(total, 1)  # 1 in one process
                    (loss * share).backward()
                    with torch.no_grad():
                        ent = masked_mean(entropy_from_logits(logits.detach()), m)
                    values_now = (loss, pl.loss, vl, pl.clip_frac, vclip, pl.approx_kl, ent)
                    sums += torch.tensor([float(v.detach()) * share for v in values_now], dtype=torch.float64)
                g.sum_grads(self._params)
                grad_norm = torch.nn.utils.clip_grad_norm_(self._params, s.max_grad_norm)
                self.optimizer.step()
                grad_norms += float(grad_norm)
                count += 1
        sums = g.sum(sums.to(self.device)).cpu() if g.world > 1 else sums
        out = {k: float(v) / max(count, 1) for k, v in zip(names, sums.tolist(), strict=True)}
        out["grad_norm"] = grad_norms / max(count, 1)
        return out

    # -- the loop
    def train(self) -> Any:
        """Run `iterations` PPO iterations, driving the callbacks like a transformers Trainer.

        A sandbox that cannot judge stops the run with one line; the rollouts so far are kept."""
        from rlvf.rewards.verifier import InfraFailureError

        s = self.settings
        self.model.eval()
        self._event("on_train_begin")
        try:
            if self.heldout is not None and s.eval_every:
                self._log({"heldout_pass1": self.heldout(self.model)})
            for it in range(1, s.iterations + 1):
                logs = self.step(it)
                self.state.global_step = it
                self.state.epoch = it / s.iterations
                if self.heldout is not None and s.eval_every and it % s.eval_every == 0:
                    logs["heldout_pass1"] = self.heldout(self.model)
                self._log(logs)
                self._event("on_step_end")
                if self.recorder is not None:
                    self.recorder.step_done(it)
        except InfraFailureError as e:
            raise UserError(str(e)) from None
        finally:
            if self.recorder is not None:
                self.recorder.close()
        self._event("on_train_end")
        return self.state

    def _log(self, logs: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        self.history.append({"step": self.state.global_step, **clean})
        self.state.log_history.append({**clean, "step": self.state.global_step})
        self._event("on_log", logs=clean)
