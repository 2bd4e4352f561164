"""The one training lifecycle every training method runs, and the stage table.

    resolve inputs -> open the run -> make sure the base exists -> prefetch the base's eval
    -> build the data (the method) -> train (the method's trainer, `train_policy`)
    -> evaluate, compare, log the model, register (`finish_training`) -> clean up

A method whose model is not a policy (a reward model: `Training.policy` False) skips the
base's eval and finishes with its own `Training.finish` (its own evaluation, its own
registered model). A method that asks for several rounds (`Training.rounds`) runs them as
nested runs of the one run opened here (`rlvf.pipeline.rounds`).

Inputs are checked before a run is opened where that is possible (a missing pairs file, a
run id that does not exist), so a typo does not leave a run behind. Any failure after that
ends the run FAILED (KILLED on Ctrl-C / SIGTERM) with the error recorded (`start_run`). The
run's folder (checkpoints, the trained policy) is removed when it finishes, and kept when it
did not and has a checkpoint: `--resume RUN_ID` continues from there (`rlvf.pipeline.resume`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvf.pipeline.base import base_revision, ensure_base, policy_spec, prefetch_base_eval
from rlvf.pipeline.finish import finish_training
from rlvf.pipeline.inputs import PolicySource, init_label, resolve_init
from rlvf.pipeline.result import StageResult, log


@dataclass
class DataContext:
    """What a method's `build_data` gets: the config, the open run, the policy to start from
    (None: the base) and what its `resolve` returned before the run opened. `state` is the
    method's own: what build_data keeps for its `Training.finish` (e.g. held-out rows)."""

    cfg: Any
    run: Any
    init: PolicySource | None
    inputs: Any
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def policy_name(self) -> str:
        return init_label(self.cfg, self.init)

    def init_spec(self) -> Any:
        """The model.init policy's PolicySpec for sampling (loaded where it samples, so the
        ranks of an external launch can share the batches), or None for the base."""
        return policy_spec(self.cfg, self.init) if self.init else None

    def load_init(self) -> Any:
        """The model.init policy loaded for sampling, or None for the base (whose samples are cached)."""
        from rlvf.models.loader import load_policy

        return load_policy(policy_spec(self.cfg, self.init)) if self.init else None


def cleanup(out: Path, cfg: Any, run: Any, finished: bool) -> None:
    """Remove the run's folder unless the user chose where it goes, it holds the run's spool
    (its tracking server went away), or the run did not finish and has a checkpoint to
    resume from (then say how)."""
    from rlvf.tracking.spool import spooled
    from rlvf.train.common import last_checkpoint

    if spooled(run):
        return
    if not finished and last_checkpoint(out / "trainer"):
        log(f"checkpoints kept in {out}: continue with the same command and --resume {run.run_id}")
    elif not cfg["tracking.output_dir"]:
        shutil.rmtree(out, ignore_errors=True)


def run_training(method: Any, cfg: Any) -> StageResult:
    """Run training method `method` (an `rlvf.methods.Method`) for `cfg`; see the module doc."""
    from rlvf.methods import Inputs
    from rlvf.pipeline import resume as resuming
    from rlvf.tracking.runs import start_run
    from rlvf.train.common import output_dir, train_policy

    training = method.training
    inputs = training.resolve(cfg) if training.resolve else Inputs()
    init = resolve_init(cfg["model.init"])
    parent = inputs.parent_run_id or (init.run_id if init else None)
    resume = resuming.target(cfg)
    t0 = time.perf_counter()
    n_rounds = training.rounds(cfg) if training.rounds else 1
    with start_run(
        cfg,
        method.kind,
        parent_run_id=parent,
        base_revision=base_revision(cfg),
        resume=resume.run_id if resume else None,
    ) as run:
        res = StageResult(run.run_id, method.name, cfg.hash)
        ensure_base(cfg, run)
        if training.policy:
            prefetch_base_eval(cfg)
        if n_rounds > 1:
            from rlvf.pipeline.rounds import run_rounds

            run_rounds(method, cfg, run, res, init=init, inputs=inputs, n_rounds=n_rounds)
        else:
            out = resume.output_dir if resume else output_dir(cfg, run.run_id)
            run.tags(
                {resuming.TAG_OUTPUT_DIR: str(out), resuming.TAG_RESUMED: resume.step if resume else None}
            )
            finished = False
            try:
                ctx = DataContext(cfg, run, init, inputs)
                rows = training.build_data(ctx)
                res.n_examples = len(rows)
                log(f"training {training.title} on {len(rows)} {training.noun}")
                if resume:
                    log(f"resuming run {run.run_id} from step {resume.step} ({resume.checkpoint})")
                trained = train_policy(
                    method, cfg, rows, out, run=run, init_dir=init.directory if init else None
                )
                log(f"trained {trained.steps} steps in {trained.wall_s:.1f}s")
                if training.finish is not None:
                    training.finish(ctx, trained, res)
                else:
                    finish_training(cfg, run, trained, res)
                finished = True
            finally:
                cleanup(out, cfg, run, finished)
    res.seconds = time.perf_counter() - t0
    return res


def with_threads(fn: Callable[[Any], StageResult], name: str) -> Callable[[Any], StageResult]:
    """A stage with the CPU thread settings of cfg.model.device and progress bars per
    cfg.tracking.progress, verifying with the backend cfg.verify.backend names (every
    verification inside goes through `rlvf.verify.verify_samples`, which picks it)."""

    def stage(cfg: Any) -> StageResult:
        from rlvf.runtime import cpu_threads
        from rlvf.train.common import quiet
        from rlvf.verify.backend import use_config

        with cpu_threads(cfg["model.device"]), quiet(cfg["tracking.progress"]), use_config(cfg):
            return fn(cfg)

    stage.__name__ = f"run_{name}"
    stage.__doc__ = fn.__doc__
    return stage


def stage_for(name: str) -> Callable[[Any], StageResult]:
    """The stage of registered method `name`: its own `run`, or the training lifecycle."""
    from rlvf.methods import get

    method = get(name)
    if method.run is not None:
        return with_threads(method.run, name)
    return with_threads(lambda cfg: run_training(method, cfg), name)


class Stages(Mapping[str, Callable[[Any], StageResult]]):
    """method name -> stage, for every registered method (read from the registry on each use)."""

    def __getitem__(self, name: str) -> Callable[[Any], StageResult]:
        from rlvf.methods import names

        if name not in names():
            raise KeyError(name)
        return stage_for(name)

    def __iter__(self) -> Iterator[str]:
        from rlvf.methods import names

        return iter(names())

    def __len__(self) -> int:
        from rlvf.methods import names

        return len(names())


STAGES = Stages()
