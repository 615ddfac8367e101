#!/usr/bin/env bash
# Merge a LoRA checkpoint into its base model: a standalone model folder.
#   bash tools/swift/merge_qwen3vl_lora.sh                         # newest checkpoint
#   ADAPTER=results/lora/v0-.../checkpoint-573 MERGED_DIR=weights/xray-merged bash tools/swift/merge_qwen3vl_lora.sh
# ms-swift 4.x: `swift export --adapters CKPT --merge_lora true --output_dir DIR`
# (the 3.x `--merge_lora_output` flag is rejected). The base model comes from the
# checkpoint's args.json unless MODEL is set.
# Knobs (env): see tools/swift/common.sh. For research only, not for diagnosis.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init_launcher infer "$@"

resolve_choice adapter
model_args=()
[[ "$MODEL_SOURCE" == user ]] && model_args=(--model "$MODEL")
MERGED_DIR="${MERGED_DIR:-${ADAPTER%/}-merged}"
[[ -e "$MERGED_DIR" ]] && die "merge output already exists: $MERGED_DIR (remove it or set MERGED_DIR)"
resolve_dtype

after_run() {
  medswift_python -m medswift.posttrain.card "$MERGED_DIR" --merged_from "$ADAPTER" >&2 || note "could not write the model card"
  echo "merged model: $MERGED_DIR"
}
run_or_print "$SWIFT_BIN" export \
  "${model_args[@]}" \
  --adapters "$ADAPTER" \
  --merge_lora true \
  --torch_dtype "$DTYPE" \
  --output_dir "$MERGED_DIR" \
  "$@"
