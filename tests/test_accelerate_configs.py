"""The shipped accelerate configs (configs/accelerate/) as accelerate itself reads them.

The GPU configs (DDP, FSDP2, DeepSpeed ZeRO-2/3) cannot run here: they go through
accelerate's own config loader and launch-argument resolution, down to the environment each
rank would be started with, so a key accelerate does not know, a wrong type or a contradictory
setting fails here. Whether they train on GPUs is unverified (the README says so)."""

from __future__ import annotations

from pathlib import Path

import pytest
from stores import seed_store

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
GPU = {
    "ddp.yaml": ("MULTI_GPU", {}),
    "fsdp2.yaml": ("FSDP", {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}),
    "deepspeed_zero2.yaml": ("DEEPSPEED", {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}),
    "deepspeed_zero3.yaml": ("DEEPSPEED", {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}),
}


def _resolve(name: str):
    """(config, launch args, rank environment) as `accelerate launch --config_file` makes them."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    parser = launch_command_parser()
    config = load_config_from_file(str(CONFIGS / name))
    # keys of the nested sections become launch options; one accelerate does not have is a typo
    options = {a.dest for a in parser._actions}
    unknown = [k for k in [*config.fsdp_config, *config.deepspeed_config] if k not in options]
    assert not unknown, f"{name}: unknown to accelerate: {unknown}"
    args, _, _ = _validate_launch_command(
        parser.parse_args(["--config_file", str(CONFIGS / name), "-m", "rlvf", "dpo"])
    )
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = list(config.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return config, args, env


def test_every_shipped_config_is_tested():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted([*GPU, "cpu_gloo.yaml"])


@pytest.mark.parametrize("name", sorted(GPU))
def test_gpu_configs_resolve_in_accelerate(name):
    kind, expected = GPU[name]
    config, args, env = _resolve(name)
    assert config.distributed_type.value == kind and not config.use_cpu
    assert args.num_processes > 1 and args.mixed_precision == "bf16"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    for k, v in expected.items():
        assert env.get(k) == v, (k, env.get(k))


def test_cpu_gloo_config_starts_two_torchrun_ranks():
    config, args, env = _resolve("cpu_gloo.yaml")
    # MULTI_GPU is what makes accelerate start the ranks itself (torchrun's launcher)
    assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed
    assert config.use_cpu and args.num_processes == 2 and args.nproc_per_node == "2"
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"


@pytest.mark.slow
def test_cpu_gloo_config_launches_two_ranks_into_one_run(tmp_path):
    """`accelerate launch --config_file configs/accelerate/cpu_gloo.yaml -m rlvf dpo` on this
    machine: two gloo ranks train, only rank 0 runs the pipeline, and the store holds one run
    and one registered version; both ranks end with the same weights (rank 0 checks), and
    after training rank 1 goes back to take its share of the trained policy's eval seeds."""
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient

    from rlvf.methods.dpo import examples
    from rlvf.records import write_jsonl

    write_jsonl(tmp_path / "pairs.jsonl", examples(8))
    uri = seed_store(tmp_path / "mlflow.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    repo = str(CONFIGS.parents[1])
    env.update(MLFLOW_TRACKING_URI=uri, PYTHONPATH=repo, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            *(sys.executable, "-m", "accelerate.commands.launch"),
            *("--config_file", str(CONFIGS / "cpu_gloo.yaml"), "-m", "rlvf", "dpo", "-r", "small"),
            *("--pairs", str(tmp_path / "pairs.jsonl")),
            *("-s", "train.max_steps=2;train.batch_size=4;train.save_steps=0;eval.base=false"),
            *("-s", "eval.limit=2;eval.seeds=[0,1];eval.n_samples=1;eval.max_new_tokens=16"),
            *("-s", f"tracking.output_dir={tmp_path / 'out'};tracking.experiment=acc;registry.name=acc"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("training DPO on 8 pairs") == 1, r.stderr  # one rank speaks
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("acc").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["train/steps"] == 2
    assert run.data.tags["rlvf.eval.ranks"] == '{"0": [0], "1": [1]}'
    (version,) = client.search_model_versions("name = 'acc'")
    assert version.run_id == run.info.run_id
