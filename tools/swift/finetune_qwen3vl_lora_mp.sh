#!/usr/bin/env bash
# LoRA fine-tuning of Qwen3-VL on several GPUs, and on several nodes.
#   bash tools/swift/finetune_qwen3vl_lora_mp.sh                       # all visible GPUs
#   NPROC_PER_NODE=4 DEEPSPEED=zero3 bash tools/swift/finetune_qwen3vl_lora_mp.sh
#   # two nodes, run on each with its own NODE_RANK:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 bash tools/swift/finetune_qwen3vl_lora_mp.sh
# The global batch (GLOBAL_BATCH) stays the same whatever the GPU and node count.
# Knobs (env): see tools/swift/common.sh. For research only, not for diagnosis.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launcher_default DEEPSPEED zero2   # ZeRO-2 across GPUs; ignored (with a note) on CPU
init_launcher train "$@"
run_sft distributed "$@"
