#!/usr/bin/env bash
# Greedy inference of a LoRA checkpoint over a JSONL split; one result line per record.
#   bash tools/swift/infer_qwen3vl_lora.sh                        # newest checkpoint, validation split
#   ADAPTER=results/lora/v0-.../checkpoint-573 VAL_FILE=data/openi_swift/test.jsonl bash tools/swift/infer_qwen3vl_lora.sh
#   NO_ADAPTER=1 MODEL=/models/Qwen3-VL-8B-Instruct bash tools/swift/infer_qwen3vl_lora.sh   # base model alone
# The base model comes from the checkpoint's args.json unless MODEL is set.
# Knobs (env): see tools/swift/common.sh. For research only, not for diagnosis.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init_launcher infer "$@"

check_knobs MAX_NEW_TOKENS TEMPERATURE INFER_BATCH
require_data "$VAL_FILE" "inference data"
resolve_model_args
if [[ -z "$ADAPTER" ]]; then
  RESULT_FILE="${RESULT_FILE:-$OUTPUT_DIR/infer_base.jsonl}"
else
  RESULT_FILE="${RESULT_FILE:-$ADAPTER/infer_result.jsonl}"
fi
resolve_dtype

after_run() { echo "results: $RESULT_FILE"; echo "For research only, not for diagnosis."; }
run_or_print "$SWIFT_BIN" infer \
  "${model_args[@]}" \
  --val_dataset "$VAL_FILE" \
  --infer_backend "$INFER_BACKEND" \
  --torch_dtype "$DTYPE" \
  --max_batch_size "$INFER_BATCH" \
  --max_new_tokens "$MAX_NEW_TOKENS" --temperature "$TEMPERATURE" \
  --result_path "$RESULT_FILE" \
  "$@"
