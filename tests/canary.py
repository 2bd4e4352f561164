"""The canary folder of the hostile corpus: its cases aim deletions and writes at CANARY, and a
test passes only if the file in it is untouched afterwards."""

from __future__ import annotations

import os
from pathlib import Path

KEEP = "still here"


def canary_dir(parent: Path) -> Path:
    """`parent`/canary holding keep.txt. Under root (CI containers) the folders are opened up
    so that the sandbox's unprivileged user reaches them: the canary then tests the sandbox,
    not the file permissions."""
    d = parent / "canary"
    d.mkdir()
    (d / "keep.txt").write_text(KEEP)
    if os.geteuid() == 0:
        os.chmod(parent, 0o755)
        os.chmod(d, 0o777)
    return d


def untouched(d: Path) -> bool:
    return (d / "keep.txt").read_text() == KEEP
