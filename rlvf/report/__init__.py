"""Reports: MLflow runs -> `registry/` snapshot -> MkDocs pages and plots, and `rlvf compare`.

- `collect`: select runs in an MLflow store and read them into registry records (plain dicts).
- `registry`: write/read `registry/` deterministically (temp dir, then swap).
- `stats`: mean/std/stderr, exact McNemar, paired bootstrap, the 2x stderr rule.
- `headtohead`: fairness checks, deltas with verdicts, head-to-head, failure shifts, scaling.
- `pages` / `plots`: the Markdown pages and SVG plots under `site/report/`.
- `export`: the whole path, all-or-nothing; `terminal`: `rlvf compare`'s tables.
- `cli`: `rlvf import-results` (see `rlvf.importers`), `rlvf export`, `rlvf compare`.
"""
