"""sft: SFT (TRL's SFTTrainer) on the policy's own verified (passed) samples or on a
teacher-trace JSONL; the loss covers the completion only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlvf.config.fields import Field
from rlvf.errors import UserError
from rlvf.methods.registry import Inputs, Method, Training

FIELDS: dict[str, Field] = {
    "data.sft_source": Field(
        "str",
        "SFT data: the policy's own passed samples or a teacher-trace JSONL (data.traces)",
        choices=("samples", "traces"),
    ),
    "data.traces": Field("str", "teacher-trace JSONL (prompt, completion per line)", nullable=True),
    "data.max_per_prompt": Field("int", "most SFT examples kept per prompt", minimum=1),
}


def resolve(cfg: Any) -> Inputs:
    """Teacher traces are read before the run opens (a bad file leaves no run behind)."""
    from rlvf.datasets.sft import load_traces

    if cfg["data.sft_source"] != "traces":
        return Inputs()
    rows = load_traces(cfg["data.traces"], min_chars=cfg["data.min_chars"], max_chars=cfg["data.max_chars"])
    if not rows:
        raise UserError(f"data.traces: {cfg['data.traces']} holds no usable rows: nothing to train on")
    return Inputs(data=rows)


def build_data(ctx: Any) -> list[dict[str, Any]]:
    """The traces, or the passed samples of the policy (base: cached) on the training prompts."""
    from rlvf.datasets.sft import sft_from_samples
    from rlvf.pipeline.sampling import base_samples, data_lineage, sample_and_verify, training_tasks
    from rlvf.tracking.inputs import log_dataset

    cfg, run = ctx.cfg, ctx.run
    rows = ctx.inputs.data
    if rows is None:
        tasks = training_tasks(cfg)
        if ctx.init is None:
            samples, outcomes = base_samples(cfg, tasks, ctx.policy_name)
        else:
            samples, outcomes = sample_and_verify(cfg, ctx.init_spec(), tasks, ctx.policy_name)
        rows, stats = sft_from_samples(
            tasks,
            samples,
            outcomes,
            max_per_prompt=cfg["data.max_per_prompt"],
            dedupe=cfg["data.dedupe"],
            min_chars=cfg["data.min_chars"],
            max_chars=cfg["data.max_chars"],
        )
        run.metrics({f"data/{k}": v for k, v in stats.items()})
        if not rows:
            raise UserError(f"sft: none of {stats['samples']} samples passed: no SFT data")
        lineage = data_lineage(
            cfg, ctx.policy_name, source_run=run.run_id, max_per_prompt=cfg["data.max_per_prompt"]
        )
    else:
        lineage = {"source": cfg["data.traces"], "kind": "teacher traces"}
    run.metrics({"data/rows": len(rows)})
    log_dataset(run, rows, name="sft", artifact_path="data/sft.jsonl", lineage=lineage)
    return rows


def sft_dataset(rows: Sequence[Mapping[str, Any]]):
    from datasets import Dataset

    if not rows:
        raise UserError("sft: the training set is empty (0 rows): nothing to train on")
    return Dataset.from_dict(
        {"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows]}
    )


def config_class() -> type:
    from trl import SFTConfig

    return SFTConfig


def trainer_args(cfg: Any) -> dict[str, Any]:
    return dict(
        max_length=cfg["train.max_length"],
        remove_unused_columns=True,
        completion_only_loss=True,
        packing=False,
    )


def make_trainer(cfg: Any, *, model, tok, rows, args, peft_config, callbacks):
    from trl import SFTTrainer

    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(rows),
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def examples(n: int) -> list[dict[str, Any]]:
    """Rows that need no model: tasks' reference solutions."""
    from rlvf.tasks import load_suite

    return [
        {"prompt": t.prompt, "completion": t.canonical_solution, "task_id": t.task_id}
        for t in load_suite("procedural:train")[:n]
    ]


METHOD = Method(
    name="sft",
    help="SFT (TRL) on the policy's own verified samples or a teacher-trace JSONL; evaluates, logs and "
    "registers the result.",
    uses=("generate", "data", "verify"),
    fields=FIELDS,
    shortcuts={"traces": "data.traces", "sft_source": "data.sft_source"},
    mlproject=("policy", "init", "sft_source", "traces", "learning_rate", "epochs", "seeds", "seed"),
    training=Training(
        title="SFT",
        noun="examples",
        resolve=resolve,
        build_data=build_data,
        config_class=config_class,
        trainer_args=trainer_args,
        make_trainer=make_trainer,
        examples=examples,
    ),
)
