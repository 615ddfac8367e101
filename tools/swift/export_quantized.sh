#!/usr/bin/env bash
# Quantise a merged model (run merge_qwen3vl_lora.sh first) with swift export. CUDA only.
#   MODEL=results/lora/v0-.../checkpoint-573-merged QUANT_METHOD=awq bash tools/swift/export_quantized.sh
#   MODEL=... QUANT_METHOD=fp8 bash tools/swift/export_quantized.sh
# QUANT_METHOD: awq | gptq (4-bit, calibrated on CALIB_FILE) | fp8 (no calibration).
# Output: QUANT_DIR (default <model>-<method>). For research only, not for diagnosis.
# shellcheck source=common.sh
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init_launcher infer "$@"

QUANT_METHOD="${QUANT_METHOD:-awq}"
CALIB_FILE="${CALIB_FILE:-$TRAIN_FILE}"
CALIB_SAMPLES="${CALIB_SAMPLES:-256}"
[[ -n "$MODEL_FROM_USER" ]] || die "set MODEL to a merged model folder (tools/swift/merge_qwen3vl_lora.sh writes one)"
resolve_choice model
quant_args=()
case "$QUANT_METHOD" in
  awq | gptq)
    require_data "$CALIB_FILE" "calibration data"
    quant_args=(--quant_bits 4 --dataset "$CALIB_FILE" --quant_n_samples "$CALIB_SAMPLES")
    ;;
  fp8) quant_args=(--quant_bits float8) ;;
  *) die "QUANT_METHOD must be awq, gptq or fp8, got '$QUANT_METHOD'" ;;
esac
require_cuda "quantised export (QUANT_METHOD=$QUANT_METHOD)"
QUANT_DIR="${QUANT_DIR:-${MODEL%/}-$QUANT_METHOD}"
[[ -e "$QUANT_DIR" ]] && die "output already exists: $QUANT_DIR (remove it or set QUANT_DIR)"
type_args=()
[[ -n "$MODEL_TYPE" ]] && type_args=(--model_type "$MODEL_TYPE")

run_or_print "$SWIFT_BIN" export \
  --model "$MODEL" "${type_args[@]}" \
  --quant_method "$QUANT_METHOD" "${quant_args[@]}" \
  --torch_dtype bfloat16 \
  --output_dir "$QUANT_DIR" \
  "$@"
