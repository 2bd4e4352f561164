"""`rlvf export` never destroys what it did not write, and replaces registry + site whole.

Real sqlite stores, real `rlvf` processes (killed with SIGKILL, run concurrently).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import report_study as rs

REPO = Path(__file__).resolve().parents[1]


def _store(root: Path, label: str, passing: set[int]) -> str:
    root.mkdir(parents=True, exist_ok=True)
    uri, _, _ = rs.make_store(root)
    res = rs.write_humaneval_results(root / "res.jsonl", passing)
    r = rs.cli(
        "import-results", str(res), "--method", "dpo", "--base-model", "m", "--label", label,
        "--tracking-uri", uri, "--experiment", "e",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return uri


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _dots(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {"a": _store(root / "a", "run-a", {0, 1, 2}), "b": _store(root / "b", "run-b", {3, 4})}


def _export_args(uri: str, root: Path) -> list[str]:
    return [
        "export",
        "--tracking-uri",
        uri,
        "--registry",
        str(root / "registry"),
        "--site",
        str(root / "site"),
    ]


def test_refused_targets_are_one_line_and_nothing_is_touched(stores, tmp_path, monkeypatch):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine\n")
    (notes / "sub").mkdir()
    (notes / "sub" / "x.md").write_text("also mine\n")
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("keep me\n")
    site_file = tmp_path / "site_file"
    site_file.write_text("keep me too\n")
    user_report = tmp_path / "usersite" / "report"
    user_report.mkdir(parents=True)
    (user_report / "draft.txt").write_text("my draft\n")
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    cases = [
        (["--registry", str(notes), "--site", "s1"], "holds files rlvf did not write"),
        (["--registry", str(a_file), "--site", "s2"], "is a file, not a directory"),
        (["--registry", ".", "--site", "s3"], "would replace the current directory"),
        (["--registry", "..", "--site", "s4"], "would replace the current directory"),
        (["--registry", "r5", "--site", str(site_file)], "--site"),
        (["--registry", "r6", "--site", str(tmp_path / "usersite")], "holds files rlvf did not write"),
        (["--registry", str(a_file / "sub"), "--site", "s7"], "is a file, not a directory"),
    ]
    for args, message in cases:
        r = rs.cli("export", "--tracking-uri", stores["a"], *args)
        assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, (args, r.output)
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes", "a_file.txt", "site_file", "usersite"]
    )


def test_export_writes_marker_and_replaces_only_its_own_trees(stores, tmp_path):
    r = rs.cli(*_export_args(stores["a"], tmp_path))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "registry" / ".rlvf-tree").is_file()
    assert (tmp_path / "site" / "report" / ".rlvf-tree").is_file()
    (tmp_path / "site" / "index.md").write_text("the user's home page\n")
    r = rs.cli(*_export_args(stores["b"], tmp_path))
    assert r.exit_code == 0, r.output
    assert "run-b" in (tmp_path / "registry" / "metrics.json").read_text()
    assert (tmp_path / "site" / "index.md").read_text() == "the user's home page\n"
    assert _dots(tmp_path) == [] and _dots(tmp_path / "site") == []
    # a user file dropped into the (marked) registry is rlvf's to replace: the marker says so
    r = rs.cli(
        "export",
        "--from-registry",
        "--registry",
        str(tmp_path / "registry"),
        "--site",
        str(tmp_path / "site"),
    )
    assert r.exit_code == 0, r.output


def test_repo_registry_and_site_are_accepted(tmp_path):
    """The committed registry/ and site/report/ carry the marker (and pass the legacy-layout rule)."""
    from rlvf.report import atomic

    for d in (REPO / "registry", REPO / "site" / "report"):
        assert (d / atomic.MARKER).is_file()
    assert atomic._legacy_registry(REPO / "registry") is False  # the marker is not in the legacy layout
    legacy = tmp_path / "registry"
    (legacy / "runs").mkdir(parents=True)
    for f in ("metrics.json", "study.json", "runs/x.json"):
        (legacy / f).write_text("{}\n")
    assert atomic.check_registry(legacy) == legacy.resolve()
    (legacy / "notes.txt").write_text("mine\n")
    with pytest.raises(Exception, match="did not write"):
        atomic.check_registry(legacy)


def _rlvf(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "rlvf", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw
    )


def test_export_killed_half_way_leaves_old_tree_intact(stores, tmp_path):
    r = rs.cli(*_export_args(stores["a"], tmp_path))
    assert r.exit_code == 0, r.output
    old = _tree(tmp_path / "registry"), _tree(tmp_path / "site" / "report")
    # hold the export lock, so the real export stages both new trees and then waits on it
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        p = _rlvf(*_export_args(stores["b"], tmp_path))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            staged = [x.name for x in tmp_path.iterdir()] + [x.name for x in (tmp_path / "site").iterdir()]
            if any(n.startswith(f".registry.new-{p.pid}-") for n in staged) and any(
                n.startswith(f".report.new-{p.pid}-") for n in staged
            ):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"export never staged: {p.communicate()}")
        time.sleep(0.2)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        os.close(fd)
    assert (_tree(tmp_path / "registry"), _tree(tmp_path / "site" / "report")) == old
    assert len(_dots(tmp_path)) == 1 and len(_dots(tmp_path / "site")) == 1  # the dead one's staging
    # the next export cleans the dead one's staging dirs and completes
    r = rs.cli(*_export_args(stores["b"], tmp_path))
    assert r.exit_code == 0, r.output
    assert "run-b" in (tmp_path / "registry" / "metrics.json").read_text()
    assert _dots(tmp_path) == [] and _dots(tmp_path / "site") == []


def test_concurrent_exports_leave_one_whole_export(stores, tmp_path):
    ref = {}
    for k in ("a", "b"):
        r = rs.cli(*_export_args(stores[k], tmp_path / f"ref-{k}"))
        assert r.exit_code == 0, r.output
        ref[k] = _tree(tmp_path / f"ref-{k}" / "registry"), _tree(tmp_path / f"ref-{k}" / "site")
    out = tmp_path / "out"
    procs = [_rlvf(*_export_args(stores[k], out)) for k in ("a", "b", "a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    got = _tree(out / "registry"), _tree(out / "site")
    assert got in (ref["a"], ref["b"])
    assert _dots(out) == [] and _dots(out / "site") == []
