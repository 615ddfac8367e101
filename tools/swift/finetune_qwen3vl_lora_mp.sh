#!/usr/bin/env bash
# LoRA fine-tuning of Qwen3-VL on several GPUs, and on several nodes.
#   bash tools/swift/finetune_qwen3vl_lora_mp.sh                       # all visible GPUs
#   NPROC_PER_NODE=4 DEEPSPEED=zero3 bash tools/swift/finetune_qwen3vl_lora_mp.sh
#   # two nodes, run on each with its own NODE_RANK:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 bash tools/swift/finetune_qwen3vl_lora_mp.sh
# The global batch (GLOBAL_BATCH) stays the same whatever the GPU and node count.
# Knobs (env): see tools/swift/common.sh. For research only, not for diagnosis.
DEEPSPEED="${DEEPSPEED:-zero2}"   # ZeRO-2 by default across GPUs; ignored (with a note) on CPU
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

gpus="$(gpu_count)"
# Without a GPU, ms-swift still runs several CPU processes (gloo), which is how it is tested.
export NPROC_PER_NODE="${NPROC_PER_NODE:-$((gpus > 0 ? gpus : 1))}"
export NNODES="${NNODES:-1}"
is_positive_int "$NNODES" || die "NNODES must be a positive integer, got '$NNODES'"
if [[ "$NNODES" != 1 ]]; then
  [[ -n "${NODE_RANK:-}" ]] || die "NNODES=$NNODES: set NODE_RANK (0..$((NNODES - 1))) on each node"
  [[ -n "${MASTER_ADDR:-}" ]] || die "NNODES=$NNODES: set MASTER_ADDR to the address of node 0"
  export NODE_RANK MASTER_ADDR
  export MASTER_PORT="${MASTER_PORT:-29500}"
  [[ "$NODE_RANK" =~ ^[0-9]+$ && "$NODE_RANK" -lt "$NNODES" ]] || die "NODE_RANK must be 0..$((NNODES - 1)), got '$NODE_RANK'"
fi
if ((gpus > 0)) && ((NPROC_PER_NODE > gpus)); then
  die "NPROC_PER_NODE=$NPROC_PER_NODE but only $gpus GPU(s) are visible"
fi
run_sft "$NPROC_PER_NODE" "$NNODES" "$@"
