"""The sampling engine: n completions per task from any policy, as `Sample` records.

Two backends give the same records:

- ``hf`` (default): batched `model.generate` with left padding; prompts are sorted by
  length so a batch wastes little on padding; a stopping criterion ends each row as soon
  as its function is over (see `rlvf.generate.cleanup`), EOS, or a stop sequence.
- ``vllm``: used by ``backend="auto"`` when vllm is installed and a CUDA GPU is present.

Seeded: batch b of a run with seed s samples under torch seed (s, b), so the same
policy, tasks, settings and batch size give the same samples on the same machine.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rlvf.errors import UserError
from rlvf.generate.cleanup import body_stop_sequences, clean_completion, is_finished
from rlvf.generate.decode import sample_pruned, supports_pruning
from rlvf.records import Sample, Task
from rlvf.runtime import cpu_threads

BACKENDS = ("auto", "hf", "vllm")
CHAT_INSTRUCTION = (
    "Complete the following Python function. Answer with the whole function in one code block.\n\n"
)


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample; recorded in every Sample's `settings`."""

    n: int = 1
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0
    chat: bool = False  # wrap prompts in the tokenizer's chat template (instruct models)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UserError(f"sample: n must be at least 1 (got {self.n})")
        if self.temperature < 0:
            raise UserError(f"sample: temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise UserError(f"sample: top_p must be in (0, 1] (got {self.top_p})")
        if self.max_new_tokens < 1:
            raise UserError(f"sample: max_new_tokens must be at least 1 (got {self.max_new_tokens})")
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass
class Throughput:
    """What a sampling run cost."""

    backend: str
    samples: int = 0
    tokens: int = 0
    seconds: float = 0.0
    format_errors: int = 0
    finish: dict[str, int] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        fin = ", ".join(f"{k} {v}" for k, v in sorted(self.finish.items()))
        return (
            f"sampled {self.samples} completions ({self.tokens} tokens) in {self.seconds:.1f}s with {self.backend}: "
            f"{self.samples_per_s:.2f} samples/s, {self.tokens_per_s:.0f} tokens/s; "
            f"finish: {fin or '-'}; missing entry point: {self.format_errors}"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(samples_per_s=round(self.samples_per_s, 3), tokens_per_s=round(self.tokens_per_s, 1))
        return d


@dataclass(frozen=True)
class _Raw:
    text: str
    n_tokens: int
    finish: str
    # The sampled ids (EOS kept when emitted, padding dropped): what an RL trainer scores.
    # Every id is the policy's own, so the completion mask is all ones. Empty from vLLM.
    token_ids: tuple[int, ...] = ()
    # Log-probability of each of token_ids under the sampling distribution; only when asked
    # (`HFBackend.run(..., logprobs=True)`, the pruning sampler), else empty.
    logprobs: tuple[float, ...] = ()


def _batch_seed(seed: int, batch: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{batch}".encode()).digest()[:4], "little")


def vllm_available() -> bool:
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _prompt_text(task: Task, tok, settings: SamplingSettings) -> str:
    if not settings.chat:
        return task.prompt
    if not getattr(tok, "chat_template", None):
        raise UserError("sample: --chat needs a tokenizer with a chat template (an instruct model)")
    msgs = [{"role": "user", "content": CHAT_INSTRUCTION + "```python\n" + task.prompt + "```"}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


class _FunctionEnd:
    """Stopping criterion: a row is done when its function ended or a stop sequence appeared.

    Decodes only the new token of each unfinished row per step and keeps the texts; a token's
    text is decoded once per batch and reused (the same string `batch_decode` gives for it).
    """

    def __init__(self, tok, prompts: list[str], entry_points: list[str | None], stop: Sequence[str]):
        self.tok = tok
        self.prompts = prompts
        self.entry_points = entry_points
        self.stop = tuple(stop)
        self.texts = [""] * len(prompts)
        self.done: list[bool] = [False] * len(prompts)
        self.stopped: list[bool] = [False] * len(prompts)
        self._pieces: dict[int, str] = {}

    def feed(self, rows: list[int], tokens: list[int]) -> list[bool]:
        """Append each row's new token; whether that row is now done (EOS, function end, stop)."""
        known = self._pieces
        new = list(dict.fromkeys(t for t in tokens if t not in known))
        if new:
            pieces = self.tok.batch_decode([[t] for t in new], skip_special_tokens=True)
            known.update(zip(new, pieces, strict=True))
        eos = self.tok.eos_token_id
        out = []
        for i, last in zip(rows, tokens, strict=True):
            piece = known[last]
            if last == eos:
                self.done[i] = True
            elif not self.done[i]:
                at_line_start = not self.texts[i] or self.texts[i].endswith("\n")
                self.texts[i] += piece
                # Clean-up only cuts at line starts, so only then (or for stop strings) is a check due.
                if (self.stop or at_line_start or "\n" in piece) and is_finished(
                    self.prompts[i], self.texts[i], self.entry_points[i], self.stop
                ):
                    self.done[i] = self.stopped[i] = True
            out.append(self.done[i])
        return out

    def __call__(self, input_ids, scores, **kwargs):
        """The `model.generate` stopping-criterion interface."""
        import torch

        rows = [i for i, d in enumerate(self.done) if not d]
        if rows:
            self.feed(rows, input_ids[rows, -1].tolist())
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def _encode(tok, prompts: list[str]) -> Any:
    """`tok(prompts, padding=True)` as tensors, tokenizing each distinct prompt once (a batch
    holds n samples of each prompt)."""
    distinct = list(dict.fromkeys(prompts))
    ids = dict(zip(distinct, tok(distinct, add_special_tokens=False)["input_ids"], strict=True))
    return tok.pad({"input_ids": [ids[p] for p in prompts]}, padding=True, return_tensors="pt")


class HFBackend:
    """Batched `generate` with left padding on a loaded (model, tokenizer)."""

    name = "hf"

    def __init__(self, model, tok, batch_size: int = 64, prune: bool | None = None):
        self.model = model
        self.tok = tok
        self.batch_size = batch_size
        # Drop finished rows as they stop (rlvf.generate.decode); else plain `model.generate`.
        self.prune = supports_pruning(model) if prune is None else prune

    def run(
        self,
        prompts: list[str],
        entry_points: list[str | None],
        settings: SamplingSettings,
        bar=None,
        logprobs: bool = False,
        row_seeds: Sequence[int] | None = None,
        shard: tuple[int, int] | None = None,
        on_row: Callable[[int, _Raw], None] | None = None,
    ) -> list[_Raw]:
        """One completion per prompt (callers repeat prompts for n samples); `logprobs` also
        keeps each sampled token's log-probability (RL trainers; needs the pruning sampler).

        `row_seeds` gives every row its own random stream (a row's sample then does not depend
        on its batch-mates or the batch layout).

        `shard` (rank, world) samples only batches b with b % world == rank, and returns one
        entry per prompt, None for the rows of other ranks' batches: each batch is seeded on
        its own, so the ranks' rows together are exactly one process's.

        `on_row(i, raw)` gets each prompt's record as soon as its row stops (the pruning
        sampler reports a row that ends early while the rest of its batch goes on), so a
        caller can judge it while the others are still sampled (RL rewards).
        """
        tok, model = self.tok, self.model
        if (logprobs or row_seeds is not None) and not self.prune:
            raise ValueError(
                "sample: log-probs and per-row seeds need the pruning sampler (a decoder-only model)"
            )
        if tok.padding_side != "left" or tok.pad_token_id is None:
            raise UserError(
                "sample: the tokenizer must pad on the left and have a pad token (use load_policy)"
            )
        distinct = list(dict.fromkeys(prompts))  # n samples of a prompt: tokenized once
        size = dict(
            zip(distinct, map(len, tok(distinct, add_special_tokens=False)["input_ids"]), strict=True)
        )
        lengths = [size[p] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
        out: list[_Raw | None] = [None] * len(prompts)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with cpu_threads(str(device)):
                self._run_batches(
                    prompts,
                    entry_points,
                    settings,
                    order,
                    out,
                    device,
                    bar,
                    logprobs,
                    row_seeds,
                    on_row=on_row,
                    shard=shard,
                )
        finally:
            model.train(was_training)
        if shard is not None:
            return out  # type: ignore[return-value]
        return [o for o in out if o is not None]

    def _generate(self, enc, settings: SamplingSettings, crit: _FunctionEnd) -> list[list[int]]:
        """The same batch through `model.generate` (the whole batch runs until its last row ends)."""
        sample = settings.temperature > 0
        gen_kwargs: dict[str, Any] = {"do_sample": sample, "max_new_tokens": settings.max_new_tokens}
        if sample:
            gen_kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        seqs = self.model.generate(
            **enc,
            **gen_kwargs,
            stopping_criteria=[crit],
            pad_token_id=self.tok.pad_token_id,
            eos_token_id=self.tok.eos_token_id,
        )
        return seqs[:, enc["input_ids"].shape[1] :].tolist()

    def _run_batches(
        self,
        prompts,
        entry_points,
        settings,
        order,
        out,
        device,
        bar,
        want_lp=False,
        row_seeds=None,
        on_row=None,
        shard=None,
    ) -> None:
        import torch

        tok, model = self.tok, self.model

        def done_early(idx: list[int], crit: _FunctionEnd, lps: list[list[float]] | None):
            """sample_pruned's `on_done` for this batch: the row's record, handed on at once."""

            def report(r: int, tokens: list[int]) -> None:
                i = idx[r]
                out[i] = self._raw(tokens, crit.stopped[r], lps[r] if lps is not None else None)
                on_row(i, out[i])

            return report

        for b, start in enumerate(range(0, len(order), self.batch_size)):
            if shard is not None and b % shard[1] != shard[0]:
                continue  # another rank's batch
            idx = order[start : start + self.batch_size]
            batch_prompts = [prompts[i] for i in idx]
            enc = _encode(tok, batch_prompts).to(device)
            crit = _FunctionEnd(tok, batch_prompts, [entry_points[i] for i in idx], settings.stop)
            torch.manual_seed(_batch_seed(settings.seed, b))
            gens = None
            if row_seeds is not None:
                gens = [torch.Generator(device=device).manual_seed(int(row_seeds[i])) for i in idx]
            lps: list[list[float]] | None = [] if want_lp else None
            with torch.inference_mode():
                if self.prune:
                    new = sample_pruned(
                        model,
                        enc["input_ids"],
                        enc["attention_mask"],
                        max_new_tokens=settings.max_new_tokens,
                        temperature=settings.temperature,
                        top_p=settings.top_p,
                        eos_token_id=tok.eos_token_id,
                        finished=crit.feed,
                        logprobs=lps,
                        generators=gens,
                        on_done=done_early(idx, crit, lps) if on_row is not None else None,
                    )
                else:
                    new = self._generate(enc, settings, crit)
            for r, i in enumerate(idx):
                if out[i] is None:
                    out[i] = self._raw(new[r], crit.stopped[r], lps[r] if lps is not None else None)
                    if on_row is not None:
                        on_row(i, out[i])
            if bar is not None:
                bar.update(len(idx))

    def _raw(self, ids: list[int], stopped: bool, lps: list[float] | None) -> _Raw:
        """One row's record from its new tokens (EOS kept when emitted)."""
        tok = self.tok
        eos_at = None
        if tok.eos_token_id in ids:
            eos_at = ids.index(tok.eos_token_id)
            ids = ids[:eos_at]
            finish = "eos"
        elif stopped:
            finish = "stop"
        else:
            finish = "length"
        if tok.pad_token_id != tok.eos_token_id:
            while ids and ids[-1] == tok.pad_token_id:
                ids = ids[:-1]
        text = tok.decode(ids, skip_special_tokens=True)
        sampled = (*ids, tok.eos_token_id) if finish == "eos" else tuple(ids)
        lp: tuple[float, ...] = ()
        if lps is not None:  # aligned with `sampled` (trailing pads dropped, EOS kept)
            lp = tuple(lps[: len(ids)]) + ((lps[eos_at],) if eos_at is not None else ())
        return _Raw(text=text, n_tokens=len(ids), finish=finish, token_ids=sampled, logprobs=lp)


class VLLMBackend:
    """vLLM's offline `LLM.generate` (GPU). Coded against vLLM's documented API; see the closing note."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        tokenizer,
        revision: str | None = None,
        adapter: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
    ):
        from vllm import LLM

        self.tok = tokenizer
        self.adapter = adapter
        self.llm = LLM(
            model=model_path,
            revision=revision,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            enable_lora=adapter is not None,
            max_lora_rank=64,
        )

    def run(
        self, prompts: list[str], entry_points: list[str | None], settings: SamplingSettings, bar=None
    ) -> list[_Raw]:
        from vllm import SamplingParams

        lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, self.adapter)
        params = []
        for i, p in enumerate(prompts):
            stop = list(settings.stop) + body_stop_sequences(p)
            params.append(
                SamplingParams(
                    n=1,
                    temperature=settings.temperature,
                    top_p=settings.top_p if settings.temperature > 0 else 1.0,
                    max_tokens=settings.max_new_tokens,
                    stop=stop or None,
                    seed=_batch_seed(settings.seed, i),
                )
            )
        results = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=bar is not None)
        out = []
        for res in results:
            c = res.outputs[0]
            if c.finish_reason == "length":
                finish = "length"
            elif c.stop_reason is None:
                finish = "eos"
            else:
                finish = "stop"
            out.append(_Raw(text=c.text, n_tokens=len(c.token_ids), finish=finish))
        if bar is not None:
            bar.update(len(prompts))
        return out


def _make_backend(policy, backend: str, batch_size: int):
    """(backend object, policy label) for a PolicySpec / name / (model, tokenizer) pair."""
    from rlvf.models.loader import PolicySpec, load_policy, load_tokenizer, resolve_base

    if backend not in BACKENDS:
        raise UserError(f"sample: backend '{backend}' is not one of {', '.join(BACKENDS)}")
    if isinstance(policy, tuple):
        if backend == "vllm":
            raise UserError("sample: the vllm backend loads from a path, not from an in-memory model")
        model, tok = policy
        return HFBackend(model, tok, batch_size), getattr(model, "name_or_path", "")
    spec = PolicySpec(base=policy) if isinstance(policy, str) else policy
    use_vllm = backend == "vllm" or (backend == "auto" and vllm_available() and not spec.load_in_4bit)
    if use_vllm:
        if not vllm_available():
            raise UserError("sample: the vllm backend needs vllm installed and a CUDA GPU")
        tok = load_tokenizer(spec)
        return VLLMBackend(
            resolve_base(spec.base), tok, spec.revision, spec.adapter, spec.dtype, spec.trust_remote_code
        ), spec.name
    model, tok = load_policy(spec)
    return HFBackend(model, tok, batch_size), spec.name


def generate(
    policy,
    tasks: Sequence[Task],
    settings: SamplingSettings | None = None,
    *,
    backend: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
    policy_name: str | None = None,
    clean: bool = True,
    shard: tuple[int, int] | None = None,
    on_sample: Callable[[int, Sample], None] | None = None,
) -> tuple[list[Sample], Throughput]:
    """Sample `settings.n` completions per task; returns (samples, throughput).

    `policy` is a `PolicySpec`, a policy name ('embedded', a hub id, a directory) or an
    already loaded ``(model, tokenizer)`` pair (for training loops). Samples come back
    ordered by task, then index. `shard` (rank, world): only that rank's share of the
    batches (`HFBackend.run`), for the ranks of an external launch. `on_sample(k, sample)` gets
    row k's sample (k: task index x n + sample index) as soon as the row stops sampling (hf;
    other backends: once they return), so a caller can judge it while the rest are sampled.
    """
    from tqdm.auto import tqdm

    settings = settings or SamplingSettings()
    tasks = list(tasks)
    empty = [t.task_id for t in tasks if not t.prompt]
    if empty:  # nothing to condition on (and an empty batch the model cannot run)
        raise UserError(f"sample: task '{empty[0]}' has an empty prompt ({len(empty)} such task(s))")
    engine, label = _make_backend(policy, backend, batch_size)
    label = policy_name or label
    prompts = [_prompt_text(t, engine.tok, settings) for t in tasks]
    flat_prompts = [p for p in prompts for _ in range(settings.n)]
    flat_eps = [t.entry_point or None for t in tasks for _ in range(settings.n)]
    recorded = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_new_tokens": settings.max_new_tokens,
        "stop": list(settings.stop),
        "backend": engine.name,
        "chat": settings.chat,
    }
    if engine.name == "hf":
        recorded["batch_size"] = batch_size
    stats = Throughput(backend=engine.name)
    t0 = time.perf_counter()
    if shard is not None and engine.name != "hf":
        raise UserError(f"sample: sharing batches among ranks needs the hf backend, not {engine.name}")
    total = len(flat_prompts)
    if shard is not None and engine.name == "hf":  # this rank's rows only
        starts = range(0, total, batch_size)
        total = sum(min(batch_size, total - a) for b, a in enumerate(starts) if b % shard[1] == shard[0])
    built: dict[int, Sample] = {}

    def build(k: int, raw: _Raw) -> Sample:
        """Row k's sample (cleaned as eval judges it), counted once in the throughput."""
        task = tasks[k // settings.n]
        text, extra = raw.text, {}
        if clean:
            c = clean_completion(task.prompt, raw.text, task.entry_point or None, settings.stop)
            text = c.completion
            if c.format_error:
                extra["format_error"] = c.format_error
                stats.format_errors += 1
        stats.samples += 1
        stats.tokens += raw.n_tokens
        stats.finish[raw.finish] = stats.finish.get(raw.finish, 0) + 1
        built[k] = Sample(
            task_id=task.task_id,
            index=k % settings.n,
            completion=text,
            policy=label,
            seed=settings.seed,
            settings={**recorded, **extra},
            n_tokens=raw.n_tokens,
            finish=raw.finish,
        )
        if on_sample is not None:
            on_sample(k, built[k])
        return built[k]

    kwargs: dict[str, Any] = {}
    if shard is not None:
        kwargs["shard"] = shard
    if engine.name == "hf" and on_sample is not None:
        kwargs["on_row"] = build  # each row's sample as soon as the row stops
    with tqdm(total=total, desc="sample", unit="sample", disable=not progress) as bar:
        raws = engine.run(flat_prompts, flat_eps, settings, bar=bar, **kwargs)
    stats.seconds = time.perf_counter() - t0
    samples = [
        built[k] if k in built else build(k, raw)
        for k, raw in enumerate(raws)
        if raw is not None  # None: another rank's row
    ]
    stats.finish = dict(sorted(stats.finish.items()))  # rows stop in any order; the record does not
    if progress:
        print(stats.summary(), file=sys.stderr)
    return samples, stats


def generate_samples(
    policy,
    tasks: Sequence[Task],
    *,
    n: int = 1,
    seed: int = 0,
    temperature: float = 0.8,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    stop: Sequence[str] = (),
    chat: bool = False,
    backend: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
    policy_name: str | None = None,
) -> list[Sample]:
    """`generate` with keyword settings, returning only the samples."""
    settings = SamplingSettings(
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        stop=tuple(stop),
        seed=seed,
        chat=chat,
    )
    samples, _ = generate(
        policy,
        tasks,
        settings,
        backend=backend,
        batch_size=batch_size,
        progress=progress,
        policy_name=policy_name,
    )
    return samples


@dataclass
class TokenRollout:
    """Sampled completions as the padded tensors an RL trainer scores.

    input_ids / attention_mask: (rows, prompt_width + completion_width), each prompt
    left-padded to prompt_width (as the sampler batched it), each completion right-padded.
    completion_ids / completion_mask / sampling_logprobs: (rows, completion_width); the mask
    is 1 on the policy's own tokens (EOS included when it stopped on EOS), 0 on padding.
    """

    raws: list[_Raw]
    input_ids: Any
    attention_mask: Any
    completion_ids: Any
    completion_mask: Any
    sampling_logprobs: Any
    prompt_width: int

    @property
    def lengths(self) -> list[int]:
        return [int(x) for x in self.completion_mask.sum(dim=1).tolist()]


def pack_rollout(
    prompt_ids: Sequence[Sequence[int]], raws: Sequence[_Raw], pad_id: int, device: Any = "cpu"
) -> TokenRollout:
    """Pad prompts on the left and completions on the right into one batch (see TokenRollout).
    An empty completion keeps one padded position (mask 0) so every row has a shape."""
    import torch

    if len(prompt_ids) != len(raws):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(raws)} completions")
    pw = max((len(p) for p in prompt_ids), default=0)
    cw = max([len(r.token_ids) for r in raws] + [1])
    n = len(raws)
    ids = torch.full((n, pw + cw), pad_id, dtype=torch.long)
    attn = torch.zeros((n, pw + cw), dtype=torch.long)
    cmask = torch.zeros((n, cw), dtype=torch.long)
    lps = torch.zeros((n, cw), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompt_ids, raws, strict=True)):
        k = len(r.token_ids)
        ids[i, pw - len(p) : pw] = torch.tensor(list(p), dtype=torch.long)
        attn[i, pw - len(p) : pw] = 1
        if k:
            ids[i, pw : pw + k] = torch.tensor(r.token_ids, dtype=torch.long)
            attn[i, pw : pw + k] = 1
            cmask[i, :k] = 1
            if r.logprobs:
                lps[i, :k] = torch.tensor(r.logprobs, dtype=torch.float32)
    return TokenRollout(
        raws=list(raws),
        input_ids=ids.to(device),
        attention_mask=attn.to(device),
        completion_ids=ids[:, pw:].to(device),
        completion_mask=cmask.to(device),
        sampling_logprobs=lps.to(device),
        prompt_width=pw,
    )
