"""`rlvf export`: MLflow store -> `registry/` -> `site/report/`, nothing half-written.

The site is always rendered from the registry's own JSON (parsed back after writing it to
text), so `export` and `export --from-registry` give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvf.report import atomic, registry
from rlvf.report.collect import Selection, collect
from rlvf.report.pages import REPORT_DIR, render_site


def _parse(files: dict[str, str]) -> tuple[dict[str, dict], dict[str, Any]]:
    records = {}
    for path, text in files.items():
        if path.startswith("runs/"):
            rec = json.loads(text)
            records[rec["run_id"]] = rec
    return records, json.loads(files["study.json"])


def _site_files(records: dict[str, dict], study: dict[str, Any]) -> dict[str, str]:
    prefix = REPORT_DIR + "/"
    return {k[len(prefix) :]: v for k, v in render_site(records, study).items()}


def _replace(lock_target: Path, trees: list[tuple[Path, dict[str, str]]]) -> None:
    staged: list[Path] = []
    try:
        for target, files in trees:
            staged.append(atomic.stage(target, files))
        atomic.commit(lock_target, [(s, t) for s, (t, _) in zip(staged, trees, strict=True)])
    except BaseException:
        atomic.discard(staged)
        raise


def export(
    client: Any,
    selection: Selection,
    registry_dir: str | Path = "registry",
    site_dir: str | Path = "site",
    pairs: list[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Read the selected runs, write the registry and the site's generated pages.

    Both trees are replaced together or not at all, and only if they are rlvf's own
    (`rlvf.report.atomic`): checked before the store is read, so a refusal costs nothing.
    """
    reg_target = atomic.check_registry(registry_dir)
    site_target = atomic.check_site(site_dir, REPORT_DIR)
    atomic.check_apart(reg_target, site_target)
    records, named = collect(client, selection, list(pairs))
    reg_files = registry.render(records, {"pairs": named})
    records, study = _parse(reg_files)
    site_files = _site_files(records, study)
    _replace(reg_target, [(reg_target, reg_files), (site_target, site_files)])
    return {
        "runs": len(records),
        "pairs": len(named),
        "pages": sum(f.endswith(".md") for f in site_files),
        "plots": sum(f.endswith(".svg") for f in site_files),
    }


def rebuild(registry_dir: str | Path = "registry", site_dir: str | Path = "site") -> dict[str, Any]:
    """Rebuild the site's generated pages from `registry/` alone (no MLflow store)."""
    site_target = atomic.check_site(site_dir, REPORT_DIR)
    records, study = registry.load(registry_dir)
    site_files = _site_files(records, study)
    _replace(site_target, [(site_target, site_files)])
    return {
        "runs": len(records),
        "pairs": len(study.get("pairs", [])),
        "pages": sum(f.endswith(".md") for f in site_files),
        "plots": sum(f.endswith(".svg") for f in site_files),
    }
