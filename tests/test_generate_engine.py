"""The sampling engine on the real embedded:small model, and `rlvf sample` -> `rlvf verify`."""

from __future__ import annotations

import dataclasses
import json

import torch
from click.testing import CliRunner

from rlvf.cli import main
from rlvf.generate import MISSING_ENTRY_POINT, SamplingSettings, generate, generate_samples
from rlvf.records import Sample, read_jsonl
from rlvf.tasks import load_suite


def _tasks(k: int = 4):
    return load_suite("procedural")[::11][:k]


def test_n_samples_per_task_seeded_and_recorded(tiny_model):
    tasks = _tasks()
    settings = SamplingSettings(n=3, temperature=0.8, max_new_tokens=96, seed=7)
    a, stats = generate(tiny_model, tasks, settings, batch_size=5, progress=False, policy_name="tiny")
    b, _ = generate(tiny_model, tasks, settings, batch_size=5, progress=False, policy_name="tiny")
    c, _ = generate(tiny_model, tasks, dataclasses.replace(settings, seed=8), batch_size=5, progress=False)
    assert [(s.task_id, s.index) for s in a] == [(t.task_id, i) for t in tasks for i in range(3)]
    assert [s.completion for s in a] == [s.completion for s in b]
    assert [s.completion for s in a] != [s.completion for s in c]
    s = a[0]
    assert s.policy == "tiny" and s.seed == 7
    assert s.settings["temperature"] == 0.8 and s.settings["max_new_tokens"] == 96
    assert all(x.finish in ("eos", "stop", "length") for x in a)
    assert all(x.n_tokens <= 96 for x in a)
    assert stats.samples == 12 and stats.tokens == sum(x.n_tokens for x in a)
    assert stats.samples_per_s > 0 and stats.tokens_per_s > 0
    assert "samples/s" in stats.summary() and "tokens/s" in stats.summary()


def test_batch_sizes_agree_under_greedy_decoding(tiny_model):
    tasks = _tasks(3)
    kw = dict(n=1, temperature=0.0, max_new_tokens=64, progress=False)
    one = generate_samples(tiny_model, tasks, batch_size=1, **kw)
    many = generate_samples(tiny_model, tasks, batch_size=8, **kw)
    assert [s.completion for s in one] == [s.completion for s in many]


def test_pruning_loop_matches_model_generate_under_greedy_decoding(tiny_model):
    """Dropping finished rows from the cache must not change any row's tokens."""
    from rlvf.generate import HFBackend

    model, tok = tiny_model
    tasks = load_suite("procedural")[::5]
    prompts = [t.prompt for t in tasks]
    eps = [t.entry_point for t in tasks]
    settings = SamplingSettings(temperature=0.0, max_new_tokens=80)
    pruned = HFBackend(model, tok, batch_size=len(prompts), prune=True).run(prompts, eps, settings)
    plain = HFBackend(model, tok, batch_size=len(prompts), prune=False).run(prompts, eps, settings)
    assert [r.text for r in pruned] == [r.text for r in plain]
    assert [r.finish for r in pruned] == [r.finish for r in plain]
    # rows really finished at different steps, so rows were dropped mid-batch
    assert len({r.n_tokens for r in pruned}) > 3


def _tiny_decoder(tok) -> dict:
    """Config keywords of a random tiny decoder on the embedded tokenizer (2 query heads per KV head)."""
    return dict(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip


def test_pruning_loop_matches_model_generate_on_a_qwen2_architecture(tiny_model):
    """The hub models users bring (Qwen2.5-Coder) take the same path: a random tiny Qwen2 here."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlvf.generate import HFBackend

    _, tok = tiny_model
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**_tiny_decoder(tok))).eval()
    tasks = _tasks(4)
    prompts, eps = [t.prompt for t in tasks], [t.entry_point for t in tasks]
    settings = SamplingSettings(temperature=0.0, max_new_tokens=24)
    pruned = HFBackend(model, tok, batch_size=4, prune=True).run(prompts, eps, settings)
    plain = HFBackend(model, tok, batch_size=4, prune=False).run(prompts, eps, settings)
    assert [r.text for r in pruned] == [r.text for r in plain]


def test_completions_end_with_the_function(tiny_model):
    samples = generate_samples(tiny_model, _tasks(), n=2, temperature=0.8, max_new_tokens=128, progress=False)
    for s in samples:
        for line in s.completion.splitlines():
            assert not line.strip() or line[0] in " \t#)]}", (s.task_id, s.completion)


def test_missing_entry_point_is_reported_as_format_failure(tiny_model):
    task = _tasks(1)[0]
    renamed = dataclasses.replace(task, entry_point="name_the_tests_call")
    samples, stats = generate(
        tiny_model, [renamed, task], SamplingSettings(n=2, max_new_tokens=48), progress=False
    )
    assert [s.settings.get("format_error") for s in samples[:2]] == [MISSING_ENTRY_POINT] * 2
    assert all("format_error" not in s.settings for s in samples[2:])
    assert stats.format_errors == 2


def test_sample_cli_writes_what_verify_reads(tiny_policy, tmp_path):
    out = tmp_path / "samples.jsonl"
    r = CliRunner().invoke(
        main,
        [
            "sample",
            "--policy",
            "embedded:small",
            "--suite",
            "procedural",
            "--limit",
            "3",
            "--n",
            "2",
            "--temperature",
            "0.8",
            "--seed",
            "0",
            "--max-new-tokens",
            "96",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = [obj for _, obj in read_jsonl(out)]
    assert len(rows) == 6 and {"task_id", "completion", "index"} <= rows[0].keys()
    samples = [Sample.from_dict(o) for o in rows]
    assert samples[0].policy == "embedded:small" and samples[0].settings["suite"] == "procedural"
    assert json.loads((tmp_path / "samples_throughput.json").read_text())["samples"] == 6
    r = CliRunner().invoke(main, ["verify", str(out), "--suite", "procedural", "--workers", "2"])
    assert r.exit_code == 0, r.output
    outcomes = [obj for _, obj in read_jsonl(tmp_path / "samples_outcomes.jsonl")]
    assert len(outcomes) == 6 and all(o["category"] != "invalid_input" for o in outcomes)


def test_sample_cli_bad_input_is_one_line_and_nothing_written(tmp_path):
    out = tmp_path / "s.jsonl"
    r = CliRunner().invoke(main, ["sample", "--policy", str(tmp_path / "nope"), "--out", str(out)])
    assert r.exit_code == 2 and "no such model directory" in r.stderr
    r = CliRunner().invoke(main, ["sample", "--policy", "embedded:small", "--top-p", "0", "--out", str(out)])
    assert r.exit_code == 2 and "top_p" in r.stderr
    assert not out.exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text(
        json.dumps({"task_id": "t/0", "prompt": "", "entry_point": "f", "test": "x = 1\n"}) + "\n"
    )
    r = CliRunner().invoke(
        main, ["sample", "--policy", "embedded:small", "--suite", f"jsonl:{empty}", "--out", str(out)]
    )
    assert r.exit_code == 2 and "'t/0' has an empty prompt" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def _decode(model, tok, prompts: list[str], **kwargs) -> list[list[int]]:
    """`sample_pruned` on the padded prompts (kwargs: its decoding settings)."""
    from rlvf.generate.decode import sample_pruned

    enc = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return sample_pruned(model, enc["input_ids"], enc["attention_mask"], **kwargs)


def _greedy(model, tok, prompts: list[str], steps: int = 24) -> list[list[int]]:
    return _decode(
        model,
        tok,
        prompts,
        max_new_tokens=steps,
        temperature=0.0,
        top_p=1.0,
        eos_token_id=tok.eos_token_id,
        finished=lambda rows, toks: [False] * len(rows),
    )


def test_repeated_prompts_share_one_prefill_and_decode_like_distinct_rows(tiny_model):
    """n samples of a prompt are identical rows: their prompt pass runs once, then fans out."""
    model, tok = tiny_model
    a, b = load_suite("procedural")[0].prompt, load_suite("procedural")[7].prompt
    assert len(tok(a)["input_ids"]) != len(tok(b)["input_ids"])  # padded rows differ too
    distinct = _greedy(model, tok, [a, b])
    repeated = _greedy(model, tok, [a, a, b, a, b])
    assert repeated == [distinct[0], distinct[0], distinct[1], distinct[0], distinct[1]]


def test_sampling_passes_the_cache_under_the_name_the_model_takes(tiny_model):
    """transformers deprecates `past_key_values` (removed in 5.40): the engine must not use it."""
    import inspect
    import warnings

    from transformers import DynamicCache

    from rlvf.generate.decode import cache_kwarg

    model, tok = tiny_model
    takes_cache = "cache" in inspect.signature(type(model).forward).parameters
    assert cache_kwarg(model) == ("cache" if takes_cache else "past_key_values")

    def deprecations(fn) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
        return [str(w.message) for w in caught if "past_key_values" in str(w.message)]

    assert deprecations(lambda: _greedy(model, tok, [load_suite("procedural")[0].prompt], steps=4)) == []
    if takes_cache:  # the old name does warn, so the check above can fail
        ids = tok("def f(x):\n", return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            old = deprecations(
                lambda: model(input_ids=ids, past_key_values=DynamicCache(config=model.config))
            )
        assert old


def _sampled(model, tok, prompts: list[str], *, reserve_kv: bool, generators=None, steps: int = 40, **extra):
    """Temperature sampling with rows stopping at different steps (so rows leave the cache);
    `extra`: more `sample_pruned` keywords."""
    seen: dict[int, int] = {}

    def finished(rows, toks):
        for r in rows:
            seen[r] = seen.get(r, 0) + 1
        return [seen[r] >= 6 + 5 * r for r in rows]  # row r stops after 6 + 5r tokens

    torch.manual_seed(11)
    return _decode(
        model,
        tok,
        prompts,
        max_new_tokens=steps,
        temperature=0.9,
        top_p=0.95,
        eos_token_id=-1,  # no EOS: every row runs until `finished` says so
        finished=finished,
        generators=generators,
        reserve_kv=reserve_kv,
        **extra,
    )


def test_reserved_kv_cache_samples_exactly_what_the_plain_cache_samples(tiny_model):
    """The cache that writes into reserved room (no copy per step) is a speed-up only: the
    same tokens as transformers' DynamicCache, through prefill fan-out and row pruning."""
    model, tok = tiny_model
    suite = load_suite("procedural")
    prompts = [suite[0].prompt, suite[0].prompt, suite[7].prompt, suite[3].prompt, suite[7].prompt]
    reserved = _sampled(model, tok, prompts, reserve_kv=True)
    plain = _sampled(model, tok, prompts, reserve_kv=False)
    assert [len(r) for r in plain] == [6 + 5 * r for r in range(len(prompts))]
    assert reserved == plain


def test_per_row_streams_do_not_depend_on_batch_mates(tiny_model):
    """With one random stream per row (GRPO rollouts), a row samples the same tokens alone or
    among other rows, in any batch order."""
    model, tok = tiny_model
    suite = load_suite("procedural")
    prompts = [suite[0].prompt, suite[7].prompt, suite[3].prompt]
    seeds = [101, 202, 303]

    def gens(order):
        return [torch.Generator().manual_seed(seeds[i]) for i in order]

    together = _sampled(model, tok, prompts, reserve_kv=True, generators=gens([0, 1, 2]))
    flipped = _sampled(model, tok, prompts[::-1], reserve_kv=True, generators=gens([2, 1, 0]))
    alone = _sampled(model, tok, prompts[1:2], reserve_kv=True, generators=gens([1]))
    # `finished` stops row r after 6 + 5r tokens: compare the shared prefix of each row
    assert flipped[2][:6] == together[0][:6] and flipped[0][:6] == together[2][:6]
    assert alone[0][:6] == together[1][:6]
    other = _sampled(model, tok, prompts, reserve_kv=True, generators=[torch.Generator().manual_seed(9)] * 3)
    assert other != together


def test_inverse_cdf_draws_follow_the_distribution_and_skip_zero_probability_tokens():
    from rlvf.generate.decode import _inverse_cdf

    probs = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0])
    edges = torch.tensor([0.0, 0.4999, 0.5, 0.6999, 0.7, 1.0 - 2**-40], dtype=torch.float64)
    picked = _inverse_cdf(probs.expand(len(edges), -1), edges).tolist()
    assert picked == [1, 1, 3, 3, 4, 4]
    u = torch.rand(40_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    draws = _inverse_cdf(probs.expand(len(u), -1), u)
    freq = torch.bincount(draws, minlength=6).double() / len(u)
    assert freq[[0, 2, 5]].sum() == 0
    assert torch.allclose(freq, probs.double(), atol=0.01)


def _logits_steps(model, tok, prompts: list[str], *, lean: bool) -> tuple[list[list[int]], list[list[float]]]:
    """`_sampled` on per-row streams: the tokens and their log-probs."""
    lp: list[list[float]] = []
    gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    toks = _sampled(model, tok, prompts, reserve_kv=True, generators=gens, logprobs=lp, lean=lean)
    return toks, lp


def test_lean_decode_steps_are_bit_identical_to_the_models_forward(tiny_model):
    """`rlvf.generate.lean` is only a faster call: the same tokens and the same log-probs, to the
    bit, as calling the model every step, through padding, prefill fan-out and row pruning."""
    from rlvf.generate.lean import lean_step

    model, tok = tiny_model
    suite = load_suite("procedural")
    prompts = [suite[0].prompt, suite[7].prompt, suite[0].prompt, suite[3].prompt, suite[12].prompt]
    assert lean_step(model) is not None  # the embedded models take the lean path
    lean = _logits_steps(model, tok, prompts, lean=True)
    plain = _logits_steps(model, tok, prompts, lean=False)
    assert [len(t) for t in plain[0]] == [6 + 5 * r for r in range(len(prompts))]
    assert lean == plain


def test_lean_decode_covers_qwen2_with_grouped_kv_heads_and_declines_other_layers(tiny_model):
    """A hub-style Qwen2 (q/k/v biases, 2 query heads per KV head) decodes bit-identically; a
    layout it does not know (sliding windows, eager attention, Qwen3's q/k norms) keeps
    calling the model."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from rlvf.generate.lean import lean_step

    _, tok = tiny_model
    torch.manual_seed(0)
    common = _tiny_decoder(tok)
    qwen2 = Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    prompts = [t.prompt for t in _tasks(3)]
    assert lean_step(qwen2) is not None
    assert _logits_steps(qwen2, tok, prompts, lean=True) == _logits_steps(qwen2, tok, prompts, lean=False)
    assert lean_step(Qwen3ForCausalLM(Qwen3Config(**common))) is None
    assert (
        lean_step(Qwen2ForCausalLM(Qwen2Config(**common, use_sliding_window=True, sliding_window=8))) is None
    )
    eager = Qwen2ForCausalLM(Qwen2Config(**common, attn_implementation="eager"))
    assert lean_step(eager) is None
