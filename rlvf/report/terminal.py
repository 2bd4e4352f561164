"""`rlvf compare` in the terminal: the same deltas and head-to-head as the site."""

from __future__ import annotations

import click

from rlvf.errors import UserError
from rlvf.report import headtohead as hh
from rlvf.report import stats
from rlvf.report.pages import delta_cells


def print_comparison(a: dict, b: dict, suites: list[str]) -> dict:
    from rich.console import Console
    from rich.table import Table

    name_a, name_b = f"{a['label']} ({a['run_id'][:8]})", f"{b['label']} ({b['run_id'][:8]})"
    c = hh.compare(a, b)
    if not c["comparable"]:
        raise UserError(
            f"{name_b} and {name_a} are not comparable: invariants differ: {hh.describe_differences(c['differences'])}"
        )
    common = sorted(c["suites"])
    for s in suites:
        if s not in common:
            raise UserError(
                f"suite {s!r} is not evaluated in both runs (in common: {', '.join(common) or 'none'})"
            )
    chosen = suites or common
    if not chosen and not c["lm_eval"]:
        raise UserError(f"{name_a} and {name_b} have no suite or lm-eval metric in common")
    for s in chosen:
        if "error" in c["suites"][s]:
            raise UserError(f"{name_b} vs {name_a}: {c['suites'][s]['error']}")

    console = Console(width=max(Console().width, 160))
    console.print(f"[bold]{name_b}[/bold] against [bold]{name_a}[/bold]")
    deltas = Table(title="Deltas (run − baseline)")
    for col in (
        "Suite",
        "Baseline %¹",
        "Run %¹",
        "Δ",
        "±SE²",
        "2×SE",
        "McNemar p (b/c)",
        "Bootstrap 95% CI",
        "Verdict",
    ):
        deltas.add_column(col)
    for s in chosen:
        d = c["suites"][s]["delta"]
        deltas.add_row(
            s,
            *delta_cells(d),
            d["verdict"] if stats.is_significant(d["verdict"]) else f"[italic]{d['verdict']}[/italic]",
        )
    for d in c["lm_eval"]:
        deltas.add_row(
            d["metric"],
            f"{d['a']:.4f}",
            f"{d['b']:.4f}",
            f"{d['delta']:+.4f}",
            "—" if d["se"] is None else f"{d['se']:.4f}",
            "beyond" if d["beyond_2se"] else "within",
            "—",
            "—",
            d["verdict"],
        )
    console.print(deltas)
    click.echo(
        "¹ pass@1 mean ± std over eval seeds (lm-eval rows: the value).  ² the combined stderr over "
        "tasks (lm-eval rows: lm-eval's own stderr); significant = beyond 2×SE and McNemar p < 0.05."
    )
    for v in c["lm_eval_refused"]:
        click.echo(f"lm-eval {v['task']}: not compared, the task version changed ({v['a']} -> {v['b']})")
    if c["forgetting"]:
        f = c["forgetting"]
        click.echo(
            f"forgetting regression: pass@1 up on {', '.join(f['gains'])}, "
            f"but {', '.join(f['lost'])} worse beyond 2×SE"
        )
    for s in chosen:
        h = c["suites"][s]["h2h"]
        cn = h["counts"]
        t = Table(title=f"Head-to-head on {s}")
        for col in ("Improved", "Regressed", "Both pass", "Both fail", "Net", "Tasks"):
            t.add_column(col, justify="right")
        t.add_row(
            str(cn["improved"]),
            str(cn["regressed"]),
            str(cn["both_pass"]),
            str(cn["both_fail"]),
            f"{h['net']:+d}",
            str(h["n_tasks"]),
        )
        console.print(t)
        for key, title in (("improved", "Improved"), ("regressed", "Regressed"), ("both_fail", "Both fail")):
            tids = h["lists"][key]
            click.echo(f"{title} ({len(tids)}): {', '.join(tids) if tids else 'none'}")
    return c
