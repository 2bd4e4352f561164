"""Command lines for the entry points: `python entrypoints/dpo.py ...`, `mlflow run . -e dpo`
(which calls the same scripts) and `rlvf dpo ...` all end in `run_entry`.

Every entry point takes `--recipe NAME|PATH`, `--set key=value` (repeatable; also several
separated by ';'), a few named shortcuts (`--pairs`, `--policy`, `--learning-rate`, ...) and,
in the scripts, any config key as an option of its own (`--train.learning_rate 1e-4`: how
`mlflow run -P train.learning_rate=1e-4` passes a parameter the MLproject does not declare).
Empty values mean "the recipe's value", so MLproject parameters can default to "".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from rlvf.config.schema import applies

# option name -> config key, for the sections every method shares; each method adds its own
# (`Method.shortcuts`). A method gets the shortcuts whose key applies to it.
SHARED_SHORTCUTS: dict[str, str] = {
    "policy": "model.policy",
    "init": "model.init",
    "suite": "data.suite",
    "suites": "eval.suites",
    "seeds": "eval.seeds",
    "learning_rate": "train.learning_rate",
    "epochs": "train.epochs",
    "seed": "seed",
    "experiment": "tracking.experiment",
    "run_name": "tracking.run_name",
    "label": "tracking.label",
    "alias": "registry.alias",
    "resume": "tracking.resume",
}


def shortcuts_for(method: str) -> dict[str, str]:
    """The shortcuts of `method`: the shared ones and every method's whose key applies to it
    (pairs' --n-pairs serves dpo too). An option means one key per method: two methods may
    give one name to their own keys (--num-generations: grpo's and online_dpo's)."""
    from rlvf.methods import get, methods

    owners: dict[str, str] = {}
    out: dict[str, str] = {}
    own = get(method).name
    others = sorted(((m.name, m.shortcuts) for m in methods()), key=lambda nt: nt[0] != own)
    tables = [("shared", SHARED_SHORTCUTS), *others]  # the method's own before other methods
    for owner, table in tables:
        for opt, key in table.items():
            if not applies(key, method):
                continue
            if out.setdefault(opt, key) != key:
                raise ValueError(
                    f"shortcut --{opt} of {method} means both {out[opt]} ({owners[opt]}) and {key} ({owner})"
                )
            owners.setdefault(opt, owner)
    return out


def split_sets(values: Sequence[str] | None) -> list[str]:
    out = []
    for v in values or ():
        out.extend(part.strip() for part in v.split(";") if part.strip())
    return out


def overrides_from(
    method: str, named: dict[str, Any], sets: Sequence[str] | None, extra: dict[str, str]
) -> list[str]:
    """Override strings from shortcut options, --set values and --dotted.key options (in that order,
    later ones winning); empty values are skipped."""
    out = []
    for opt, key in shortcuts_for(method).items():
        v = named.get(opt)
        if v is not None and str(v).strip() != "":
            out.append(f"{key}={v}")
    out.extend(split_sets(sets))
    out.extend(f"{k}={v}" for k, v in extra.items() if str(v).strip() != "")
    return out


def _silence_noise() -> None:
    """Library chatter that says nothing about the run (see `rlvf.console`)."""
    from rlvf.console import quiet_libraries

    quiet_libraries()


def run_entry(method: str, recipe: str | None, overrides: Sequence[str]) -> Any:
    """Load the config and run the stage; prints the closing summary. Errors propagate."""
    from rlvf.config import load_config
    from rlvf.pipeline import preflight
    from rlvf.pipeline.lifecycle import stage_for
    from rlvf.train import launch

    if launch.follower():  # a rank of `accelerate launch` / `torchrun`: it trains when rank 0 does
        from rlvf.train import shards

        done = 0  # training jobs taken: one per training (iterative DPO trains once a round)
        while True:  # eval / sampling shards until rank 0 trains, train beside it, and again
            shards.serve(
                launch.rank(), launch.launch_dir(), until=lambda done=done: bool(launch.job_after(done))
            )
            code, seq = launch.follow(done)
            if code:
                raise SystemExit(code)
            if not seq:  # the launch ended
                return None
            done = seq
    if launch.external():
        from rlvf.train import shards
        from rlvf.train.ranks import world_size

        launch.lead()
        shards.enable(launch.launch_dir(), world_size())
    _silence_noise()

    cfg = load_config(method, recipe or None, list(overrides))
    preflight.check(cfg)
    result = stage_for(method)(cfg)
    print(f"[rlvf] {method} run {result.run_id} finished in {result.seconds:.1f}s", file=sys.stderr)
    for line in result.summary:
        print(f"[rlvf]   {line}", file=sys.stderr)
    return result


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def guarded(fn: Callable[[], Any]) -> int:
    """Run `fn`; user mistakes -> one line + exit 2, Ctrl-C -> 130, SIGTERM -> 143, SIGHUP -> 129."""
    from rlvf.errors import UserError, disk_full
    from rlvf.records import RecordError
    from rlvf.tracking.liveness import discard_unopened_env_run
    from rlvf.tracking.runs import RunKilled

    try:
        fn()
    except (UserError, RecordError) as e:
        code = getattr(e, "code", 2)  # 75: the run waits in a spool (rlvf.tracking.spool)
        if code == 2:
            discard_unopened_env_run(str(e))
        return _fail(str(e), code)
    except OSError as e:
        if not disk_full(e):
            raise
        return _fail(disk_full(e), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except RunKilled as e:
        return _fail(str(e), e.code)
    return 0


# --------------------------------------------------------------------------- scripts


def _script_parser(method: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # `--learning_rat` must be an unknown key, not --learning_rate
        prog=f"entrypoints/{method}.py",
        description=f"rlvf {method} entry point (also: mlflow run . -e {method} --env-manager local)",
    )
    p.add_argument("--recipe", default="", help="recipe name or YAML path (default: default)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override; repeatable, or several separated by ';'",
    )
    for opt, key in shortcuts_for(method).items():
        names = dict.fromkeys([f"--{opt.replace('_', '-')}", f"--{opt}"])
        p.add_argument(*names, dest=opt, default=None, metavar="VALUE", help=f"= --set {key}=VALUE")
    return p


def parse_script_args(method: str, argv: Sequence[str]) -> tuple[str, list[str]]:
    """(recipe, overrides) from a script's argv; unknown --a.b options become overrides."""
    from rlvf.config.loader import ConfigError

    parser = _script_parser(method)
    ns, rest = parser.parse_known_args(list(argv))
    extra: dict[str, str] = {}
    i = 0
    while i < len(rest):
        tok = rest[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise ConfigError(
                f"unexpected argument '{tok}' (config keys go as --key value or --set key=value)"
            )
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(rest):
                raise ConfigError(f"option '{tok}' needs a value")
            value = rest[i + 1]
            i += 2
        extra[key.replace("-", "_") if "." not in key else key] = value
    return ns.recipe, overrides_from(method, vars(ns), ns.sets, extra)


def script_main(method: str, argv: Sequence[str] | None = None) -> int:
    """What entrypoints/<method>.py runs."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        _script_parser(method).print_help()
        return 0
    return guarded(lambda: run_entry(method, *parse_script_args(method, argv)))


# --------------------------------------------------------------------------- rlvf CLI


def make_command(method: str, help_text: str) -> click.Command:
    """`rlvf <method>`: the same entry point as a click command."""

    def callback(recipe: str | None, sets: tuple[str, ...], **named: Any) -> None:
        from rlvf.tracking.runs import RunKilled

        try:
            run_entry(method, recipe, overrides_from(method, named, sets, {}))
        except RunKilled as e:  # the group turns UserError and Ctrl-C into one line; SIGTERM too
            click.echo(f"error: {e}", err=True)
            sys.exit(e.code)

    params: list[click.Parameter] = [
        click.Option(["--recipe", "-r"], default=None, help="Recipe name or YAML path (default: default)."),
        click.Option(
            ["--set", "-s", "sets"],
            multiple=True,
            metavar="KEY=VALUE",
            help="Config override, e.g. -s train.learning_rate=1e-4 (repeatable).",
        ),
    ]
    for opt, key in shortcuts_for(method).items():
        params.append(click.Option([f"--{opt.replace('_', '-')}", opt], default=None, help=f"Sets {key}."))
    return click.Command(method, callback=callback, params=params, help=help_text)


def commands() -> list[click.Command]:
    """`rlvf <method>` for every registered method."""
    from rlvf.methods import methods

    return [make_command(m.name, m.help) for m in methods()]


def __getattr__(name: str) -> Any:
    """`pairs_cmd`, `dpo_cmd`, ...: the command of a registered method (older imports)."""
    if name.endswith("_cmd"):
        from rlvf.methods import get

        m = get(name[: -len("_cmd")])
        return make_command(m.name, m.help)
    raise AttributeError(f"module 'rlvf.pipeline.cli' has no attribute '{name}'")


# --------------------------------------------------------------------------- MLproject

MLPROJECT_HEAD = """\
# rlvf's entry points as an MLflow project. Run them in the installed environment:
#
#   mlflow run . -e dpo --env-manager local
#   mlflow run . -e study --env-manager local       # the whole study (rlvf.pipeline.study)
#
# (MLflow's default env manager builds a fresh virtualenv and fails offline.)
# Each entry point declares only `recipe`: MLflow logs every declared parameter, and an option
# left empty would show up as '' next to the real values. Its options (listed above it) and
# any config key pass as extra parameters, which MLflow appends as --name value:
# -P learning_rate=1e-4, -P train.learning_rate=1e-4, or several as -P set="a=1;b=2".
# Generated by rlvf.pipeline.cli.mlproject_text(); see rlvf/recipes/default.yaml for every key.
name: rlvf

entry_points:
"""

# Entry points that are not methods: name -> (options, command).
EXTRA_ENTRIES: dict[str, tuple[tuple[str, ...], str]] = {
    "study": (
        ("steps", "set", "scan", "experiment", "runner", "registry", "site"),
        "python -m rlvf study --recipe {recipe}",
    ),
}


def mlproject_options(method: str) -> list[str]:
    """The options an entry point documents (`Method.mlproject`, then `set`): passed as extra
    MLflow parameters, each one a shortcut of the script."""
    from rlvf.methods import get

    if method in EXTRA_ENTRIES:
        return list(EXTRA_ENTRIES[method][0])
    m = get(method)
    table = shortcuts_for(method)
    for opt in m.mlproject:
        if opt not in table:
            raise ValueError(f"{method}: MLproject parameter '{opt}' is not one of its shortcuts")
    return [*m.mlproject, "set"]


def mlproject_entry(method: str) -> dict[str, Any]:
    """The MLproject entry point of a registered method, as `yaml.safe_load` reads it: only
    `recipe` is declared (see MLPROJECT_HEAD); the options go as extra parameters. New methods
    run through `python -m rlvf.pipeline`, so they need no script of their own."""
    mlproject_options(method)  # checks the declared options
    params: dict[str, Any] = {"recipe": {"type": "string", "default": "default"}}
    if method in EXTRA_ENTRIES:
        return {"parameters": params, "command": EXTRA_ENTRIES[method][1]}
    return {"parameters": params, "command": f"python -m rlvf.pipeline {method} --recipe {{recipe}}"}


def mlproject_block(method: str, command: str | None = None) -> str:
    """The YAML block to paste under `entry_points:` in MLproject for a new method."""
    entry = mlproject_entry(method)
    opts = ", ".join(mlproject_options(method))
    lines = [f"  # -P options: {opts}", f"  {method}:", "    parameters:"]
    for p, decl in entry["parameters"].items():
        default = decl["default"] or '""'
        lines.append(f"      {p}: {{type: {decl['type']}, default: {default}}}")
    lines += ["    command: >-", f"      {command or entry['command']}"]
    return "\n".join(lines) + "\n"


def mlproject_text(root: Any = None) -> str:
    """The whole MLproject: every registered method (through its script under entrypoints/
    where it has one), then the study."""
    from pathlib import Path

    from rlvf.methods import names

    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    blocks = []
    for name in [*names(), *EXTRA_ENTRIES]:
        command = mlproject_entry(name)["command"]
        if (root / "entrypoints" / f"{name}.py").is_file():
            command = command.replace(f"python -m rlvf.pipeline {name}", f"python entrypoints/{name}.py")
        blocks.append(mlproject_block(name, command))
    return MLPROJECT_HEAD + "\n".join(blocks)
