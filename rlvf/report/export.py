"""`rlvf export`: MLflow store -> `registry/` -> `site/report/`, nothing half-written.

The site is always rendered from the registry's own JSON (parsed back after writing it to
text), so `export` and `export --from-registry` give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvf.report import registry
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


def export(
    client: Any,
    selection: Selection,
    registry_dir: str | Path = "registry",
    site_dir: str | Path = "site",
    pairs: list[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Read the selected runs, write the registry and the site's generated pages."""
    records, named = collect(client, selection, list(pairs))
    reg_files = registry.render(records, {"pairs": named})
    records, study = _parse(reg_files)
    site_files = _site_files(records, study)
    registry.write_tree(registry_dir, reg_files)
    registry.write_tree(Path(site_dir) / REPORT_DIR, site_files)
    return {
        "runs": len(records),
        "pairs": len(named),
        "pages": sum(f.endswith(".md") for f in site_files),
        "plots": sum(f.endswith(".svg") for f in site_files),
    }


def rebuild(registry_dir: str | Path = "registry", site_dir: str | Path = "site") -> dict[str, Any]:
    """Rebuild the site's generated pages from `registry/` alone (no MLflow store)."""
    records, study = registry.load(registry_dir)
    site_files = _site_files(records, study)
    registry.write_tree(Path(site_dir) / REPORT_DIR, site_files)
    return {
        "runs": len(records),
        "pairs": len(study.get("pairs", [])),
        "pages": sum(f.endswith(".md") for f in site_files),
        "plots": sum(f.endswith(".svg") for f in site_files),
    }
