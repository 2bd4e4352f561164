"""`rlvf bootstrap`: train (or reuse) rlvf's embedded base policy."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("bootstrap")
@click.option(
    "--config",
    "config_name",
    default="default",
    show_default=True,
    help="Embedded model configuration: default, or small (for tests).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Weight init and data-order seed.")
@click.option("--force", is_flag=True, help="Retrain even when the model already exists.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Model directory (default: $RLVF_HOME/models/embedded-<config>-<hash>).",
)
@click.option(
    "--prune",
    is_flag=True,
    help="Remove embedded builds under $RLVF_HOME/models that no current config produces, then exit.",
)
def bootstrap_cmd(config_name: str, seed: int, force: bool, out: Path | None, prune: bool) -> None:
    """Pretrain the embedded policy (tokenizer + tiny causal LM) from the procedural training seed.

    Prints the model directory; `--policy embedded` (or embedded:small) finds it anywhere.
    A second call reuses the saved model unless --force.
    """
    from rlvf.models.bootstrap import bootstrap, default_dir, get_config, is_complete, read_info

    if prune:
        from rlvf.models.bootstrap import prune as prune_builds

        removed = prune_builds()
        for d in removed:
            click.echo(f"removed {d}", err=True)
        click.echo(f"{len(removed)} stale embedded build(s) removed", err=True)
        return
    cfg = get_config(config_name)
    target = out or default_dir(cfg, seed)
    reused = is_complete(target) and not force
    t0 = time.perf_counter()
    path = bootstrap(cfg, seed=seed, out=out, force=force, progress=True)
    info = read_info(path)
    if reused:
        click.echo(f"reusing {path} (--force retrains)", err=True)
    else:
        tr = info.get("train", {})
        click.echo(
            f"trained {info.get('parameters', 0):,} parameters on {info.get('corpus', {}).get('documents_kept', 0)} "
            f"documents, {tr.get('steps', 0)} steps, loss {tr.get('loss_first')} -> {tr.get('loss_last')}, "
            f"in {time.perf_counter() - t0:.1f}s ({info.get('threads')} threads, {info.get('numerics')}, "
            f"weights {info.get('weights_sha256', '')[:12]})",
            err=True,
        )
    click.echo(str(path))
