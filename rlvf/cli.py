"""The `rlvf` command line. Each area of rlvf registers its own commands here."""

from __future__ import annotations

import importlib
import sys

import click

from rlvf.errors import UserError, disk_full
from rlvf.records import RecordError


class _Group(click.Group):
    """A click group that turns user mistakes into one clear line and exit status 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (UserError, RecordError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(getattr(e, "code", 2))  # 75: kept on disk for later (rlvf.tracking.spool)
        except OSError as e:
            if not disk_full(e):
                raise
            click.echo(f"error: {disk_full(e)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:
            from rlvf.tracking.access import refused

            if not refused(e):
                raise
            click.echo(f"error: {refused(e)}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rlvf")
@click.option(
    "--verbose", "-v", is_flag=True, help="Show every library's warnings and logs (same as RLVF_VERBOSE=1)."
)
def main(verbose: bool) -> None:
    """rlvf: post-train code LLMs with verification feedback.

    Sample code from a model, run it against unit tests in a sandbox, and turn
    pass/fail into training signal, tracked in MLflow and published with MkDocs.
    """
    import os

    from rlvf.console import quiet_libraries

    if verbose:
        os.environ["RLVF_VERBOSE"] = "1"
    quiet_libraries()


def _register() -> None:
    from rlvf.verify.cli import verify_cmd

    main.add_command(verify_cmd)
    # Other areas add their commands here, one line each.
    main.add_command(importlib.import_module("rlvf.tasks.cli").tasks_cmd)
    main.add_command(importlib.import_module("rlvf.models.cli").bootstrap_cmd)
    main.add_command(importlib.import_module("rlvf.generate.cli").sample_cmd)
    main.add_command(importlib.import_module("rlvf.report.cli").import_results_cmd)
    main.add_command(importlib.import_module("rlvf.report.cli").export_cmd)
    main.add_command(importlib.import_module("rlvf.report.cli").compare_cmd)
    main.add_command(importlib.import_module("rlvf.tracking.cli").upload_cmd)
    main.add_command(importlib.import_module("rlvf.pipeline.study").study_cmd)
    # One command per registered method (rlvf.methods), unless an area already has one by that
    # name (`rlvf bootstrap` is the models' own).
    for cmd in importlib.import_module("rlvf.pipeline.cli").commands():
        if cmd.name not in main.commands:
            main.add_command(cmd)


_register()
