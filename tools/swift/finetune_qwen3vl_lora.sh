#!/usr/bin/env bash
# LoRA fine-tuning of Qwen3-VL on one GPU (or the CPU when there is none).
#   bash tools/swift/finetune_qwen3vl_lora.sh [extra swift sft flags, e.g. --max_steps 20]
#   MODEL=/models/Qwen3-VL-8B-Instruct bash tools/swift/finetune_qwen3vl_lora.sh
#   DRY_RUN=1 bash tools/swift/finetune_qwen3vl_lora.sh   # print the command only
# Knobs (env): see tools/swift/common.sh. For research only, not for diagnosis.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# One process: make sure ms-swift does not start torchrun from an inherited environment.
unset NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT
if [[ "$(gpu_count)" -gt 0 ]]; then
  export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
  [[ "$CUDA_VISIBLE_DEVICES" == *,* ]] && die "one-GPU launcher got CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES; use finetune_qwen3vl_lora_mp.sh for several"
fi
run_sft 1 1 "$@"
