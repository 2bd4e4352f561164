"""The method registry: every method-dependent table is derived from it (schema, shortcuts,
CLI, MLproject, stages, invariants, scan tag), config hashes did not move when the code was
reshaped around it, and a method defined in a test plugs in by registering alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from stores import seed_store

from rlvf.config.fields import Field
from rlvf.methods import Method, Training, get, methods, names, register, unregister

ROOT = Path(__file__).resolve().parents[1]

# config_hash and invariants_hash of each entry point's config for the shipped recipes,
# recorded on the code before the registry (commit 9298dd3): the reshaping kept them.
RECORDED = {
    "bootstrap/default": ("be534b41", "9bf02949"),
    "pairs/default": ("42decd09", "9bf02949"),
    "sft/default": ("0a2e12ba", "7eb96749"),
    "dpo/default": ("72df127b", "7eb96749"),
    # eval's hash moved once on purpose: best-of-N added eval.select / eval.select_n (they
    # change an eval's numbers); its invariants did not move.
    "eval/default": ("798864a2", "772e193c"),
    "bootstrap/small": ("eec4098b", "bd1b4073"),
    "pairs/small": ("5edfac32", "bd1b4073"),
    "sft/small": ("e2f07279", "9bcca7a4"),
    "dpo/small": ("cf7cba2d", "9bcca7a4"),
    # recorded when each method was added; rloo, ppo and online_dpo moved once on purpose
    # (method revision 2: rollouts draw from per-row streams; their invariants did not move),
    # rloo once more (revision 3: CPU log-probs of the completion tokens only)
    "kto/default": ("c6affbcb", "7eb96749"),
    "orpo/default": ("23749ceb", "7eb96749"),
    "kto/small": ("a46cda1d", "9bcca7a4"),
    "orpo/small": ("dac35157", "9bcca7a4"),
    "rloo/default": ("894f18c1", "7eb96749"),
    "rloo/small": ("ef64dde0", "9bcca7a4"),
    "eval/small": ("47607198", "e731329c"),
    # recorded when the reward model (rm) was added
    "rm/default": ("7731ef57", "404dad3e"),
    "rm/small": ("980c5c7a", "7c7d19c7"),
    "ppo/default": ("f65b0ebd", "7eb96749"),
    "ppo/small": ("0260a841", "9bcca7a4"),
    "online_dpo/default": ("93a3904c", "7eb96749"),
    "online_dpo/small": ("95f11ec2", "9bcca7a4"),
}


# The default recipe runs lm-eval's local tasks (rlvf.evaluate.lmeval): these are its hashes.
# With lm-eval off (eval.lm_eval.tasks=[]), every config keeps its RECORDED hashes above.
RECORDED_LM_EVAL = {
    "sft/default": ("fff5df27", "5adff195"),
    "dpo/default": ("bc27c63d", "5adff195"),
    "eval/default": ("1e366761", "4ff2dda1"),
    "kto/default": ("48099aca", "5adff195"),
    "orpo/default": ("d5ea4172", "5adff195"),
    "rloo/default": ("d2a138ee", "5adff195"),
    "ppo/default": ("6795082e", "5adff195"),
    "online_dpo/default": ("688a4dd2", "5adff195"),
}


@pytest.mark.parametrize("which", sorted(RECORDED))
def test_config_hash_unchanged(which):
    from rlvf.config import load_config
    from rlvf.config.schema import applies

    method, recipe = which.split("/")
    off = ["eval.lm_eval.tasks=[]"] if applies("eval.lm_eval.tasks", method) else []
    cfg = load_config(method, recipe, off)
    assert (cfg.hash, cfg.invariants_hash) == RECORDED[which]
    cfg = load_config(method, recipe)
    assert (cfg.hash, cfg.invariants_hash) == RECORDED_LM_EVAL.get(which, RECORDED[which])


def test_iterative_dpo_keys_at_their_defaults_keep_dpos_hash():
    """dpo.rounds 1 and dpo.keep_pairs false are plain DPO: left out of config_hash, so the
    hashes recorded before the keys existed still hold; any other value is another config."""
    from rlvf.config import load_config

    for recipe in ("default", "small"):
        plain = load_config("dpo", recipe, ["dpo.rounds=1", "dpo.keep_pairs=false"])
        recorded = RECORDED_LM_EVAL.get(f"dpo/{recipe}", RECORDED[f"dpo/{recipe}"])
        assert plain["dpo.rounds"] == 1 and plain.hash == recorded[0]
        assert "dpo.rounds" not in plain.hashed() and "dpo.rounds" in plain.flat()
        assert load_config("dpo", recipe, ["dpo.rounds=2"]).hash != plain.hash
        assert load_config("dpo", recipe, ["dpo.keep_pairs=true"]).hash != plain.hash


def _mlproject() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


def _script_command(name: str, command: str) -> str:
    """Existing methods keep their entrypoints/<name>.py; new ones run `python -m rlvf.pipeline`."""
    return command.replace(f"python entrypoints/{name}.py", f"python -m rlvf.pipeline {name}")


def test_mlproject_one_entry_point_per_method_and_parameters_parse():
    from rlvf.pipeline.cli import (
        EXTRA_ENTRIES,
        mlproject_entry,
        mlproject_options,
        mlproject_text,
        parse_script_args,
        shortcuts_for,
    )

    # the file is what the registry generates (one entry per method, then the study)
    assert (ROOT / "MLproject").read_text() == mlproject_text(ROOT)
    eps = _mlproject()
    assert sorted(eps) == sorted([*names(), *EXTRA_ENTRIES])
    for name, ep in eps.items():
        derived = mlproject_entry(name)
        # only `recipe` is declared: MLflow logs every declared parameter, '' ones too
        assert (
            ep["parameters"] == derived["parameters"] == {"recipe": {"type": "string", "default": "default"}}
        )
        if name in EXTRA_ENTRIES:
            continue
        assert _script_command(name, ep["command"]) == derived["command"], name
        argv, want = [], []
        for p in mlproject_options(name):  # passed as MLflow's extra parameters: --name value
            if p == "set":
                argv += ["--set", "seed=7"]
                want.append("seed=7")
                continue
            argv += [f"--{p.replace('_', '-')}", "3"]
            want.append(f"{shortcuts_for(name)[p]}=3")
        recipe, overrides = parse_script_args(name, ["--recipe", "small", *argv])
        assert recipe == "small" and sorted(overrides) == sorted(want), name


def test_tables_follow_the_registry():
    from rlvf.config.schema import METHODS, SECTIONS, TRAINING_METHODS
    from rlvf.pipeline.lifecycle import STAGES

    assert METHODS == names() == list(STAGES)
    assert (
        TRAINING_METHODS
        == [m.name for m in methods() if m.trains]
        == ["sft", "dpo", "grpo", "kto", "orpo", "rloo", "rm", "ppo", "online_dpo"]
    )
    assert SECTIONS["dpo"] == ("dpo",)
    assert set(SECTIONS["train"]) == set(TRAINING_METHODS)


def test_scan_tag_is_the_methods_declared_parameter():
    from rlvf.config import load_config
    from rlvf.methods import scan_params

    assert scan_params(load_config("dpo", "small", ["data.n_pairs=50"])) == {"n_pairs": 50}
    assert scan_params(load_config("dpo", "small")) == {}
    assert scan_params(load_config("sft", "small")) == {}


def test_sampler_does_not_import_training_code():
    import subprocess
    import sys

    code = (
        "import sys, rlvf.generate, rlvf.generate.engine, rlvf.tracking.pyfunc_model;"
        "bad = sorted(m for m in sys.modules if m.startswith(('rlvf.train', 'trl')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------- a toy method


def _toy_make_trainer(cfg, *, model, tok, rows, args, peft_config, callbacks):
    from datasets import Dataset
    from trl import SFTTrainer

    data = Dataset.from_dict(
        {"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows]}
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def _toy_config_class():
    from trl import SFTConfig

    return SFTConfig


TOY = Method(
    name="toy",
    help="A method defined in a test.",
    uses=("data",),
    section={"alpha": Field("float", "a knob of the toy method", minimum=0.0)},
    fields={"data.toy_rows": Field("int", "rows the toy method trains on", minimum=1)},
    shortcuts={"alpha": "toy.alpha"},
    mlproject=("policy", "alpha", "seed"),
    scan=("toy.alpha",),
    training=Training(
        title="toy",
        noun="rows",
        build_data=lambda ctx: get("sft").training.examples(ctx.cfg["data.toy_rows"]),
        make_trainer=_toy_make_trainer,
        config_class=_toy_config_class,
        trainer_args=lambda cfg: {"max_length": cfg["train.max_length"]},
        curves=("train/loss", "train/toy_metric"),
    ),
)


@pytest.fixture
def toy(tmp_path):
    """The toy method registered, and its recipe section (what a new method adds to a recipe)."""
    recipe = tmp_path / "toy.yaml"
    recipe.write_text("extends: small\ntoy:\n  alpha: 0.5\ndata:\n  toy_rows: 4\n")
    register(TOY)
    try:
        yield str(recipe)
    finally:
        unregister("toy")


def test_a_new_method_needs_only_its_module_and_one_registration(toy, tmp_path):
    import click
    from click.testing import CliRunner

    from rlvf.config import load_config
    from rlvf.config.schema import FIELDS, METHODS, SECTIONS, applies
    from rlvf.methods import curves, scan_params
    from rlvf.pipeline.cli import (
        commands,
        mlproject_block,
        mlproject_entry,
        mlproject_options,
        parse_script_args,
        shortcuts_for,
    )
    from rlvf.pipeline.lifecycle import STAGES

    # schema: its section, its key in a shared section, the lifecycle's sections and keys
    assert "toy" in METHODS and SECTIONS["toy"] == ("toy",)
    assert FIELDS["data.toy_rows"].methods == ("toy",)
    assert applies("train.learning_rate", "toy") and applies("eval.base", "toy")
    assert not applies("data.toy_rows", "dpo") and not applies("generate.n_samples", "toy")
    cfg = load_config("toy", toy, ["toy.alpha=0.25"])
    assert cfg["toy.alpha"] == 0.25
    # a training method's fairness invariants record how it fine-tunes
    lora = load_config("toy", toy, ["model.finetune=lora"]).invariants()
    assert lora["finetune"] == "lora" and lora["lora_r"] == cfg["lora.r"]
    assert scan_params(cfg) == {"alpha": 0.25}
    assert curves("toy") == ("train/loss", "train/toy_metric")
    # the others' configs did not move
    assert load_config("dpo", "small").hash == RECORDED["dpo/small"][0]
    # command lines: the script parser, the rlvf command, the MLproject block
    assert shortcuts_for("toy")["alpha"] == "toy.alpha"
    assert parse_script_args("toy", ["--recipe", toy, "--alpha", "0.3"]) == (toy, ["toy.alpha=0.3"])
    cmd = {c.name: c for c in commands()}["toy"]
    assert isinstance(cmd, click.Command)
    out = CliRunner().invoke(cmd, ["--help"])
    assert out.exit_code == 0 and "--alpha" in out.output
    entry = mlproject_entry("toy")
    assert list(entry["parameters"]) == ["recipe"]
    assert mlproject_options("toy") == ["policy", "alpha", "seed", "set"]
    assert entry["command"] == "python -m rlvf.pipeline toy --recipe {recipe}"
    assert yaml.safe_load("entry_points:\n" + mlproject_block("toy"))["entry_points"]["toy"] == entry
    assert "# -P options: policy, alpha, seed, set" in mlproject_block("toy")
    assert "toy" in STAGES
    # and it trains through the shared training layer
    from rlvf.train.common import train_policy

    cfg = load_config("toy", toy, ["train.max_steps=2", "tracking.progress=false", "model.device=cpu"])
    res = train_policy(TOY, cfg, TOY.training.build_data(type("Ctx", (), {"cfg": cfg})()), tmp_path / "out")
    assert res.steps == 2 and (res.policy_dir / "rlvf_policy.json").exists()
    assert json.loads((res.policy_dir / "rlvf_policy.json").read_text())["method"] == "toy"


def test_unregistered_toy_is_gone():
    from rlvf.config.schema import FIELDS, METHODS

    assert "toy" not in METHODS and "data.toy_rows" not in FIELDS and "toy.alpha" not in FIELDS


# ------------------------------------------------------------------------- one comparison statistic


def _result(policy: str, rows: list[list[int]]) -> object:
    """An EvalResult over 30 tasks, 2 seeds x 2 samples; rows[seed][task] = passing samples."""
    from rlvf.records import EvalResult

    n = len(rows[0])
    return EvalResult(
        suite="procedural",
        policy=policy,
        seeds=[0, 1],
        n_samples=2,
        task_ids=[f"t{i}" for i in range(n)],
        correct={str(s): rows[s] for s in (0, 1)},
        categories={str(s): [["pass"] * 2 for _ in range(n)] for s in (0, 1)},
    )


@pytest.mark.parametrize("gain", [0, 3, 20])
def test_run_summary_gives_the_sites_verdict(gain, tmp_path):
    """The closing summary of a training run and the site's head-to-head judge a delta with the
    same statistic (2xSE + McNemar), so they cannot disagree."""
    import mlflow

    from rlvf.config import load_config
    from rlvf.evaluate.core import SuiteEval
    from rlvf.pipeline.finish import compare_with_base
    from rlvf.report.collect import eval_record
    from rlvf.report.headtohead import suite_delta
    from rlvf.tracking.runs import start_run

    base = _result("base", [[1] * 10 + [0] * 20, [1] * 10 + [0] * 20])
    new_rows = [min(2, c + (1 if i < gain + 10 else 0)) for i, c in enumerate([1] * 10 + [0] * 20)]
    new = _result("dpo", [new_rows, new_rows])
    want = suite_delta(eval_record(base), eval_record(new))
    mlflow.set_tracking_uri(seed_store(tmp_path / "mlflow.db"))
    try:
        with start_run(load_config("eval", "small"), "eval") as run:
            (line,) = compare_with_base(
                run, {"procedural": SuiteEval(new)}, {"procedural": SuiteEval(base)}, "dpo"
            )
            run.flush()
        logged = mlflow.MlflowClient().get_run(run.run_id).data.metrics
    finally:
        mlflow.set_tracking_uri("")
    assert line.endswith(": " + want["verdict"])
    assert f"improved {want['improved']} / regressed {want['regressed']}" in line
    assert logged["compare/procedural/delta_pass_at_1"] == pytest.approx(want["delta"])
    assert logged["compare/procedural/delta_stderr"] == pytest.approx(want["se"])
    assert (gain == 20) == want["verdict"].startswith("significant")


def test_a_methods_curves_reach_the_report(tmp_path):
    """The report collects each method's declared curves (DPO: reward margins), not only the loss."""
    import mlflow

    from rlvf.config import load_config
    from rlvf.report.collect import Collector
    from rlvf.tracking.runs import start_run

    mlflow.set_tracking_uri(seed_store(tmp_path / "mlflow.db"))
    try:
        with start_run(load_config("dpo", "small"), "train") as run:
            for step in range(1, 4):
                run.metric("train/loss", 1.0 / step, step=step)
                run.metric("train/rewards_margins", 0.1 * step, step=step)
                run.metric("train/not_a_curve", 1.0, step=step)
            run.flush()
        client = mlflow.MlflowClient()
        train = Collector(client)._train(client.get_run(run.run_id))
    finally:
        mlflow.set_tracking_uri("")
    assert train["loss_curve"] == [[1, 1.0], [2, 0.5], [3, pytest.approx(1 / 3)]]
    assert set(train["curves"]) == {"train/rewards_margins"}
    assert [p[1] for p in train["curves"]["train/rewards_margins"]] == pytest.approx([0.1, 0.2, 0.3])


def test_generic_runner_serves_every_method():
    """`python -m rlvf.pipeline METHOD` (what MLproject runs for a method without a script)."""
    import subprocess
    import sys

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "rlvf.pipeline", *args], capture_output=True, text=True, cwd=ROOT
        )

    ok = run("dpo", "--help")
    assert ok.returncode == 0 and "--beta" in ok.stdout and "--n-pairs" in ok.stdout
    bad = run("nope")
    assert bad.returncode == 2 and f"usage: python -m rlvf.pipeline {{{','.join(names())}}}" in bad.stderr
    typo = run("eval", "--recipe", "no-such-recipe")
    assert typo.returncode == 2 and typo.stderr.strip().splitlines()[-1].startswith("error: unknown recipe")
