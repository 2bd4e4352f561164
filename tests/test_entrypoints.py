"""The entry points as commands: argument parsing, bad input (one clear line, exit 2, no run,
no registered version), the MLproject file, and real subprocesses (`python entrypoints/x.py`
and `mlflow run . -e eval --env-manager local`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from stores import seed_store, sqlite_store

from rlvf.methods import names
from rlvf.pipeline.cli import parse_script_args, script_main

ROOT = Path(__file__).resolve().parents[1]

METHODS = tuple(names())


def test_script_args():
    recipe, ov = parse_script_args(
        "dpo",
        [
            "--recipe",
            "small",
            "--pairs",
            "",
            "--learning-rate",
            "1e-4",
            "--set",
            "dpo.beta=0.2;eval.seeds=0,1",
            "--train.epochs",
            "3",
            "--data.n_pairs=50",
        ],
    )
    assert recipe == "small"
    assert ov == [
        "train.learning_rate=1e-4",
        "dpo.beta=0.2",
        "eval.seeds=0,1",
        "train.epochs=3",
        "data.n_pairs=50",
    ]
    # empty values (MLproject defaults) keep the recipe's
    assert parse_script_args("eval", ["--recipe", "default", "--suites", "", "--set", ""]) == ("default", [])


def test_mlproject_matches_the_scripts():
    from rlvf.pipeline.cli import EXTRA_ENTRIES, mlproject_options

    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    assert set(spec["entry_points"]) == set(METHODS) | set(EXTRA_ENTRIES)
    for name, ep in spec["entry_points"].items():
        if name in EXTRA_ENTRIES:
            continue
        # a script of its own, or the generic runner newer methods use
        if f"entrypoints/{name}.py" in ep["command"]:
            assert (ROOT / "entrypoints" / f"{name}.py").exists()
        else:
            assert ep["command"].startswith(f"python -m rlvf.pipeline {name} "), name
        params = ep["parameters"]
        assert params["recipe"]["default"] == "default"
        for p, decl in params.items():
            assert "type" in decl and "default" in decl, (name, p)
            assert "{" + p + "}" in ep["command"], (name, p)
        # every option, as MLflow appends an extra parameter (--name value), parses in the script
        argv = []
        for p in mlproject_options(name):
            argv += [f"--{p}", "x=1" if p == "set" else ""]
        parse_script_args(name, argv)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("entry")) as root:
        (root / "empty.jsonl").write_text("")
        yield root


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "train.lerning_rate=1"], "unknown config key 'train.lerning_rate'"),
        (["--learning-rate", "fast"], "must be a number, got 'fast'"),
        (["--recipe", "nope"], "unknown recipe 'nope'"),
        (["--pairs", "missing.jsonl"], "pairs file missing.jsonl does not exist"),
        (["--pairs", "0123456789abcdef0123456789abcdef"], "no MLflow run '0123456789abcdef0123456789abcdef'"),
        (["--pairs", "empty.jsonl"], "holds 0 pairs"),
        (["--init", "fedcba9876543210fedcba9876543210"], "no MLflow run 'fedcba98"),
        (["--bogus"], "needs a value"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_logged(store, capsys, argv, message):
    from mlflow import MlflowClient

    rc = script_main("dpo", ["--recipe", "small", *argv] if "--recipe" not in argv else argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ") and message in err[-1]
    assert sum(line.startswith("error:") for line in err) == 1
    client = MlflowClient()
    assert client.search_model_versions() == []
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs == []  # checked before any run was opened


def _env(store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = seed_store(store / "mlflow.db")
    env["RLVF_EVAL_CACHE"] = str(store / "evalcache")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_script_subprocess_bad_input(tmp_path):
    """A real process: one line on stderr, exit status 2."""
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "entrypoints" / "dpo.py"),
            "--recipe",
            "small",
            "--pairs",
            str(tmp_path / "nope.jsonl"),
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"error: data.pairs: pairs file {tmp_path / 'nope.jsonl'} does not exist "
        "(give a JSONL path or a pairs run id)"
    ]


@pytest.mark.slow
def test_mlflow_run_eval(tmp_path, tiny_policy):
    """`mlflow run . -e eval --env-manager local`: the entry point logs into the run mlflow created."""
    import mlflow
    from mlflow import MlflowClient

    env = _env(tmp_path)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(ROOT),
            "-e",
            "eval",
            "--env-manager",
            "local",
            "-P",
            "recipe=small",
            "-P",
            "eval.seeds=0",
            "--experiment-name",
            "rlvf-test",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        client = MlflowClient()
        exp = client.get_experiment_by_name("rlvf-test")
        (run,) = client.search_runs([exp.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.project.entryPoint"] == "eval"
        assert run.data.tags["rlvf.kind"] == "eval" and run.data.tags["rlvf.method"] == "base"
        assert run.data.params["recipe"] == "small"  # mlflow's own param, untouched
        assert run.data.params["cfg.eval.seeds"] == "[0]"  # the undeclared -P went through as an override
        assert "eval/procedural/pass_at_1" in run.data.metrics
    finally:
        mlflow.set_tracking_uri("")
