"""Replace rlvf's output trees (registry/, site/report/) all at once, and only rlvf's own.

Why: `rlvf export` rewrites whole directories. It must never delete what it did not write
(a user pointing --registry at their notes), and an export killed half-way must leave either
the old registry and site or the new ones, never a mix or a missing tree.

How:
- Every tree rlvf writes holds a marker file (`MARKER`). A target is accepted only if it is
  absent, an empty directory, marked, or (trees exported before the marker existed) laid
  out exactly as rlvf lays it out; anything else is refused with one line.
- New trees are staged in sibling dirs `.<name>.new-<pid>-<rand>` (slow part, no lock).
- Under an exclusive lock on the registry's parent directory, a journal naming the staged dirs is written
  (the commit point), the targets are swapped in by rename, and the journal removed. A
  later export finishes a journal left by a killed one, and removes staging dirs whose
  process is gone. Concurrent exports serialise on the lock: the last one wins, whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from rlvf.errors import UserError
from rlvf.tracking.liveness import pid_alive

#: rlvf's marker file, present in every tree it writes (dotfile: MkDocs leaves it out)
MARKER = ".rlvf-tree"
_MARKER_TEXT = "written by `rlvf export`: this whole directory is replaced on each export\n"

_STAGE = re.compile(r"^\.(?P<name>.+)\.(?:new|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _files(root: Path) -> list[Path]:
    return [p.relative_to(root) for p in root.rglob("*") if not p.is_dir()]


def _legacy_registry(root: Path) -> bool:
    """A registry written before the marker: only runs/*.json, metrics.json, study.json."""
    rels = _files(root)
    if Path("metrics.json") not in rels:
        return False
    for rel in rels:
        top = rel.parts[0]
        if top in ("metrics.json", "study.json") and len(rel.parts) == 1:
            continue
        if top == "runs" and len(rel.parts) == 2 and rel.suffix == ".json":
            continue
        return False
    dirs = [p.relative_to(root) for p in root.rglob("*") if p.is_dir()]
    return all(d == Path("runs") for d in dirs)


def _legacy_report(root: Path) -> bool:
    """Site pages written before the marker: top-level *.md and plots/* only, results.md among them."""
    rels = _files(root)
    if Path("results.md") not in rels:
        return False
    for rel in rels:
        if len(rel.parts) == 1 and rel.suffix == ".md":
            continue
        if rel.parts[0] == "plots" and len(rel.parts) == 2 and rel.suffix in (".svg", ".png"):
            continue
        return False
    return True


def check_target(path: str | Path, what: str, legacy=None) -> Path:
    """The absolute target for a tree rlvf may replace, or a UserError saying why not."""
    raw = Path(path)
    if raw.is_symlink():
        raise UserError(f"{what} {raw}: is a symbolic link; give the directory itself")
    target = raw.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or cwd.is_relative_to(target):
        raise UserError(f"{what} {raw}: would replace the current directory; give a subdirectory")
    if not target.exists():
        if target.parent.exists() and not target.parent.is_dir():
            raise UserError(f"{what} {raw}: {target.parent} is a file, not a directory")
        for parent in target.parents:
            if parent.exists() and not parent.is_dir():
                raise UserError(f"{what} {raw}: {parent} is a file, not a directory")
        return target
    if not target.is_dir():
        raise UserError(f"{what} {raw}: is a file, not a directory; give a directory rlvf may write")
    if (target / MARKER).is_file() or not any(target.iterdir()):
        return target
    if legacy is not None and legacy(target):
        return target
    raise UserError(
        f"{what} {raw}: holds files rlvf did not write (no {MARKER}); "
        "give a new or empty directory, or remove it yourself"
    )


def check_registry(path: str | Path) -> Path:
    return check_target(path, "--registry", _legacy_registry)


def check_site(site_dir: str | Path, report_dir: str) -> Path:
    """SITE must be a directory (or absent); SITE/<report_dir> must be rlvf's."""
    site = Path(site_dir)
    if site.exists() and not site.is_dir():
        raise UserError(f"--site {site}: is a file, not a directory")
    return check_target(site / report_dir, "--site", _legacy_report)


def check_apart(a: Path, b: Path) -> None:
    if a == b or a.is_relative_to(b) or b.is_relative_to(a):
        raise UserError(f"the registry ({a}) and the site pages ({b}) must not overlap")


def stage(target: Path, files: dict[str, str | bytes]) -> Path:
    """Write `files` into a new sibling of `target`, with rlvf's marker; return its path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        (tmp / MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        for rel, content in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                with p.open("w", encoding="utf-8", newline="\n") as fh:
                    fh.write(content)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _journal(lock_target: Path) -> Path:
    return lock_target.with_name(f".{lock_target.name}.rlvf-journal")


@contextlib.contextmanager
def locked(lock_target: Path) -> Iterator[None]:
    """Exclusive lock for replacing `lock_target` (and the trees committed with it)."""
    # the parent directory itself is locked: no lock file is left beside the user's trees
    lock_target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _swap_in(staged: Path, target: Path) -> Path | None:
    """Rename `staged` to `target`; the old target goes to a sibling returned for removal."""
    old = None
    if target.exists():
        old = target.with_name(staged.name.replace(".new-", ".old-", 1))
        os.replace(target, old)
    os.replace(staged, target)
    return old


def _roll_forward(journal: Path) -> None:
    """Finish a commit: every staged dir still present replaces its target."""
    pending = json.loads(journal.read_text(encoding="utf-8"))
    olds = []
    for staged, target in pending:
        staged, target = Path(staged), Path(target)
        if staged.is_dir():
            olds.append(_swap_in(staged, target))
    journal.unlink()
    for old in olds:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def recover(lock_target: Path, targets: list[Path]) -> None:
    """Under the lock: finish a commit a killed export left, drop dead exports' staging dirs."""
    journal = _journal(lock_target)
    if journal.exists():
        _roll_forward(journal)
    for target in targets:
        if not target.parent.is_dir():
            continue
        for sib in target.parent.iterdir():
            m = _STAGE.match(sib.name)
            if m and m["name"] == target.name and not pid_alive(int(m["pid"])):
                if not target.exists() and ".old-" in sib.name:
                    os.replace(sib, target)  # a swap cut between its two renames
                else:
                    shutil.rmtree(sib, ignore_errors=True)


def commit(lock_target: Path, pairs: list[tuple[Path, Path]]) -> None:
    """Replace each target by its staged dir, all or none (see the module docstring)."""
    with locked(lock_target):
        recover(lock_target, [t for _, t in pairs])
        journal = _journal(lock_target)
        tmp = journal.with_name(journal.name + f".{os.getpid()}")
        tmp.write_text(json.dumps([[str(s), str(t)] for s, t in pairs]), encoding="utf-8")
        os.replace(tmp, journal)  # the commit point
        _roll_forward(journal)


def discard(staged: list[Path]) -> None:
    for s in staged:
        shutil.rmtree(s, ignore_errors=True)
