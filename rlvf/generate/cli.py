"""`rlvf sample`: a policy and a suite in, Sample JSONL out (what `rlvf verify` reads)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from rlvf.errors import UserError


@click.command("sample")
@click.option(
    "--policy",
    default="embedded",
    show_default=True,
    help="Base model: embedded, embedded:small, a hub id or a model directory.",
)
@click.option("--adapter", default=None, help="PEFT adapter directory on top of the base.")
@click.option("--revision", default=None, help="Hub revision of the base.")
@click.option(
    "--suite",
    default="procedural",
    show_default=True,
    help="Task suite (procedural, procedural:train, humaneval, jsonl:PATH).",
)
@click.option(
    "--suite-seed", type=int, default=None, help="Seed of a procedural suite (default: the suite's own)."
)
@click.option(
    "--per-cell",
    type=int,
    default=1,
    show_default=True,
    help="Instances per type x difficulty of a procedural suite.",
)
@click.option("--limit", type=int, default=None, help="Only the first N tasks.")
@click.option("--n", "n", type=int, default=1, show_default=True, help="Samples per task.")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="0 is greedy.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--stop", multiple=True, help="Extra stop sequence (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--chat", is_flag=True, help="Wrap prompts in the tokenizer's chat template (instruct models).")
@click.option(
    "--backend",
    type=click.Choice(["auto", "hf", "vllm"]),
    default="auto",
    show_default=True,
    help="auto: vLLM when installed and a GPU is present, else batched HF generate.",
)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Sequences per HF generate call.")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--load-in-4bit", is_flag=True, help="NF4 weights through bitsandbytes (GPU only).")
@click.option("--raw", is_flag=True, help="Keep completions as generated (no clean-up).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Samples JSONL to write.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sample_cmd(
    policy,
    adapter,
    revision,
    suite,
    suite_seed,
    per_cell,
    limit,
    n,
    temperature,
    top_p,
    max_new_tokens,
    stop,
    seed,
    chat,
    backend,
    batch_size,
    dtype,
    device,
    load_in_4bit,
    raw,
    out,
    quiet,
) -> None:
    """Sample N completions per task of SUITE from POLICY and write them as Sample JSONL."""
    from rlvf.generate.engine import SamplingSettings, generate
    from rlvf.models.loader import PolicySpec
    from rlvf.records import write_jsonl
    from rlvf.tasks import load_suite

    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    settings = SamplingSettings(
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        stop=tuple(stop),
        seed=seed,
        chat=chat,
    )
    spec = PolicySpec(
        base=policy, revision=revision, adapter=adapter, dtype=dtype, device=device, load_in_4bit=load_in_4bit
    )
    tasks = load_suite(suite, seed=suite_seed, per_cell=per_cell)
    if limit:
        tasks = tasks[:limit]
    samples, stats = generate(
        spec, tasks, settings, backend=backend, batch_size=batch_size, progress=not quiet, clean=not raw
    )
    samples = [dataclasses.replace(s, settings={**s.settings, "suite": suite}) for s in samples]
    write_jsonl(out, samples)
    stats_path = out.with_name(out.name.removesuffix(".gz").removesuffix(".jsonl") + "_throughput.json")
    stats_path.write_text(json.dumps(stats.to_dict(), indent=2, sort_keys=True) + "\n")
    if quiet:
        click.echo(stats.summary(), err=True)
    click.echo(f"{len(samples)} samples: {out}")
