"""The embedded model's identity: named by what decides its weights, built with pinned CPU
numerics, the same weights on every x86-64 CPU, stale builds pruned and nothing else."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from rlvf.models import bootstrap as bs
from rlvf.models import pretrain

TINY = dataclasses.replace(bs.CONFIGS["small"], name="tiny-id", per_cell=1, epochs=1, docs_per_task=1)

# embedded:small as built by this code (float32, AVX2-pinned, 2 ranks), per (torch,
# transformers) release: first measured on an AVX2-only AMD EPYC. Another digest on another
# CPU with the same releases means the pinning does not hold there (see rlvf.models.pretrain).
SMALL_WEIGHTS = {
    ("2.13.0+cpu", "5.24.0"): "b5a8590a03ff0f335f00703491170edf3b6a46a9c9d8dd3125976d3c62db163e",
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVF_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_key_ignores_a_source_edit_that_leaves_the_corpus_alone(home, monkeypatch):
    key = TINY.key(0)
    digests = home / "models" / ".corpus-digests"
    assert len(list(digests.glob("*.json"))) == 1
    # The sources changed (e.g. a comment in the task generator): the digest is derived again
    # from a freshly built corpus, and it names the same model.
    monkeypatch.setattr(bs, "source_digest", lambda: "edited-sources")
    bs.prepare.cache_clear()
    assert TINY.key(0) == key
    assert len(list(digests.glob("*.json"))) == 2


def test_key_follows_what_decides_the_weights(home):
    key = TINY.key(0)
    assert TINY.key(1) != key  # seed
    assert dataclasses.replace(TINY, per_cell=2).key(0) != key  # a different corpus
    assert dataclasses.replace(TINY, learning_rate=1e-3).key(0) != key  # training config
    assert dataclasses.replace(TINY, bf16=True).key(0) != key  # opt-in bf16 is another model


def test_numerics_are_pinned_float32_on_x86_with_avx2():
    cap = torch.backends.cpu.get_cpu_capability()
    mode = pretrain.numerics(bf16=False)
    if cap in ("AVX2", "AVX512"):
        assert mode == "float32/avx2"
        env = pretrain.child_env(mode, 1)
        assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_CBWR"].startswith("AVX2")
    else:
        assert mode == f"float32/{cap.lower()}"
    assert pretrain.numerics(bf16=True).startswith("bf16-autocast/")


def test_small_model_weights_match_the_recorded_build(tiny_policy):
    """The same weights on every x86-64 CPU: embedded:small's digest is recorded per torch build."""
    import transformers

    info = bs.read_info(tiny_policy)
    releases = (torch.__version__, transformers.__version__)
    expected = SMALL_WEIGHTS.get(releases)
    if expected is None or info["numerics"] != "float32/avx2":
        pytest.skip(f"no recorded digest for torch/transformers {releases} with {info['numerics']}")
    assert info["weights_sha256"] == expected, (
        f"embedded:small trained to different weights on {torch.backends.cpu.get_cpu_capability()}"
    )


def _fake_build(root, name, config, seed=0):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / bs.MARKER).write_text(json.dumps({"config": {"name": config}, "seed": seed}))
    return d


def test_prune_removes_stale_builds_and_never_a_users_files(home):
    from rlvf.cli import main

    root = home / "models"
    stale = _fake_build(root, "embedded-default-00000000", "default")  # not the current key
    gone = _fake_build(root, "embedded-retired-11111111", "retired")  # no such config any more
    partial = root / "embedded-small-22222222.partial"
    partial.mkdir(parents=True)
    mine = root / "embedded-notes"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's notes")
    (root / "embedded-readme.txt").write_text("also a user's")
    current = bs.default_dir(bs.CONFIGS["small"])
    _fake_build(root, current.name, "small")

    r = CliRunner().invoke(main, ["bootstrap", "--prune"])
    assert r.exit_code == 0, r.output
    assert not stale.exists() and not gone.exists() and not partial.exists()
    assert (mine / "notes.txt").read_text() == "a user's notes"
    assert (root / "embedded-readme.txt").exists()
    assert current.exists()
    assert "3 stale embedded build(s) removed" in r.stderr
