"""Shared fixtures.

`tiny_policy` is the embedded:small model directory, bootstrapped at most once: it lives in
the shared cache ($RLVF_HOME/models, ~/.cache/rlvf by default) under a name keyed by the
bootstrap config's hash, so a test session (and CI on the same machine) pays for it once,
and `--policy embedded:small` anywhere in the tests resolves to the same directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_policy() -> Path:
    """Directory of the embedded:small model (save_pretrained layout: model + tokenizer)."""
    from rlvf.models.bootstrap import ensure_embedded

    return ensure_embedded("embedded:small")


@pytest.fixture(scope="session")
def tiny_model(tiny_policy):
    """(model, tokenizer) of embedded:small on CPU, loaded once per session; do not train it in place."""
    from rlvf.models import PolicySpec, load_policy

    return load_policy(PolicySpec(base=str(tiny_policy), device="cpu"))


def pytest_sessionstart(session) -> None:
    """Build embedded:small up front, visibly: under `pytest -q` a first build inside a fixture
    would be a long silence (its output captured)."""
    from rlvf.models.bootstrap import bootstrap, default_dir, get_config, is_complete

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    capman = session.config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capman is None:
        return
    with capman.global_and_fixture_disabled():
        if is_complete(default_dir(get_config("small"))):
            return
        reporter.write_line(
            "[rlvf] building embedded:small for the tests (cached in $RLVF_HOME for later runs)"
        )
        bootstrap("small", progress=True)


@pytest.fixture(scope="module", autouse=True)
def _mlflow_experiment_per_module():
    """`mlflow.set_experiment` is process-global (a module variable and MLFLOW_EXPERIMENT_ID,
    which it sets for child processes): a test module that picks an experiment in its store
    must not leave the next module, on a store of its own, pointing at an id it lacks."""
    import os

    import mlflow.tracking.fluent as fluent

    keys = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    saved = {k: os.environ.get(k) for k in keys}
    before = fluent._active_experiment_id
    yield
    fluent._active_experiment_id = before
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
