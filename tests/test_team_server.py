"""rlvf against a team's tracking server, the README's set-up (scripts/team_server.sh): a real
`mlflow server` on PostgreSQL, artifacts in an S3 bucket (moto's S3 server), basic auth, and a
team member's rlvf processes that know only MLFLOW_TRACKING_URI and their credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import team_server as ts
from test_concurrent_store import _check, _race

ALICE = ("alice", "alice-password-" + os.urandom(4).hex())


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    yield from ts.team_server_fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def alice(team):
    team.add_user(*ALICE)
    return ALICE


def _rlvf(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlvf", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_a_run_logs_registers_and_exports_against_the_team_server(team, alice, tmp_path):
    from mlflow import MlflowClient

    from rlvf.methods.dpo import examples
    from rlvf.records import write_jsonl

    write_jsonl(tmp_path / "pairs.jsonl", examples(4))
    env = ts.client_env(team.uri, *alice, RLVF_EVAL_CACHE=str(tmp_path / "evalcache"))
    r = _rlvf(
        tmp_path,
        env,
        *("dpo", "-r", "small", "--pairs", str(tmp_path / "pairs.jsonl")),
        *("-s", "train.max_steps=2;train.batch_size=2;train.save_steps=0;eval.base=false"),
        *("-s", "eval.limit=2;eval.seeds=[0];eval.n_samples=1;eval.max_new_tokens=16"),
        *("-s", f"tracking.output_dir={tmp_path / 'out'};tracking.experiment=team;registry.name=team-dpo"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "registered team-dpo version 1" in r.stderr, r.stderr

    with ts.credentials(*alice):
        client = MlflowClient(team.uri)
        exp = client.get_experiment_by_name("team")
        (run,) = client.search_runs([exp.experiment_id])
        rid = run.info.run_id
        assert run.info.status == "FINISHED" and "train/loss" in run.data.metrics
        (version,) = client.search_model_versions("name = 'team-dpo'")
        assert version.run_id == rid
        assert client.get_model_version_by_alias("team-dpo", "candidate").version == version.version
        (model,) = client.search_logged_models([exp.experiment_id])

    # every artifact went through the server into the bucket: the run's and the model's
    keys = team.s3_keys()
    assert f"{exp.experiment_id}/{rid}/artifacts/config.yaml" in keys, keys
    assert f"{exp.experiment_id}/models/{model.model_id}/artifacts/artifacts/policy/model.safetensors" in keys

    r = _rlvf(tmp_path, env, "export", "--registry", str(tmp_path / "reg"), "--site", str(tmp_path / "site"))
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((tmp_path / "reg" / "runs" / f"{rid}.json").read_text())
    assert record["experiment"] == "team" and record["method"] == "dpo"
    assert [(v["name"], v["version"]) for v in record["registered"]] == [("team-dpo", "1")]
    assert (tmp_path / "site" / "report").is_dir()


def test_wrong_or_missing_credentials_are_one_line(team, alice, tmp_path):
    from mlflow import MlflowClient

    bad = ts.client_env(team.uri, alice[0], "not-" + alice[1])
    r = _rlvf(tmp_path, bad, "eval", "-r", "small", "-s", "tracking.experiment=refused")
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [
        f"error: tracking server {team.uri} refused the credentials of 'alice' (401): "
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server"
    ]
    anonymous = {k: v for k, v in bad.items() if not k.startswith("MLFLOW_TRACKING_USER")}
    anonymous.pop("MLFLOW_TRACKING_PASSWORD")
    r = _rlvf(tmp_path, anonymous, "export", "--registry", str(tmp_path / "reg"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "refused a request without credentials (401)" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "reg").exists()
    with ts.credentials(*ts.ADMIN):
        assert MlflowClient(team.uri).get_experiment_by_name("refused") is None


def test_four_concurrent_runs_land_in_their_new_experiments(team, alice, tmp_path):
    exps = ["race-a", "race-a", "race-b", "race-b"]
    ids = _race(team.uri, exps, tmp_path, ts.client_env(team.uri, *alice))
    assert len(set(ids)) == 4
    with ts.credentials(*alice):
        _check(team.uri, exps, ids)
