"""Bad input through the real command lines: one line on stderr, a non-zero exit, and nothing
left behind (no run, no registered version, no temp copy). Each row runs a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stores import seed_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from rlvf.tracking.store import open_store

    root = tmp_path_factory.mktemp("bad")
    open_store(seed_store(root / "mlflow.db"))
    # a suite file whose second line lacks the `test` field
    (root / "bad_suite.jsonl").write_text(
        '{"task_id": "t/0", "prompt": "def f():\\n", "entry_point": "f", "test": "def check(c): pass\\n"}\n'
        '{"task_id": "t/1", "prompt": "def g():\\n", "entry_point": "g"}\n'
    )
    return root


def _env(root: Path, **extra: str) -> dict[str, str]:
    # huggingface_hub reads TRANSFORMERS_OFFLINE as HF_HUB_OFFLINE: a case sets either itself.
    drop = ("MLFLOW_", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        MLFLOW_TRACKING_URI=seed_store(root / "mlflow.db"),
        RLVF_EVAL_CACHE=str(root / "evalcache"),
        PYTHONPATH=str(REPO),
        TMPDIR=str(root / "tmp"),
    )
    env.update(extra)
    (root / "tmp").mkdir(exist_ok=True)
    return env


def _nothing_left(root: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(seed_store(root / "mlflow.db"))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.run_id, r.info.status) for r in runs] == []
    assert client.search_model_versions() == []
    # no file left in the temp dir (`mlflow run` itself leaves an empty storage dir there)
    assert [f for f in (root / "tmp").rglob("*") if not f.is_dir()] == []


def _hub_reachable() -> bool:
    from rlvf.pipeline.preflight import reachable

    return reachable("huggingface.co")


ENTRY = [sys.executable, str(REPO / "entrypoints" / "dpo.py"), "--recipe", "small"]
RLVF = [sys.executable, "-m", "rlvf"]

CASES = [
    # (id, argv, extra env, exit code, the one line)
    (
        "prefix_of_an_option",
        [*ENTRY, "--learning_rat", "1e-4"],
        {},
        2,
        "error: unknown config section 'learning_rat' in 'learning_rat' (did you mean 'train.learning_rate'?)",
    ),
    (
        "zero_epochs",
        [*RLVF, "dpo", "-r", "small", "-s", "train.epochs=0"],
        {},
        2,
        "error: config key 'train.epochs' must be above 0; got 0.0",
    ),
    (
        "suite_file_missing_a_field",
        [*RLVF, "dpo", "-r", "small", "-s", "eval.suites=[procedural, 'jsonl:bad_suite.jsonl']"],
        {},
        2,
        "error: bad_suite.jsonl:2: missing field 'test'",
    ),
    (
        "unknown_hub_id_offline",
        [*RLVF, "eval", "-r", "small", "-s", "model.policy=nobody/no-such-model"],
        {"HF_HUB_OFFLINE": "1"},
        2,
        "error: model.policy: 'nobody/no-such-model' is not in the local Hugging Face cache and "
        "HF_HUB_OFFLINE is set; download it first (unset HF_HUB_OFFLINE) or use a local directory",
    ),
    (
        "unknown_hub_id_no_network",
        [*RLVF, "eval", "-r", "small", "-s", "model.policy=nobody/no-such-model"],
        {},
        2,
        "error: model.policy: 'nobody/no-such-model' is not in the local Hugging Face cache and "
        "huggingface.co cannot be reached (offline?); download it first or use a local directory",
    ),
]


@pytest.mark.parametrize(("argv", "env", "code", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(root, argv, env, code, line):
    if "cannot be reached" in line and _hub_reachable():
        pytest.skip("the hub is reachable from here")
    t0 = time.monotonic()
    p = subprocess.run(argv, cwd=root, env=_env(root, **env), capture_output=True, text=True, timeout=300)
    assert (p.returncode, p.stderr.strip().splitlines()) == (code, [line]), p.stderr[-2000:]
    assert time.monotonic() - t0 < 60  # no retries
    _nothing_left(root)


@pytest.mark.slow
def test_mlflow_run_rejected_value_leaves_no_run(root):
    """`mlflow run` creates the run before the entry point sees its parameters: rlvf removes it."""
    from mlflow import MlflowClient

    argv = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "dpo", "--env-manager", "local"]
    argv += ["-P", "recipe=small", "-P", "learning_rate=abc", "--experiment-name", "rejected"]
    p = subprocess.run(argv, cwd=root, env=_env(root), capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    ours = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert ours == ["error: config key 'train.learning_rate' must be a number, got 'abc'"], p.stderr[-2000:]
    client = MlflowClient(seed_store(root / "mlflow.db"))
    exp = client.get_experiment_by_name("rejected")
    deadline = time.monotonic() + 60  # the run is deleted once the `mlflow run` wrapper has exited
    while client.search_runs([exp.experiment_id]) and time.monotonic() < deadline:
        time.sleep(0.3)
    _nothing_left(root)


def test_model_init_download_leaves_no_temp_copy(root):
    """A run's policy fetched for model.init lives in a temp dir removed when the process ends."""
    from mlflow import MlflowClient

    client = MlflowClient(seed_store(root / "mlflow.db"))
    exp = client.create_experiment("init-src", artifact_location=(root / "art").as_uri())
    rid = client.create_run(exp).info.run_id
    policy = root / "src" / "artifacts" / "policy"
    policy.mkdir(parents=True)
    (policy / "config.json").write_text("{}")
    (policy / "weights.bin").write_bytes(os.urandom(1 << 16))
    client.log_artifacts(rid, str(root / "src"), "model")
    client.set_terminated(rid)
    code = (
        "import sys; from rlvf.pipeline.stages import resolve_init; "
        "src = resolve_init(sys.argv[1]); assert (src.directory / 'weights.bin').is_file(); print(src.directory)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, rid], cwd=root, env=_env(root), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().startswith(str(root / "tmp"))
    assert not Path(p.stdout.strip()).exists()
    assert [f for f in (root / "tmp").rglob("*") if not f.is_dir()] == []
    client.delete_run(rid)


@pytest.fixture
def full_disk(tmp_path):
    """A 4 MB tmpfs filled to the last byte (needs root: skipped elsewhere)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with open(mnt / "filler", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_full_disk_is_one_line_and_the_run_ends_failed(root, full_disk):
    from mlflow import MlflowClient

    client = MlflowClient(seed_store(root / "mlflow.db"))
    client.create_experiment("full", artifact_location=(full_disk / "artifacts").as_uri())
    argv = [*RLVF, "eval", "-r", "small", "-s", "tracking.experiment=full"]
    p = subprocess.run(argv, cwd=root, env=_env(root), capture_output=True, text=True, timeout=300)
    errors = [x for x in p.stderr.strip().splitlines() if not x.startswith("[rlvf]")]
    assert p.returncode == 1 and len(errors) == 1, p.stderr[-3000:]
    assert errors[0].startswith("error: no space left on device")
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["rlvf.error"]
    client.delete_run(run.info.run_id)
