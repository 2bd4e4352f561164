"""A team tracking server for the tests, started with the README's own script
(scripts/team_server.sh serve): `mlflow server` on PostgreSQL, artifacts in an S3 bucket (moto's
server standing in for S3/MinIO), basic auth.

PostgreSQL and the S3 stand-in come from RLVF_TEST_PG_URI / RLVF_TEST_S3_ENDPOINT (`.ci/run`
starts them); without those, from `scripts/team_server.sh services` when PostgreSQL's binaries
and moto are installed; else the test skips, except under CI=true, where a missing service is a
failure (a skipped server test would pass CI without testing anything). Each server gets fresh
databases and a fresh bucket, so one pair of services serves any number of tests and runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "team_server.sh"
ADMIN = ("admin", "admin-" + secrets.token_hex(8))
S3_CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(why: str) -> None:
    msg = f"no PostgreSQL / S3 stand-in for the team server: {why}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " (CI=true: .ci/run starts them and sets RLVF_TEST_PG_URI, RLVF_TEST_S3_ENDPOINT)")
    pytest.skip(msg)


@contextlib.contextmanager
def services(tmp: Path) -> Iterator[tuple[str, str]]:
    """(PostgreSQL URI without a database, S3 endpoint): the environment's, or started here."""
    pg, s3 = os.environ.get("RLVF_TEST_PG_URI"), os.environ.get("RLVF_TEST_S3_ENDPOINT")
    if pg and s3:
        yield pg, s3
        return
    missing = [b for b in ("initdb", "pg_ctl", "psql", "curl") if not shutil.which(b)]
    missing += [m for m in ("moto", "psycopg2", "boto3") if importlib.util.find_spec(m) is None]
    if missing:
        _unavailable(f"RLVF_TEST_PG_URI / RLVF_TEST_S3_ENDPOINT unset and {', '.join(missing)} missing")
    r = subprocess.run(
        ["bash", str(SCRIPT), "services", str(tmp)], capture_output=True, text=True, timeout=180
    )
    try:
        assert r.returncode == 0, r.stderr
        env = dict(
            kv.split("=", 1) for line in r.stdout.splitlines() for kv in line.removeprefix("export ").split()
        )
        yield env["RLVF_TEST_PG_URI"], env["RLVF_TEST_S3_ENDPOINT"]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(tmp)], capture_output=True, timeout=120)


class TeamServer:
    """One `scripts/team_server.sh serve` on fresh databases and a fresh bucket."""

    def __init__(self, root: Path, pg: str, s3: str) -> None:
        self.root, self.pg, self.s3 = root, pg.rstrip("/"), s3
        name = "t" + secrets.token_hex(6)
        self.bucket, self.db, self.auth_db = f"rlvf-{name}", f"{name}_store", f"{name}_auth"
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def _sql(self, statement: str) -> None:
        import psycopg2

        conn = psycopg2.connect(f"{self.pg}/postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def s3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def s3_keys(self) -> list[str]:
        pages = self.s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def start(self) -> None:
        for db in (self.db, self.auth_db):
            self._sql(f"CREATE DATABASE {db}")
        self.s3_client().create_bucket(Bucket=self.bucket)
        sa = self.pg.replace("postgresql://", "postgresql+psycopg2://", 1)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
        env.update(
            S3_CREDS,
            RLVF_SERVER_DB=f"{sa}/{self.db}",
            RLVF_SERVER_AUTH_DB=f"{sa}/{self.auth_db}",
            RLVF_SERVER_ARTIFACTS=f"s3://{self.bucket}",
            MLFLOW_S3_ENDPOINT_URL=self.s3,
            MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
            RLVF_SERVER_PORT=str(self.port),
            RLVF_SERVER_WORKERS="1",
        )
        log = (self.root / "server.log").open("w")
        self.proc = subprocess.Popen(
            ["bash", str(SCRIPT), "serve"],
            cwd=self.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 400  # MLflow's migrations on two new databases, on a busy core
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "server.log").read_text()[-3000:]
                self.stop()
                pytest.fail(f"the team server did not start:\n{tail}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def add_user(self, name: str, password: str) -> None:
        """A team member, created by the admin through MLflow's auth API."""
        from mlflow.server import get_app_client

        with credentials(*ADMIN):
            get_app_client("basic-auth", tracking_uri=self.uri).create_user(name, password)


@contextlib.contextmanager
def credentials(user: str, password: str) -> Iterator[None]:
    """This process's MLflow credentials for the block (for MlflowClient checks)."""
    old = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def client_env(uri: str, user: str, password: str, **extra: str) -> dict[str, str]:
    """An rlvf process's environment: the server's address and a user's credentials, nothing
    else of MLflow's or of the bucket's (the server proxies the artifacts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_TRACKING_USERNAME=user,
        MLFLOW_TRACKING_PASSWORD=password,
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        **extra,
    )
    return env


def team_server_fixture(tmp_path_factory) -> Iterator[TeamServer]:
    root = tmp_path_factory.mktemp("team")
    with services(root / "services") as (pg, s3):
        server = TeamServer(root, pg, s3)
        server.start()
        try:
            yield server
        finally:
            server.stop()
