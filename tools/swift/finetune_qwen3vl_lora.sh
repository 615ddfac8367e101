#!/usr/bin/env bash
# LoRA fine-tuning of Qwen3-VL on one GPU (or the CPU when there is none).
#   bash tools/swift/finetune_qwen3vl_lora.sh [extra swift sft flags, e.g. --max_steps 20]
#   MODEL=/models/Qwen3-VL-8B-Instruct bash tools/swift/finetune_qwen3vl_lora.sh
#   DRY_RUN=1 bash tools/swift/finetune_qwen3vl_lora.sh   # print the command only
# Knobs (env): see tools/swift/common.sh. For research only, not for diagnosis.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init_launcher train "$@"
run_sft single "$@"
