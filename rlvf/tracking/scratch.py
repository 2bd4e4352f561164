"""Temporary directories that go away when the process ends.

Why: `mlflow.artifacts.download_artifacts` without a destination copies into a fresh
system temp dir that nothing removes; for `model.init` that is a full copy of a model
(gigabytes for hub models) left behind by every run.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

_DIRS: list[str] = []


def _remove_all() -> None:
    for d in _DIRS:
        shutil.rmtree(d, ignore_errors=True)


def scratch_dir(prefix: str = "rlvf-init-") -> str:
    """A new temp dir removed at interpreter exit (normal exit, an error, SIGTERM, Ctrl-C)."""
    if not _DIRS:
        atexit.register(_remove_all)
    d = tempfile.mkdtemp(prefix=prefix)
    _DIRS.append(d)
    return d
