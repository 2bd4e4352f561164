"""`rlvf upload SPOOL_DIR`: send a run kept on disk while its tracking server was away."""

from __future__ import annotations

import sys

import click


@click.command("upload")
@click.argument("spool_dir", type=click.Path(file_okay=False))
@click.option(
    "--tracking-uri",
    default=None,
    help="Where to send it (default: MLFLOW_TRACKING_URI, else the server the run was started on).",
)
def upload_cmd(spool_dir: str, tracking_uri: str | None) -> None:
    """Upload a spooled run (metrics, params, tags, artifacts, the trained model) to its MLflow
    run, register the model as the run would have, and end the run as it ended.

    A run spools when its tracking server stays unreachable longer than tracking.outage_s;
    the run prints this command with its spool folder. Safe to repeat after a failure: what
    was sent is not sent again."""
    from pathlib import Path

    from rlvf.tracking.runs import _quiet_mlflow
    from rlvf.tracking.spool import upload

    _quiet_mlflow()
    out = upload(Path(spool_dir), tracking_uri)
    print(
        f"[rlvf] uploaded {out['entries']} records to run {out['run_id']} ({out['status']})", file=sys.stderr
    )
    if "registered" in out:
        name, version = out["registered"]
        print(f"[rlvf] registered {name} version {version}", file=sys.stderr)
