"""Multi-seed evaluation: generate -> verify -> `EvalResult`, one per suite.

Every seed samples `n_samples` completions per task with that seed; the `EvalResult` keeps
per-task pass counts, categories, behaviour flags and partial credit per seed, so pass@1
is reported as mean and std over seeds (seed 002: one seed on a small benchmark gives false
confidence) and the report can compute head-to-head task lists from the vectors.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvf.errors import UserError
from rlvf.records import EvalResult, Outcome, Sample, Task


@dataclass(frozen=True)
class EvalSettings:
    """Everything besides the policy that decides an evaluation's numbers."""

    suites: tuple[str, ...] = ("procedural",)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_samples: int = 1
    per_cell: int = 1
    limit: int | None = None
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 64
    timeout: float = 3.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "suites", tuple(self.suites))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.suites:
            raise UserError("eval: no suites given")
        if not self.seeds:
            raise UserError("eval: no seeds given")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"eval: seeds repeat ({list(self.seeds)})")

    @classmethod
    def from_config(cls, cfg: Any) -> EvalSettings:
        return cls(
            suites=tuple(cfg["eval.suites"]),
            seeds=tuple(cfg["eval.seeds"]),
            n_samples=cfg["eval.n_samples"],
            per_cell=cfg["eval.per_cell"],
            limit=cfg["eval.limit"],
            temperature=cfg["eval.temperature"],
            top_p=cfg["eval.top_p"],
            max_new_tokens=cfg["eval.max_new_tokens"],
            batch_size=cfg["eval.batch_size"],
            timeout=cfg["verify.timeout"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "suites": list(self.suites),
            "seeds": list(self.seeds),
            "n_samples": self.n_samples,
            "per_cell": self.per_cell,
            "limit": self.limit,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
            "timeout": self.timeout,
        }


@dataclass
class SuiteEval:
    """One suite's evaluation: the result plus the per-sample records behind it."""

    result: EvalResult
    samples: list[Sample] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # Outcome dicts + "seed"
    seconds: float = 0.0
    # rank -> the seeds it evaluated, when the ranks of an external launch shared the work
    ranks: dict[int, list[int]] = field(default_factory=dict)


def load_tasks(
    suite: str, per_cell: int = 1, limit: int | None = None, seed: int | None = None
) -> list[Task]:
    """The tasks of `suite`; with `limit`, `limit` of them evenly spaced through the suite (the
    procedural suite is ordered by type, so its first N would all be one or two types).
    An empty suite is a UserError."""
    from rlvf.tasks import load_suite

    tasks = list(load_suite(suite, seed=seed, per_cell=per_cell))
    if limit is not None and limit < len(tasks):
        tasks = [tasks[(i * len(tasks)) // limit] for i in range(limit)]
    if not tasks:
        raise UserError(f"suite '{suite}' has no tasks")
    return tasks


def build_result(
    suite: str,
    policy: str,
    tasks: Sequence[Task],
    per_seed: dict[int, tuple[Sequence[Sample], Sequence[Outcome]]],
    n_samples: int,
    settings: dict[str, Any],
) -> EvalResult:
    """An EvalResult from each seed's samples and outcomes."""
    ids = [t.task_id for t in tasks]
    pos = {tid: i for i, tid in enumerate(ids)}
    correct: dict[str, list[int]] = {}
    categories: dict[str, list[list[str]]] = {}
    flags: dict[str, list[list[str]]] = {}
    partial: dict[str, list[float]] = {}
    for seed, (_samples, outcomes) in per_seed.items():
        k = str(seed)
        c = [0] * len(ids)
        cats: list[list[str]] = [[] for _ in ids]
        fl: list[list[str]] = [[] for _ in ids]
        part: list[list[float]] = [[] for _ in ids]
        for o in sorted(outcomes, key=lambda o: (pos.get(o.task_id, -1), o.index)):
            i = pos.get(o.task_id)
            if i is None:
                continue
            c[i] += int(o.passed)
            cats[i].append(o.category)
            fl[i].append("+".join(o.flags))
            part[i].append(o.partial_credit)
        correct[k] = c
        categories[k] = cats
        flags[k] = fl
        partial[k] = [sum(p) / len(p) if p else 0.0 for p in part]
    meta = {}
    for t in tasks:
        m = {key: t.meta[key] for key in ("type", "difficulty") if key in t.meta}
        if m:
            meta[t.task_id] = m
    return EvalResult(
        suite=suite,
        policy=policy,
        seeds=[int(s) for s in per_seed],
        n_samples=n_samples,
        task_ids=ids,
        correct=correct,
        categories=categories,
        flags=flags,
        partial=partial,
        task_meta=meta,
        settings=settings,
    )


def _sample_and_verify(
    policy: Any,
    tasks: list[Task],
    seed: int,
    settings: EvalSettings,
    policy_name: str,
    workers: int | None,
    progress: bool,
) -> tuple[list[Sample], list[Outcome]]:
    """One seed of one suite: n samples per task under that seed, judged in the sandbox (each
    sample as soon as its row stops: `rlvf.verify.stream`)."""
    from rlvf.generate import SamplingSettings
    from rlvf.verify.stream import sample_and_judge

    sampling = SamplingSettings(
        n=settings.n_samples,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=settings.max_new_tokens,
        seed=seed,
    )
    return sample_and_judge(
        policy,
        tasks,
        sampling,
        batch_size=settings.batch_size,
        policy_name=policy_name,
        timeout=settings.timeout,
        workers=workers,
        progress=progress,
    )


def _seeds_job(
    spec: Any, suite: str, seeds: list[int], settings: EvalSettings, name: str, queue: Any
) -> None:
    """Child process: some seeds of a suite, sent back whole (or the error, as one line)."""
    from rlvf.console import quiet_libraries
    from rlvf.models.loader import load_policy
    from rlvf.runtime import die_with_parent

    die_with_parent()
    quiet_libraries()
    try:
        policy = load_policy(spec)
        policy[0].eval()
        tasks = load_tasks(suite, settings.per_cell, settings.limit)
        queue.put(
            ("ok", {s: _sample_and_verify(policy, tasks, s, settings, name, None, False) for s in seeds})
        )
    except BaseException as e:  # reported to the parent, which then evaluates these seeds itself
        queue.put(("error", f"{type(e).__name__}: {e}"))


# A second process pays for a fresh interpreter, torch and the model (5-10 s of CPU): only
# when its seeds sample at least this many completions does it save wall time.
MIN_SPLIT_SAMPLES = 200


def eval_processes(policy: Any, settings: EvalSettings, n_tasks: int | None = None) -> int:
    """How many processes share an evaluation: 2 for a saved policy on a CPU with 2+ cores.

    Seeds are independent (each samples under its own torch seeds), so splitting them
    between processes gives the same numbers in less wall time; RLVF_EVAL_PROCESSES=1 turns
    it off (=2 forces it). A GPU, an in-memory model, a single seed or a small evaluation
    (`n_tasks` x samples x the second process's seeds under MIN_SPLIT_SAMPLES) keeps one.
    """
    import os

    from rlvf.models.loader import PolicySpec, resolve_device

    want = os.environ.get("RLVF_EVAL_PROCESSES", "").strip()
    if want:
        return max(1, int(want))
    import multiprocessing

    if not isinstance(policy, PolicySpec) or len(settings.seeds) < 2 or (os.cpu_count() or 1) < 2:
        return 1
    if multiprocessing.current_process().daemon:  # e.g. the base-eval prefetch: no children allowed
        return 1
    if n_tasks is not None and n_tasks * settings.n_samples * (len(settings.seeds) // 2) < MIN_SPLIT_SAMPLES:
        return 1
    return 2 if resolve_device(policy.device) == "cpu" else 1


def _start_child(spec: Any, suite: str, seeds: list[int], settings: EvalSettings, name: str):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_seeds_job, args=(spec, suite, seeds, settings, name, queue), daemon=True)
    proc.start()
    return proc, queue


def _child_result(proc: Any, queue: Any) -> dict[int, Any] | None:
    import queue as queue_mod

    status, payload = "error", "no result"
    while True:
        try:
            status, payload = queue.get(timeout=1.0)
            break
        except queue_mod.Empty:
            if not proc.is_alive():
                payload = f"exit code {proc.exitcode}"
                break
        except (EOFError, OSError) as e:
            payload = str(e)
            break
    proc.join()
    if status != "ok":
        print(
            f"[rlvf] eval: the second eval process failed ({payload}); evaluating its seeds here",
            file=sys.stderr,
        )
        return None
    return payload


def _suite_eval(
    suite: str,
    tasks: list[Task],
    per_seed: dict[int, tuple[list[Sample], list[Outcome]]],
    settings: EvalSettings,
    policy_name: str,
    seconds: float,
) -> SuiteEval:
    """One suite's SuiteEval from every seed's samples and verdicts (in `per_seed`'s order)."""
    all_samples: list[Sample] = []
    all_outcomes: list[dict[str, Any]] = []
    for seed, (samples, outcomes) in per_seed.items():
        all_samples.extend(samples)
        all_outcomes.extend({**o.to_dict(), "seed": seed} for o in outcomes)
    result = build_result(
        suite,
        policy_name,
        tasks,
        per_seed,
        settings.n_samples,
        {**settings.to_dict(), "suites": [suite]},
    )
    return SuiteEval(result, all_samples, all_outcomes, seconds)


def eval_shard(
    spec: Any,
    settings: EvalSettings,
    seeds: list[int],
    policy_name: str,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, dict[int, tuple[list[Sample], list[Outcome]]]]:
    """Some seeds of every suite: what one rank of an external launch evaluates (each seed
    samples under its own torch seeds, so any rank gives the samples rank 0 would have)."""
    from rlvf.models.loader import load_policy

    policy = load_policy(spec)
    policy[0].eval()
    out: dict[str, dict[int, tuple[list[Sample], list[Outcome]]]] = {}
    for suite in settings.suites:
        tasks = load_tasks(suite, settings.per_cell, settings.limit)
        out[suite] = {
            s: _sample_and_verify(policy, tasks, s, settings, policy_name, workers, progress) for s in seeds
        }
    return out


def _evaluate_on_ranks(
    spec: Any, settings: EvalSettings, world: int, policy_name: str, workers: int | None, progress: bool
) -> dict[str, SuiteEval]:
    """`evaluate` as rank 0 of an external launch: seeds r, r+world, ... go to rank r, rank 0
    does its own, then gathers. Every seed is sampled exactly as one process would."""
    from rlvf.train import shards

    t0 = time.perf_counter()
    seeds = list(settings.seeds)
    share = {r: seeds[r::world] for r in range(world)}
    job = {"spec": spec, "settings": settings, "policy_name": policy_name, "workers": workers}
    pending = shards.scatter(
        f"eval of {policy_name}", eval_shard, {r: {**job, "seeds": share[r]} for r in range(1, world)}
    )
    mine = eval_shard(spec, settings, share[0], policy_name, workers, progress)
    got = {0: mine, **shards.gather(pending)}
    seconds = time.perf_counter() - t0
    out: dict[str, SuiteEval] = {}
    for suite in settings.suites:
        per_seed = {}
        for part in got.values():
            per_seed.update(part[suite])
        tasks = load_tasks(suite, settings.per_cell, settings.limit)
        ev = _suite_eval(
            suite,
            tasks,
            {s: per_seed[s] for s in seeds},
            settings,
            policy_name,
            seconds / len(settings.suites),
        )
        ev.ranks = share
        out[suite] = ev
    if progress:
        print(
            f"eval {', '.join(settings.suites)}: {len(seeds)} seeds x {settings.n_samples} samples "
            f"on {world} ranks in {seconds:.1f}s",
            file=sys.stderr,
        )
    return out


def evaluate(
    policy: Any,
    settings: EvalSettings,
    *,
    policy_name: str,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, SuiteEval]:
    """Evaluate `policy` (a PolicySpec, or a loaded ``(model, tokenizer)``) on every suite.

    With `eval_processes` > 1 the later seeds of each suite run in a second process while this
    one does the first ones; as rank 0 of an external launch (`rlvf.train.shards`), a saved
    policy's seeds are shared among the launch's ranks instead. The numbers are the same
    either way.
    """
    from rlvf.train import shards

    world = min(shards.ranks(), len(settings.seeds)) if not isinstance(policy, tuple) else 1
    if world > 1:
        return _evaluate_on_ranks(policy, settings, world, policy_name, workers, progress)
    spec = policy
    if not isinstance(policy, tuple):
        from rlvf.models.loader import load_policy

        policy = load_policy(policy)
    model = policy[0]
    was_training = model.training
    model.eval()
    out: dict[str, SuiteEval] = {}
    try:
        for suite in settings.suites:
            t0 = time.perf_counter()
            tasks = load_tasks(suite, settings.per_cell, settings.limit)
            seeds = list(settings.seeds)
            split = eval_processes(spec, settings, len(tasks)) > 1
            mine, theirs = (
                (seeds[: (len(seeds) + 1) // 2], seeds[(len(seeds) + 1) // 2 :]) if split else (seeds, [])
            )
            child = _start_child(spec, suite, theirs, settings, policy_name) if theirs else None
            per_seed: dict[int, tuple[list[Sample], list[Outcome]]] = {}
            for seed in mine:
                per_seed[seed] = _sample_and_verify(
                    policy, tasks, seed, settings, policy_name, workers, progress
                )
            if child is not None:
                got = _child_result(*child)
                for seed in theirs:
                    per_seed[seed] = (
                        got[seed]
                        if got is not None
                        else _sample_and_verify(policy, tasks, seed, settings, policy_name, workers, progress)
                    )
            per_seed = {s: per_seed[s] for s in seeds}
            out[suite] = _suite_eval(suite, tasks, per_seed, settings, policy_name, time.perf_counter() - t0)
            if progress:
                print(
                    f"eval {suite}: {len(tasks)} tasks x {len(settings.seeds)} seeds "
                    f"x {settings.n_samples} samples in {out[suite].seconds:.1f}s",
                    file=sys.stderr,
                )
    finally:
        model.train(was_training)
    return out
