#!/usr/bin/env bash
# The GPU paths CI cannot run, as one script: run it on a CUDA machine after the README's install
# (plus `pip install vllm bitsandbytes` for those checks). It needs no hub access: every check
# uses the embedded model, built on first use. Each check prints one line; a failing check says
# FAIL and the script goes on, so one run reports on all of them. Exit status: failures count.
#
#   bash scripts/gpu_check.sh [policy]        # policy: embedded (default) or a hub id / local dir
set -uo pipefail
cd "$(dirname "$0")/.."
POLICY=${1:-embedded}
export RLVF_HOME=${RLVF_HOME:-$(mktemp -d)/rlvf} MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$(mktemp -d)/mlflow.db}
OUT=${OUT:-$(mktemp -d)}
fails=0
check() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$OUT/$name.log" 2>&1; then
    echo "ok   $name ($((SECONDS - t0)) s): $(grep -E '\[rlvf\]|s/step|samples/s|tokens/s|x faster' "$OUT/$name.log" | tail -2 | tr '\n' ' ')"
  else
    echo "FAIL $name ($((SECONDS - t0)) s): $(tail -1 "$OUT/$name.log")"
    fails=$((fails + 1))
  fi
}

python - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print("bf16 supported:", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
for name in ("vllm", "bitsandbytes", "deepspeed"):
    try:
        print(name, __import__(name).__version__)
    except ImportError:
        print(name, "not installed")
PY

# Sampling: rlvf's engine on the GPU (hf) and through vLLM, same tasks and settings.
check sample_hf python -m rlvf sample --policy "$POLICY" --n 8 --limit 64 --device cuda --backend hf --out "$OUT/hf.jsonl"
check sample_vllm python -m rlvf sample --policy "$POLICY" --n 8 --limit 64 --device cuda --backend vllm --out "$OUT/vllm.jsonl"
check sample_nf4 python -m rlvf sample --policy "$POLICY" --n 8 --limit 64 --device cuda --backend hf --load-in-4bit --out "$OUT/nf4.jsonl"
# NF4: the base in 4 bits (bitsandbytes), evaluated, then a LoRA DPO on top (QLoRA).
check eval_nf4 python -m rlvf eval --recipe small --set model.policy="$POLICY" --set model.quantization=nf4 --set model.device=cuda
check dpo_nf4 python -m rlvf dpo --recipe small --set model.policy="$POLICY" --set model.quantization=nf4 --set model.device=cuda
# bf16 training on the GPU (rlvf turns bf16 on only where the hardware has it).
check grpo_bf16 python -m rlvf grpo --recipe small --set model.policy="$POLICY" --set model.device=cuda
# GRPO rollouts through vLLM inside the training process (TRL's colocate mode).
check grpo_vllm python -m rlvf grpo --recipe small --set model.policy="$POLICY" --set model.device=cuda --set grpo.rollouts=vllm-colocate
# Throughput figures on the GPU.
check grpo_bench python benchmarks/grpo_bench.py --policy "$POLICY" --device cuda
check ppo_bench python benchmarks/ppo_bench.py --policy "$POLICY"

echo "logs: $OUT; $fails check(s) failed"
exit "$fails"
