"""The whole study in one command: `mlflow run . -e study --env-manager local` / `rlvf study`.

A multi-step workflow in the manner of MLflow's `multistep_workflow` example: one parent run
in a named experiment, each step a run of an entry point nested under it
(`mlflow.parentRunId`), then `rlvf export` of the steps' runs.

    base (eval) · sft · dpo · rm · ppo (verifier) · ppo_rm (verifier+rm, the rm step's RM)
    grpo · grpo_sft (model.init = the sft step's run) · kto · orpo · rloo · online_dpo
    dpo_iter (dpo.rounds=3) · scan_pairs (one pool) · dpo_n120 ... dpo_n1000 (nested subsets
    of that pool, same everything else) · export

- A step whose config_hash already has a FINISHED run of its method in the study's
  experiment is reused, not rerun (so a rerun after a failure does only what is missing).
- A failed step is one line on the console and a row of the parent's summary; the other
  steps go on, and the steps that need its run are skipped, saying why. The study exits 1
  when a step failed (its parent run ends FAILED, the summary says which).
- `--steps a,b` runs a subset (the steps they need are added); `--set STEP:key=value` sets a
  key for one step, `--set key=value` for every step whose method has that key.
- Runner `mlflow` (default): each step is `mlflow.projects.run` of its MLproject entry point,
  a process of its own (~10 s of imports each on 2 cores; it isolates each step's memory and
  crashes). Runner `inprocess`: the same stage called in this process (tests, installs without
  the MLproject).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from rlvf.errors import UserError
from rlvf.pipeline.result import log
from rlvf.tracking import schema

EXPORT = "export"
KIND_STUDY = "study"
TAG_STUDY = "rlvf.study"  # on the parent: the recipe; on nothing else
TAG_STEP = "rlvf.study.step"  # on a step's run: the step's name
DEFAULT_SCAN = (120, 250, 500, 1000)
SMALL_SCAN = (2, 4)  # the small recipe's pool is a handful of pairs
# The scaling scan's pool: twice the prompts and pairs per prompt of the default, so one pool
# holds the largest subset (1,000 pairs on the embedded default; 442 come from the default's).
SCAN_POOL = ("data.per_cell=6", "data.pairs_per_prompt=8")
# The small recipe's 12 prompts: its own samples (cached), more pairs per prompt (4 pairs).
SMALL_POOL = ("data.pairs_per_prompt=4",)


@dataclass(frozen=True)
class Step:
    """One step: a run of `method` with `overrides`, where `{step}` stands for that step's run id
    (which makes it a dependency)."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()

    @property
    def needs(self) -> tuple[str, ...]:
        import re

        return tuple(dict.fromkeys(m for o in self.overrides for m in re.findall(r"\{(\w+)\}", o)))


def study_steps(scan: Sequence[int] = DEFAULT_SCAN, pool: Sequence[str] = SCAN_POOL) -> list[Step]:
    """Every step of the study, in the order they run (`pool`: the scan's pairs settings)."""
    return [
        Step("base", "eval"),
        Step("sft", "sft"),
        Step("dpo", "dpo"),
        Step("rm", "rm"),
        Step("ppo", "ppo", ("ppo.reward=verifier",)),
        Step("ppo_rm", "ppo", ("ppo.reward=verifier+rm:{rm}",)),
        Step("grpo", "grpo"),
        Step("grpo_sft", "grpo", ("model.init={sft}",)),
        Step("kto", "kto"),
        Step("orpo", "orpo"),
        Step("rloo", "rloo"),
        Step("online_dpo", "online_dpo"),
        Step("dpo_iter", "dpo", ("dpo.rounds=3",)),
        Step("scan_pairs", "pairs", tuple(pool)),
        *(Step(f"dpo_n{n}", "dpo", ("data.pairs={scan_pairs}", f"data.n_pairs={n}")) for n in scan),
        Step(EXPORT, EXPORT),
    ]


def select_steps(steps: list[Step], wanted: str | None) -> list[Step]:
    """The steps named in `wanted` (comma-separated; `scan` = the pool and its DPO runs;
    empty or `all`: every step) and the steps they need, in study order."""
    names = [s.strip() for s in (wanted or "").split(",") if s.strip()]
    if not names or names == ["all"]:
        return steps
    by_name = {s.name: s for s in steps}
    chosen: set[str] = set()
    for n in names:
        if n == "scan":
            chosen.update(s.name for s in steps if s.name == "scan_pairs" or s.name.startswith("dpo_n"))
        elif n in by_name:
            chosen.add(n)
        else:
            raise UserError(f"study: unknown step '{n}' (steps: {', '.join(by_name)}, scan, all)")
    todo = list(chosen)
    while todo:
        for dep in by_name[todo.pop()].needs:
            if dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
    return [s for s in steps if s.name in chosen]


def split_overrides(sets: Sequence[str], steps: Sequence[Step]) -> tuple[list[str], dict[str, list[str]]]:
    """(overrides for every step, overrides per step) from `key=value` / `STEP:key=value`."""
    from rlvf.pipeline.cli import split_sets

    names = {s.name for s in steps} | {s.name for s in study_steps()}
    common: list[str] = []
    per: dict[str, list[str]] = {}
    for item in split_sets(sets):
        key = item.split("=", 1)[0]
        if ":" in key:
            step, rest = item.split(":", 1)
            if step not in names:
                raise UserError(f"study: --set {item}: no step '{step}'")
            per.setdefault(step, []).append(rest)
        else:
            common.append(item)
    _check_common(common, steps)
    return common, per


def _check_common(common: Sequence[str], steps: Sequence[Step]) -> None:
    """A key for every step must exist (a typo is not silently dropped by each step in turn);
    one that belongs to none of the chosen steps is said and left out (one `set` serves any
    subset)."""
    from rlvf.config.loader import ConfigError, _unknown
    from rlvf.config.schema import FIELDS, applies

    methods = {s.method for s in steps if s.method != EXPORT}
    for item in common:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. train.learning_rate=1e-4)")
        key = item.split("=", 1)[0].strip()
        if key not in FIELDS:
            raise _unknown(key)
        if methods and not any(applies(key, m) for m in methods):
            log(f"study: {key} applies to none of the steps ({', '.join(sorted(methods))}): left out")


@dataclass
class Outcome:
    """What became of one step (the parent's summary has one row each)."""

    step: str
    method: str
    status: str  # ran | reused | failed | skipped
    run_id: str | None = None
    run_name: str = ""
    config_hash: str = ""
    seconds: float = 0.0
    headline: str = ""
    reason: str = ""


@dataclass
class Study:
    recipe: str
    experiment: str
    runner: str
    steps: list[Step]
    common: list[str] = field(default_factory=list)
    per_step: dict[str, list[str]] = field(default_factory=dict)
    registry_dir: str = "registry"
    site_dir: str = "site"


# --------------------------------------------------------------------------- the store


def finished_run(client: Any, experiment_id: str, config_hash: str) -> Any:
    """The newest FINISHED run with `config_hash` in the experiment (the hash covers the method;
    a round of an iterative run shares its parent's hash and is not one), or None."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{schema.TAG_CONFIG_HASH}` = '{config_hash}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for r in runs:
        if r.data.tags.get(schema.TAG_KIND) not in ("round", KIND_STUDY):
            return r
    return None


@contextlib.contextmanager
def _hidden_env(*names: str) -> Iterator[None]:
    """Hide env vars for a while (a step in this process must not attach to the parent)."""
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        for n in names:
            os.environ.pop(n, None)
        os.environ.update(saved)


def _project_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "MLproject").is_file() else None


# --------------------------------------------------------------------------- running a step


def _run_inprocess(method: str, recipe: str, overrides: list[str]) -> str:
    from rlvf.pipeline.cli import run_entry

    with _hidden_env("MLFLOW_RUN_ID"):
        return run_entry(method, recipe, overrides).run_id


def _run_mlflow(method: str, recipe: str, overrides: list[str], experiment_id: str) -> tuple[str, bool]:
    """`mlflow run . -e METHOD` from this process: nested under the active run. (run id, ok)."""
    import mlflow
    import mlflow.projects

    root = _project_root()
    if root is None:
        raise UserError(
            "study: runner 'mlflow' needs rlvf's checkout (its MLproject); use --runner inprocess"
        )
    # MLflow's own INFO lines about each launch ("=== Running command ...") are not the study's story
    logging.getLogger("mlflow.projects").setLevel(logging.WARNING)
    sub = mlflow.projects.run(
        str(root),
        entry_point=method,
        # one parameter per key (`--data.n_pairs 120`): MLflow logs each as it is (shell-quoted
        # when it has to be, so lists go comma-separated), where one `set` would be quoted whole
        parameters={
            "recipe": recipe,
            **{k.strip(): _plain(v) for k, v in (o.split("=", 1) for o in overrides)},
        },
        env_manager="local",
        experiment_id=experiment_id,
        synchronous=False,
    )
    try:
        ok = sub.wait()
    except KeyboardInterrupt:
        sub.cancel()
        raise
    c = mlflow.MlflowClient()
    with contextlib.suppress(Exception):
        if c.get_run(sub.run_id).info.status == "RUNNING":  # what `mlflow run` itself would do
            c.set_terminated(sub.run_id, "FINISHED" if ok else "FAILED")
    return sub.run_id, ok


def _plain(value: str) -> str:
    """`[0, 1]` -> `0,1` (the same list to the config loader, no quotes in MLflow's params)."""
    v = value.strip()
    if v.startswith("[") and v.endswith("]") and "[" not in v[1:-1]:
        return ",".join(x.strip() for x in v[1:-1].split(","))
    return value


def _error_of(client: Any, run_id: str | None) -> str:
    from rlvf.tracking.runs import TAG_ERROR

    if not run_id:
        return ""
    with contextlib.suppress(Exception):
        return client.get_run(run_id).data.tags.get(TAG_ERROR, "")
    return ""


def _failed_child(client: Any, experiment_id: str, parent: str, config_hash: str) -> str | None:
    """The run a failed in-process step left (it carries the step's config_hash), if any."""
    with contextlib.suppress(Exception):
        runs = client.search_runs(
            [experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{schema.TAG_CONFIG_HASH}` = '{config_hash}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None
    return None


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    msg = lines[0] if lines else ""
    return msg if isinstance(e, UserError) else f"{type(e).__name__}: {msg}"


def _adopt(client: Any, run: Any, cfg: Any, step: str) -> None:
    """A reused run made before runs were named (or outside a study) gets the name a run of
    this config gets today and the step's tag, so the study reads the same either way."""
    from rlvf.tracking.runinfo import is_generated_name, run_name

    with contextlib.suppress(Exception):
        if is_generated_name(run.info.run_name):
            client.set_tag(run.info.run_id, "mlflow.runName", run_name(cfg))
        client.set_tag(run.info.run_id, TAG_STEP, step)


def run_step(study: Study, step: Step, done: dict[str, str], parent: str, experiment_id: str) -> Outcome:
    """Run (or reuse, or skip) one step; never raises for the step's own failure."""
    from rlvf.config import load_config
    from rlvf.config.schema import applies
    from rlvf.records import RecordError
    from rlvf.tracking.runs import client

    out = Outcome(step.name, step.method, "skipped")
    missing = [d for d in step.needs if d not in done]
    if missing:
        out.reason = f"needs {', '.join(missing)}, which did not finish"
        return out
    t0 = time.perf_counter()
    c = client()
    try:
        mine = [o.format(**done) for o in step.overrides]
        common = [o for o in study.common if applies(o.split("=", 1)[0].strip(), step.method)]
        overrides = [
            *common,
            *mine,
            *study.per_step.get(step.name, []),
            f"tracking.label={step.name}",
            f"tracking.experiment={study.experiment}",
        ]
        cfg = load_config(step.method, study.recipe, overrides)
        out.config_hash = cfg.hash
        prior = finished_run(c, experiment_id, cfg.hash)
        if prior is not None:
            out.status, out.run_id, out.run_name = "reused", prior.info.run_id, prior.info.run_name or ""
            out.headline = prior.data.tags.get("rlvf.headline", "")
            _adopt(c, prior, cfg, step.name)
            out.run_name = c.get_run(out.run_id).info.run_name or out.run_name
            return out
        log(f"study: step {step.name} ({step.method} #{cfg.hash[:6]})")
        if study.runner == "mlflow":
            rid, ok = _run_mlflow(step.method, study.recipe, overrides, experiment_id)
            out.run_id = rid
            if not ok:
                raise UserError(_error_of(c, rid) or "the entry point exited with an error")
        else:
            out.run_id = _run_inprocess(step.method, study.recipe, overrides)
        run = c.get_run(out.run_id)
        out.status, out.run_name = "ran", run.info.run_name or ""
        out.headline = run.data.tags.get("rlvf.headline", "")
        with contextlib.suppress(Exception):
            c.set_tag(out.run_id, TAG_STEP, step.name)
    except (UserError, RecordError, Exception) as e:
        out.status, out.reason = "failed", _one_line(e)
        if out.run_id is None and out.config_hash:
            out.run_id = _failed_child(c, experiment_id, parent, out.config_hash)
        if out.run_id:
            with contextlib.suppress(Exception):
                out.run_name = c.get_run(out.run_id).info.run_name or ""
    finally:
        out.seconds = time.perf_counter() - t0
    return out


def run_export(study: Study, outcomes: list[Outcome]) -> Outcome:
    """`rlvf export` of the steps' runs (policies, the RM and the base eval; not the pairs)."""
    from rlvf.report.collect import Selection
    from rlvf.report.export import export
    from rlvf.tracking.runs import client

    out = Outcome(EXPORT, EXPORT, "ran")
    t0 = time.perf_counter()
    ids = [o.run_id for o in outcomes if o.run_id and o.status in ("ran", "reused") and o.method != "pairs"]
    try:
        if not ids:
            raise UserError("no finished step to export")
        res = export(client(), Selection(runs=ids), study.registry_dir, study.site_dir)
        out.headline = (
            f"{res.get('runs', len(ids))} runs to {study.registry_dir}/ and {study.site_dir}/report/"
        )
    except Exception as e:
        out.status, out.reason = "failed", _one_line(e)
    out.seconds = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- the parent run


def _open_parent(study: Study) -> tuple[str, str]:
    """Start the parent run in the study's experiment; returns (run id, experiment id).

    Under `mlflow run -e study` MLflow has made a run already: it is the parent when it sits in
    the study's experiment (`mlflow run --experiment-name ...`); when it sits elsewhere (MLflow's
    "Default") it is deleted once `mlflow run` exits and the parent opens in the study's
    experiment instead."""
    import mlflow

    from rlvf.tracking import liveness
    from rlvf.tracking.runs import TAG_ERROR, client
    from rlvf.tracking.store import open_store, use_experiment

    open_store()
    wrapper = os.environ.pop("MLFLOW_RUN_ID", "").strip()
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    c = client()
    exp_id = use_experiment(study.experiment)
    if wrapper:
        w = c.get_run(wrapper)
        if w.info.experiment_id == exp_id:
            active = mlflow.start_run(run_id=wrapper)
            c.set_tag(wrapper, "mlflow.runName", _parent_name(study))
            return active.info.run_id, exp_id
    active = mlflow.start_run(run_name=_parent_name(study))
    if wrapper:
        c.set_tag(
            wrapper,
            TAG_ERROR,
            f"the study runs in experiment '{study.experiment}' as run {active.info.run_id}",
        )
        liveness.restore_after_wrapper(wrapper, "DELETE")
    return active.info.run_id, exp_id


def _parent_name(study: Study) -> str:
    return f"study @{study.recipe} ({len(study.steps)} steps)"


def summary_markdown(outcomes: list[Outcome]) -> str:
    rows = [
        "| step | method | status | run | headline / reason | time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        run = f"{o.run_name} ({o.run_id[:8]})" if o.run_id else ""
        text = o.reason if o.status in ("failed", "skipped") else o.headline
        rows.append(f"| {o.step} | {o.method} | {o.status} | {run} | {text} | {o.seconds:.0f} s |")
    return "\n".join(rows)


def run_study(study: Study) -> list[Outcome]:
    """Run the study (see the module doc); returns one Outcome per step."""
    import mlflow

    from rlvf.tracking.runinfo import NOTE
    from rlvf.tracking.runs import client

    t0 = time.perf_counter()
    parent, exp_id = _open_parent(study)
    c = client()
    c.set_tag(parent, schema.TAG_KIND, KIND_STUDY)
    c.set_tag(parent, TAG_STUDY, study.recipe)
    logged = c.get_run(parent).data.params  # `mlflow run` logged its parameters on a run it made
    params = {"recipe": study.recipe, "steps": ",".join(s.name for s in study.steps), "runner": study.runner}
    if study.common:
        params["set"] = ";".join(study.common)
    c.log_batch(parent, params=[_param(k, v) for k, v in params.items() if k not in logged])
    log(
        f"study {parent} in experiment '{study.experiment}': {len(study.steps)} steps ({study.runner} runner)"
    )
    outcomes: list[Outcome] = []
    done: dict[str, str] = {}
    status = "FAILED"
    try:
        for i, step in enumerate(study.steps, 1):
            if step.method == EXPORT:
                o = run_export(study, outcomes)
            else:
                o = run_step(study, step, done, parent, exp_id)
            outcomes.append(o)
            if o.status in ("ran", "reused") and o.run_id:
                done[step.name] = o.run_id
            line = f"study [{i}/{len(study.steps)}] {step.name}: {o.status}"
            if o.run_id:
                line += f" {o.run_name or ''} ({o.run_id[:8]})".rstrip()
            if o.status in ("failed", "skipped"):
                line += f": {o.reason}"
            elif o.headline:
                line += f": {o.headline}"
            log(line)
        failed = [o.step for o in outcomes if o.status == "failed"]
        status = "FAILED" if failed else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        wall = time.perf_counter() - t0
        counts = {s: sum(o.status == s for o in outcomes) for s in ("ran", "reused", "failed", "skipped")}
        with contextlib.suppress(Exception):
            c.log_batch(
                parent, metrics=_metrics({f"study/{k}": v for k, v in counts.items()} | {"time/wall_s": wall})
            )
            table = summary_markdown(outcomes)
            head = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
            c.set_tag(parent, NOTE, f"{head or 'nothing run'} in {wall / 60:.1f} min\n\n{table}")
            c.set_tag(parent, "rlvf.study.failed", ",".join(o.step for o in outcomes if o.status == "failed"))
            c.log_text(parent, table + "\n", "study/summary.md")
            c.log_text(parent, json.dumps([asdict(o) for o in outcomes], indent=1), "study/summary.json")
        mlflow.end_run(status)
    return outcomes


def _param(k: str, v: str) -> Any:
    from mlflow.entities import Param

    return Param(k, v[:6000])


def _metrics(values: dict[str, float]) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in values.items()]


# --------------------------------------------------------------------------- command line


def _sizes(text: str | None, recipe: str) -> tuple[int, ...]:
    if not text:
        return SMALL_SCAN if recipe == "small" else DEFAULT_SCAN
    try:
        sizes = tuple(int(x) for x in text.replace(";", ",").split(",") if x.strip())
    except ValueError:
        raise UserError(f"study: --scan takes pair counts like 120,250,500; got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"study: --scan takes positive pair counts; got {text!r}")
    return sizes


@click.command("study")
@click.option(
    "--recipe", "-r", default="default", show_default=True, help="Recipe for every step (e.g. small)."
)
@click.option("--steps", default="", help="Comma-separated steps to run (and those they need); default all.")
@click.option(
    "--set",
    "-s",
    "sets",
    multiple=True,
    metavar="[STEP:]KEY=VALUE",
    help="Config override for every step that has KEY, or for one STEP (repeatable; ';' separates).",
)
@click.option(
    "--scan", default="", help="DPO scaling scan pair counts (default 120,250,500,1000; small: 2,4)."
)
@click.option("--experiment", default="", help="MLflow experiment (default: rlvf-study-<recipe>).")
@click.option(
    "--runner",
    type=click.Choice(["mlflow", "inprocess"]),
    default="mlflow",
    show_default=True,
    help="mlflow: each step is `mlflow run` of its entry point; inprocess: in this process.",
)
@click.option(
    "--registry", "registry_dir", default="registry", show_default=True, help="Where export writes."
)
@click.option("--site", "site_dir", default="site", show_default=True, help="MkDocs docs dir for export.")
def study_cmd(
    recipe: str,
    steps: str,
    sets: tuple[str, ...],
    scan: str,
    experiment: str,
    runner: str,
    registry_dir: str,
    site_dir: str,
) -> None:
    """The whole study: base eval, SFT, DPO, RM, PPO, GRPO, KTO, ORPO, RLOO, online and
    iterative DPO, a DPO scaling scan, then `rlvf export`; one parent MLflow run with a nested
    run per step. Steps already finished with the same config_hash are reused. The same as
    `mlflow run . -e study --env-manager local`."""
    from rlvf.console import quiet_libraries

    quiet_libraries()
    recipe = recipe or "default"
    all_steps = study_steps(_sizes(scan, recipe), SMALL_POOL if recipe == "small" else SCAN_POOL)
    chosen = select_steps(all_steps, steps)
    common, per = split_overrides(sets, chosen)
    name = (
        experiment
        or f"rlvf-study-{Path(recipe).stem if '/' in recipe or recipe.endswith('.yaml') else recipe}"
    )
    study = Study(recipe, name, runner, chosen, common, per, registry_dir, site_dir)
    outcomes = run_study(study)
    failed = [o for o in outcomes if o.status == "failed"]
    skipped = [o for o in outcomes if o.status == "skipped"]
    log(
        f"study: {sum(o.status == 'ran' for o in outcomes)} ran, {sum(o.status == 'reused' for o in outcomes)} reused, "
        f"{len(failed)} failed, {len(skipped)} skipped"
    )
    if failed:
        for o in failed:
            print(f"error: study step {o.step} failed: {o.reason}", file=sys.stderr)
        sys.exit(1)
