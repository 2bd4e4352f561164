"""End to end: a study in a real sqlite MLflow store (native runs + imported results) ->
`rlvf export` -> registry/ + site/report/ -> `mkdocs build --strict`, and `rlvf compare`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import report_study as rs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    ids = rs.build_study(root)
    ids["root"] = root
    r = rs.cli(
        "export",
        "--tracking-uri",
        ids["uri"],
        "--registry",
        str(root / "registry"),
        "--site",
        str(root / "site"),
        "--pair",
        ids["dpo"],
        "dpo-n_pairs100",
    )
    assert r.exit_code == 0, r.output
    return ids


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _page(study, name: str) -> str:
    return (study["root"] / "site" / "report" / name).read_text()


def _records(study) -> dict[str, dict]:
    runs = study["root"] / "registry" / "runs"
    return {p.stem: json.loads(p.read_text()) for p in runs.glob("*.json")}


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_default_selection_registered_imported_and_baselines(study):
    recs = _records(study)
    names = ("base", "sft", "dpo", "grpo", "kto", "orpo", "other_base", "scan100", "scan200", "scan400")
    synthetic = {k for k in recs if k.startswith("base-eval-")}
    assert len(synthetic) == 1  # kto and orpo recorded the same base eval: one shared base row
    assert set(recs) == {study[k] for k in names} | synthetic  # the pairs run has no results
    (sid,) = synthetic
    assert recs[sid]["recorded_by"] == sorted([study["kto"], study["orpo"]])
    assert recs[sid]["method"] == "base" and recs[sid]["label"] == "base (tiny)"
    assert recs[study["kto"]]["baseline"] == {"run_id": sid, "rule": "base_eval"}
    assert recs[study["sft"]]["baseline"] == {"run_id": study["base"], "rule": "parent"}
    assert recs[study["dpo"]]["baseline"] == {"run_id": study["base"], "rule": "base"}
    assert recs[study["scan400"]]["baseline"]["run_id"] == study["other_base"]
    assert recs[study["dpo"]]["registered"][0]["aliases"] == ["champion"]
    dpo = recs[study["dpo"]]["evals"]["humaneval"]
    assert dpo["correct"]["0"] == [int(i in rs.DPO) for i in range(rs.N)]
    assert recs[study["scan100"]]["kind"] == "imported" and recs[study["scan100"]]["scan"] == {"n_pairs": 100}
    metrics = json.loads((study["root"] / "registry" / "metrics.json").read_text())
    assert metrics["runs"][study["dpo"]]["metrics"]["humaneval/pass_at_1"]["mean"] == pytest.approx(
        len(rs.DPO) / rs.N
    )


def test_head_to_head_counts_add_up_and_lists_match_pass_vectors(study):
    recs = _records(study)
    text = _page(study, "head-to-head.md")
    sections = re.findall(
        r"## (.+?) vs (.+?): (\S+)\n\n\| Improved.*?\n\|.*?\n\| (.+?) \|\n\n((?:\?\?\? \w+ \"(?:Improved|Regressed|Both fail|Both pass) \(\d+\)\"\n\n    .*\n\n)+)",
        text,
    )
    assert len(sections) == 9  # 8 baseline comparisons (one with 2 suites); the named pair is refused
    by_label = {r["label"]: r for r in recs.values()}
    for run_label, base_label, suite, counts_row, blocks in sections:
        # each list is collapsed (pymdownx.details): '??? kind "Title (n)"' then the indented list
        lists = "\n".join(line.strip() for line in blocks.splitlines() if line.startswith("    "))
        cells = [c.strip() for c in counts_row.split("|")]
        improved, regressed, both_pass, both_fail, net, n_tasks = (int(c) for c in cells[:6])
        assert improved + regressed + both_pass + both_fail == n_tasks
        assert net == improved - regressed
        a = by_label[base_label.replace("\\", "")]["evals"][suite]
        b = by_label[run_label.replace("\\", "")]["evals"][suite]
        assert n_tasks == len(a["task_ids"])

        def passes(ev):
            seeds = [str(s) for s in ev["seeds"]]
            return {
                t
                for i, t in enumerate(ev["task_ids"])
                if sum(ev["correct"][s][i] for s in seeds) >= 0.5 * ev["n_samples"] * len(seeds)
            }

        pa, pb = passes(a), passes(b)
        listed = {
            k: set(re.findall(r"`([^`]+)`", line))
            for k, line in zip(
                ("improved", "regressed", "both_fail", "both_pass"), lists.strip().split("\n"), strict=True
            )
        }
        assert listed["improved"] == pb - pa and len(listed["improved"]) == improved
        assert listed["regressed"] == pa - pb and len(listed["regressed"]) == regressed
        assert listed["both_pass"] == pa & pb and listed["both_fail"] == set(a["task_ids"]) - pa - pb
    dpo = _section(text, "dpo vs base: humaneval")
    improved = ", ".join(f"`{t}` 0%→100%" for t in rs.EXPECT["dpo_improved"])
    assert f'??? success "Improved (10)"\n\n    {improved}\n' in dpo
    assert '??? failure "Regressed (1)"\n\n    `HumanEval/3` 100%→0%\n' in dpo
    # the completions behind the changed verdicts: dpo's passing one and base's failing one
    assert '??? example "Improved: completions that changed verdict (5 tasks)"' in dpo
    assert "# dpo HumanEval/15 s0 k0" in dpo and "# base HumanEval/15 s0 k0" in dpo
    assert "*base (baseline)*: **name\\_error**, 1/3 tests" in dpo
    assert "*…and 5 more improved tasks.*" in dpo
    assert (
        "# dpo HumanEval/3 s0 k0"
        in _section(dpo, "dpo vs base: humaneval").split("Regressed: completions")[1]
    )


def test_universally_hard_tasks_are_per_comparable_group(study):
    """Two base models are never intersected: the tiny group's hard tasks (25..29: no tiny run
    passes them) are reported even though other-model's runs pass some of them."""
    hard = _section(_page(study, "head-to-head.md"), "Universally hard tasks")
    rows = {
        tuple(c.strip() for c in r.split("|")[1:4]): r
        for r in hard.splitlines()
        if r.startswith("| ") and "---" not in r
    }
    inv = {r["label"]: r["invariants_hash"] for r in _records(study).values()}
    assert len(rows) == 1 + 4  # header + humaneval: tiny greedy, tiny sampled, other-model; procedural
    # tiny, greedy: base, sft, dpo, grpo; sampled: base_eval, kto, orpo; both fail 25..29
    for label in ("base", "kto"):
        row = rows[("tiny", f"`{inv[label]}`", "humaneval")]
        assert row.endswith(
            "| 30 | 4 | 5 | see below |" if label == "base" else "| 30 | 3 | 5 | see below |"
        ), row
    # other-model: its base passes 0..19 and dpo-n_pairs100 0..21, so 22..29 fail for all four runs
    row = rows[("other-model", f"`{inv['other-base']}`", "humaneval")]
    assert row.endswith("| 30 | 4 | 8 | see below |"), row
    tasks = ", ".join(f"`HumanEval/{i}`" for i in range(25, 30))
    assert f'??? note "Failed by all: tiny on humaneval (5)"\n\n    {tasks}\n' in hard


def test_deltas_have_uncertainty_and_non_significant_ones_say_so(study):
    text = _section(_page(study, "deltas.md"), "humaneval: pass@1")
    rows = {r.split("|")[1].strip(): r for r in text.splitlines() if r.startswith("| ") and "---" not in r}
    assert rows["dpo"].rstrip(" |").endswith("significant improvement")
    assert "0.012 (10/1)" in rows["dpo"] and "+30.00pp" in rows["dpo"]
    for label in ("sft", "grpo", "dpo-n\\_pairs100", "dpo-n\\_pairs200"):
        assert rows[label].rstrip(" |").endswith("*not significant*"), rows[label]
    assert rows["dpo-n\\_pairs400"].rstrip(" |").endswith("significant regression")
    lm = _section(_page(study, "deltas.md"), "lm-eval")
    lm_rows = {tuple(c.strip() for c in r.split("|")[1:4]): r for r in lm.splitlines() if r.startswith("| ")}
    assert "0.48 ± 0.004 | 0.47 ± 0.004" in lm_rows[("sft", "base", "mmlu/acc")]
    assert lm_rows[("sft", "base", "mmlu/acc")].rstrip(" |").endswith("*within 2×SE: not significant*")
    dpo_mmlu = lm_rows[("dpo", "base", "mmlu/acc")]
    assert "-0.0800" in dpo_mmlu and dpo_mmlu.rstrip(" |").endswith("beyond 2×SE — **forgetting**")


def test_lm_eval_columns_forgetting_flag_and_task_version_refusal(study):
    """Results: lm-eval columns as value ± stderr; Deltas: dpo gains pass@1 but loses MMLU beyond
    2×SE (flagged), sft's gsm8k changed task version (refused in one line, never flagged)."""
    results = _page(study, "results.md")
    all_runs = _section(results, "All runs")
    header = next(line for line in all_runs.splitlines() if line.startswith("| Run |"))
    assert "gsm8k/<wbr>exact\\_<wbr>match\\_<wbr>strict-match (± stderr)" in header
    assert header.rstrip(" |").endswith("mmlu/<wbr>acc (± stderr) | Cost (wall time, GPU-h, $)")
    rows = {
        r.split("|")[1].strip(): r for r in all_runs.splitlines() if r.startswith("| ") and "---" not in r
    }
    assert rows["dpo"].rstrip(" |").endswith("0.4 ± 0.004 | 10 min")
    assert "| 0.3 ± 0.01 | 0.48 ± 0.004 |" in rows["base"]
    deltas = _page(study, "deltas.md")
    forgetting = _section(deltas, "Forgetting regressions")
    assert (
        "- dpo vs base: **forgetting regression**: pass@1 up on humaneval, but mmlu/acc worse beyond 2×SE."
        in forgetting
    )
    assert forgetting.count("**forgetting regression**") == 1  # sft gains too, but loses nothing comparable
    refused = _section(deltas, "Not compared")
    assert (
        "- sft vs base on lm-eval gsm8k: **not compared**, the task version changed (3.0 → 2.0): "
        "its numbers are not comparable." in refused
    )
    assert "gsm8k" not in _section(deltas, "lm-eval")
    recs = _records(study)
    assert recs[study["sft"]]["lm_eval_versions"] == {"gsm8k": "2.0", "mmlu": "1.0"}
    r = rs.cli("compare", study["base"], study["sft"], "--tracking-uri", study["uri"])
    assert r.exit_code == 0, r.output
    assert "lm-eval gsm8k: not compared, the task version changed (3.0 -> 2.0)" in r.output
    r = rs.cli("compare", "base", "dpo", "--registry", str(study["root"] / "registry"))
    assert r.exit_code == 0, r.output
    assert "forgetting regression: pass@1 up on humaneval, but mmlu/acc worse beyond 2×SE" in r.output


def test_results_summary_one_row_per_method_and_phase_deltas(study):
    """Seed 004's page on top of Results: one row per method (± labelled), then each run against
    the run it started from (dpo's model.init is sft) and against the chain's root, with verdicts."""
    summary = _section(_page(study, "results.md"), "Summary")
    tiny = summary[summary.index("### tiny\n") :]
    header = next(r for r in tiny.splitlines() if r.startswith("| Method |"))
    assert "humaneval pass@1 (%, mean ± std over seeds)" in header and "mmlu/<wbr>acc (± stderr)" in header
    rows = [r for r in tiny.split("\n\n")[1].splitlines() if r.startswith("| **")]
    assert [r.split("|")[1].strip() for r in rows] == [
        "**base**",
        "**base**",
        "**sft**",
        "**dpo**",
        "**kto**",
        "**orpo**",
        "**grpo**",
    ]
    sft = next(r for r in rows if r.startswith("| **sft** |"))
    assert "| sft | base |" in sft and sft.rstrip(" |").endswith("15 min, 0.25 GPU-h (H100), $0.75")
    dpo = next(r for r in rows if r.startswith("| **dpo** |"))
    assert "| dpo | sft |" in dpo and "80.0 ± 0.0 (n=3)" in dpo
    phases = {r.split("|")[1].strip(): r for r in tiny.splitlines() if r.startswith("| **") and " − " in r}
    assert set(phases) == {
        "**sft − base**",
        "**dpo − sft**",
        "**dpo − base**",
        "**kto − base**",
        "**orpo − base**",
        "**grpo − base**",
    }
    # dpo − sft: +31.11pp, improved 11 (15..24 and 0) / regressed 2 (3, 15): significant
    assert (
        "**+31.11pp** ± " in phases["**dpo − sft**"]
        and "<br>significant improvement" in phases["**dpo − sft**"]
    )
    assert "<br>*not significant*" in phases["**sft − base**"]
    assert "**-0.0800** ± 0.0057<br>beyond 2×SE" in phases["**dpo − base**"]
    other = summary[summary.index("### other-model\n") : summary.index("### tiny\n")]
    assert "| **dpo** | dpo-n\\_pairs400 | other-base |" in other  # the scan's latest run stands for it
    assert "**-33.33pp** ± " in other and "significant regression" in other


def test_reward_hacking_and_samples_pages(study):
    hack = _page(study, "reward-hacking.md")
    grpo = _section(hack, "grpo (grpo)")
    assert "![hacking rates of grpo](plots/hacking-grpo.svg)" in grpo
    assert "16 rollouts over 4 step bins" in grpo
    # tampering: 0, 1, 2, 3 of 4 rollouts at steps 0..3 -> 1/8 in the first half, 5/8 in the second
    assert "| tampering | 6 | 12.5% | 62.5% |" in grpo and "| flag: test\\_file | 6 | 12.5% | 62.5% |" in grpo
    assert '??? danger "tampering: 3 example(s)"' in grpo and "sys.exit(0)  # step 3 task 0" in grpo
    svg = (study["root"] / "site" / "report" / "plots" / "hacking-grpo.svg").read_text()
    assert ">tampering<" in svg and ">rollouts: hacking verdict or flag<" in svg
    index = _page(study, "samples.md")
    assert "| [dpo](samples/dpo.md) | dpo | humaneval |" in index
    assert "| sft | sft | — | 0 | no samples recorded |" in index
    page = _page(study, "samples/dpo.md")
    # task 3: dpo fails it in every seed; three failing samples (one per seed: same category)
    assert '??? failure "HumanEval/3: 0/3 shown pass"' in page
    assert '??? success "HumanEval/15: 3/3 shown pass"' in page
    assert "**pass**, 3/3 tests (seed 0, sample 0)" in page and "# dpo HumanEval/15 s0 k0" in page


def test_mismatched_invariants_are_refused(study):
    deltas = _page(study, "deltas.md")
    refused = _section(deltas, "Not compared")
    assert (
        "dpo-n\\_pairs100 vs dpo: **not compared**, invariants differ: base\\_model (tiny vs other-model)"
        in refused
    )
    # no delta row for the refused pair anywhere
    assert not re.search(r"^\| dpo-n\\_pairs100 \| dpo \|", deltas, re.M)
    assert "dpo-n\\_pairs100 vs dpo" not in _page(study, "head-to-head.md")
    assert "**refused**: base\\_model (tiny vs other-model)" in _page(study, "fairness.md")
    r = rs.cli("compare", study["dpo"], study["scan100"], "--tracking-uri", study["uri"])
    assert r.exit_code == 2
    assert (
        r.output.count("\n") == 1
        and "not comparable: invariants differ: base_model (tiny vs other-model)" in r.output
    )


def test_failure_modes_procedural_training_and_scaling_pages(study):
    fail = _section(_page(study, "failures.md"), "Shift: dpo vs base on humaneval")
    name_row = next(r for r in fail.splitlines() if "| name\\_error |" in r)
    odd_fixed = [f"`HumanEval/{i}`" for i in range(15, 25) if i % 2]
    # base fails 15..29 (8 odd ones: name_error); dpo fixes 15..24 and breaks 3 (odd)
    assert name_row.endswith("| 8.00 ± 0.00 | 4.00 ± 0.00 | -4.00 | 5 | 1 |")
    # the tasks behind it are below the table, collapsed (no task ids squeezed into cells)
    assert (
        '??? note "name_error: tasks with fewer (5) / more (1)"\n\n'
        "    - **Fewer:** " + ", ".join(odd_fixed) + "\n    - **More:** `HumanEval/3`\n"
    ) in fail
    assert "![failure categories on humaneval](plots/failures-humaneval.svg)" in _page(study, "failures.md")
    proc = _page(study, "procedural.md")
    assert (
        "## procedural: by type" in proc
        and "![difficulty curve on procedural](plots/difficulty-procedural.svg)" in proc
    )
    training = _page(study, "training.md")
    assert re.search(r"\| grpo \| grpo \| loss\\_diverged, reward\\_hacking \| 18\.2 \|", training)
    assert "| sft | sft | ok | 0.5 | 40 | 8.0 GiB | 15 min, 0.25 GPU-h (H100), $0.75 |" in training
    assert "plots/training-sft.svg" in training
    # grpo's own curves, one panel each, with its health flags beside them
    grpo = _section(training, "grpo")
    assert "Health: grpo: **loss\\_diverged, reward\\_hacking**" in grpo
    svg = (study["root"] / "site" / "report" / "plots" / "training-grpo.svg").read_text()
    for title in (
        "loss",
        "reward (mean)",
        "KL to reference",
        "entropy",
        "clip fraction",
        "verifier_tampering_rate",
    ):
        assert f">{title}<" in svg, title
    scaling = _page(study, "scaling.md")
    assert '!!! warning "Negative scaling"' in scaling and "73.3% at 100 → 33.3% at 400" in scaling
    results = _page(study, "results.md")
    assert "| dpo | dpo | tiny |" in results and "80.0 ± 0.0 (n=3)" in results and "0.48 ± 0.004" in results
    svg = (study["root"] / "site" / "report" / "plots" / "results-humaneval.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "dc:date" not in svg.lower()


def test_reexport_is_byte_identical_and_site_rebuilds_from_registry_alone(study, tmp_path):
    root = study["root"]
    before_reg, before_site = _tree(root / "registry"), _tree(root / "site")
    r = rs.cli(
        "export",
        "--tracking-uri",
        study["uri"],
        "--registry",
        str(root / "registry"),
        "--site",
        str(root / "site"),
        "--pair",
        study["dpo"],
        "dpo-n_pairs100",
    )
    assert r.exit_code == 0, r.output
    assert _tree(root / "registry") == before_reg and _tree(root / "site") == before_site
    # without the MLflow store: copy the registry elsewhere and rebuild
    reg = tmp_path / "registry"
    shutil.copytree(root / "registry", reg)
    r = rs.cli("export", "--from-registry", "--registry", str(reg), "--site", str(tmp_path / "site"))
    assert r.exit_code == 0, r.output
    assert _tree(tmp_path / "site") == before_site


def test_mkdocs_build_strict(study, tmp_path):
    shutil.copytree(study["root"] / "site", tmp_path / "site")
    shutil.copy(REPO / "site" / "index.md", tmp_path / "site" / "index.md")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "site_build" / "report" / "results.html").read_text()
    assert "<table>" in html and 'src="plots/results-humaneval.svg"' in html
    assert "fonts.googleapis" not in html


def test_compare_prints_head_to_head_and_deltas(study):
    r = rs.cli("compare", study["base"], study["dpo"], "--tracking-uri", study["uri"])
    assert r.exit_code == 0, r.output
    assert "significant improvement" in r.output and "0.012 (10/1)" in r.output
    assert "Improved (10): " + ", ".join(rs.EXPECT["dpo_improved"]) in r.output
    assert "Regressed (1): HumanEval/3" in r.output
    # which ± is which, said under the table
    assert "pass@1 mean ± std over eval seeds" in r.output and "combined stderr over tasks" in r.output
    r = rs.cli(
        "compare", "base", "sft", "--registry", str(study["root"] / "registry"), "--suite", "humaneval"
    )
    assert r.exit_code == 0, r.output
    assert "not significant" in r.output and "Improved (1): HumanEval/15" in r.output


def test_selection_options(study, tmp_path):
    def run_ids(*args):
        r = rs.cli(
            "export",
            "--tracking-uri",
            study["uri"],
            "--registry",
            str(tmp_path / "r"),
            "--site",
            str(tmp_path / "s"),
            *args,
        )
        assert r.exit_code == 0, r.output
        return {p.stem for p in (tmp_path / "r" / "runs").glob("*.json")}

    assert run_ids("--model", "tiny-dpo") == {study["dpo"], study["base"]}
    assert run_ids("--alias", "tiny-dpo@champion") == {study["dpo"], study["base"]}
    assert run_ids("--experiment", "legacy") == {
        study[k] for k in ("other_base", "scan100", "scan200", "scan400")
    }
    assert run_ids("--tag", "rlvf.method=grpo") == {study["grpo"], study["base"]}
    assert run_ids("--run", study["sft"]) == {study["sft"], study["base"]}
    assert study["other_base"] not in run_ids("--no-imported")


@pytest.mark.parametrize(
    "args,message",
    [
        (["export", "--run", "0123456789abcdef"], "unknown run id '0123456789abcdef'"),
        (["export", "--alias", "tiny-dpo@nope"], "no model version tiny-dpo@nope"),
        (["export", "--experiment", "nope"], "no experiment named 'nope'"),
        (["export", "--pair", "base", "nope"], "unknown run id 'nope'"),
        (["compare", "nope", "base"], "unknown run id 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_leaves_registry_untouched(study, args, message):
    root = study["root"]
    before = _tree(root / "registry"), _tree(root / "site")
    r = rs.cli(
        *args,
        "--tracking-uri",
        study["uri"],
        *(
            ["--registry", str(root / "registry"), "--site", str(root / "site")]
            if args[0] == "export"
            else []
        ),
    )
    assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, r.output
    assert (_tree(root / "registry"), _tree(root / "site")) == before
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def test_import_bad_files_create_no_run(study, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(study["uri"])
    exp = client.get_experiment_by_name("legacy").experiment_id
    n_runs = len(client.search_runs([exp]))
    bad = tmp_path / "bad_results.jsonl"
    bad.write_text('{"task_id": "HumanEval/0", "passed": true}\n{"task_id": 3, "passed": true}\n')
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"HumanEval/0": True}))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"HumanEval/1": True}))
    for files, message in (
        ([bad], "bad_results.jsonl:2: 'task_id' must be a non-empty string"),
        ([a, b], "mismatched task sets"),
        ([tmp_path / "missing.json"], "no such file"),
        ([tmp_path], "is a directory; pass one run's result files"),
    ):
        r = rs.cli(
            "import-results",
            *map(str, files),
            "--method",
            "dpo",
            "--base-model",
            "m",
            "--tracking-uri",
            study["uri"],
            "--experiment",
            "legacy",
        )
        assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, r.output
    assert len(client.search_runs([exp])) == n_runs


def test_repo_site_is_generated_from_repo_registry(tmp_path):
    """site/report/ in the repository is exactly what `rlvf export --from-registry` makes of registry/."""
    r = rs.cli("export", "--from-registry", "--registry", str(REPO / "registry"), "--site", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert _tree(tmp_path / "report") == _tree(REPO / "site" / "report"), "run `rlvf export --from-registry`"


def test_import_manifest_of_a_results_directory(study, tmp_path):
    """Seed 001's directory of per-condition result files, imported in one command."""
    from mlflow import MlflowClient

    d = tmp_path / "results"
    d.mkdir()
    for name, passing in (("base_15b", range(20)), ("dpo_500_15b", range(18)), ("dpo_2k_15b", range(8))):
        (d / f"{name}_humaneval.json").write_text(
            json.dumps(
                {
                    "pass@1": len(passing) / rs.N,
                    "results": {t: int(t.split("/")[1]) in passing for t in rs.TASKS},
                }
            )
        )
    manifest = tmp_path / "seed001.yaml"
    manifest.write_text(
        "defaults: {base_model: starcoder2-15b, suite: humaneval}\n"
        "runs:\n"
        "  - {label: base-15b, method: base, files: results/base_15b_humaneval.json}\n"
        "  - {label: dpo-500-15b, method: dpo, params: {n_pairs: 500}, baseline: base-15b,\n"
        "     files: [results/dpo_500_15b_humaneval.json], train: {loss: 1.1244, steps: 32, wall_s: 1380}}\n"
        "  - {label: dpo-2k-15b, method: dpo, params: {n_pairs: 2052}, baseline: base-15b,\n"
        "     files: [results/dpo_2k_15b_humaneval.json], health: loss_diverged}\n"
    )
    client = MlflowClient(study["uri"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest.read_text().replace("dpo_2k_15b_humaneval.json", "missing.json"))
    r = rs.cli(
        "import-results", "--manifest", str(bad), "--tracking-uri", study["uri"], "--experiment", "seed001"
    )
    assert (
        r.exit_code == 2
        and r.output.count("\n") == 1
        and "runs[2]" in r.output
        and "no such file" in r.output
    )
    seed001 = client.get_experiment_by_name("seed001").experiment_id
    assert client.search_runs([seed001]) == []  # nothing was written

    r = rs.cli(
        "import-results",
        "--manifest",
        str(manifest),
        "--tracking-uri",
        study["uri"],
        "--experiment",
        "seed001",
    )
    assert r.exit_code == 0, r.output
    ids = dict(line.split(" as run ") for line in r.output.splitlines() if " as run " in line)
    ids = {k.removeprefix("imported "): v for k, v in ids.items()}
    assert set(ids) == {"base-15b", "dpo-500-15b", "dpo-2k-15b"}
    dpo = client.get_run(ids["dpo-2k-15b"])
    assert (
        dpo.data.tags["rlvf.baseline_run_id"] == ids["base-15b"]
        and dpo.data.tags["rlvf.health"] == "loss_diverged"
    )
    assert dpo.data.metrics["eval/humaneval/pass_at_1"] == pytest.approx(8 / rs.N)
    assert client.get_run(ids["dpo-500-15b"]).data.metrics["train/steps"] == 32

    out = tmp_path / "out"
    r = rs.cli(
        "export",
        "--experiment",
        "seed001",
        "--tracking-uri",
        study["uri"],
        "--registry",
        str(out / "r"),
        "--site",
        str(out / "s"),
    )
    assert r.exit_code == 0, r.output
    scaling = (out / "s" / "report" / "scaling.md").read_text()
    assert '!!! warning "Negative scaling"' in scaling and "60.0% at 500 → 26.7% at 2052" in scaling
