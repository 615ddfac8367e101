#!/usr/bin/env bash
# The main job end to end on the embedded default, from a fresh checkout:
# set up .venv, build the tiny random-weight Qwen3-VL, convert the bundled OpenI
# X-rays, train a LoRA adapter with the one-GPU launcher, infer on the validation
# split, merge the adapter; then print where each result lies.
#   bash tools/quickstart.sh
#   MODEL=/models/Qwen3-VL-8B-Instruct IMAGES_DIR=/data/openi/images bash tools/quickstart.sh
# LANG_CODE=en uses the English reports; every launcher knob (tools/swift/common.sh)
# applies. For research only, not for diagnosis.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LANG_CODE="${LANG_CODE:-zh}"
case "$LANG_CODE" in
  zh) REPORTS="${REPORTS:-$ROOT/data/openi/openi-zh.json}" ;;
  en) REPORTS="${REPORTS:-$ROOT/data/openi/openi-en.json}" ;;
  *) echo "error: LANG_CODE must be zh or en, got '$LANG_CODE'" >&2; exit 2 ;;
esac
IMAGES_DIR="${IMAGES_DIR:-$ROOT/data/openi/images}"
export DATA_DIR="${DATA_DIR:-$ROOT/data/openi_swift}"
export OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/results/quickstart}"
step() { echo; echo "==> $*"; }

step "1/6 environment"
bash "$ROOT/tools/setup.sh"
PY="$ROOT/.venv/bin/python"

step "2/6 model"
if [[ -z "${MODEL:-}" ]]; then
  "$PY" "$ROOT/scripts/build_tiny_model.py"
  export MODEL="$ROOT/weights/tiny-qwen3-vl"
fi
echo "model: $MODEL"

step "3/6 data: $REPORTS + $IMAGES_DIR -> $DATA_DIR"
"$PY" "$ROOT/scripts/convert_xray_swift.py" --input "$REPORTS" --images_dir "$IMAGES_DIR" \
  --output_dir "$DATA_DIR" --lang "$LANG_CODE" --quiet

step "4/6 LoRA training (tools/swift/finetune_qwen3vl_lora.sh)"
bash "$ROOT/tools/swift/finetune_qwen3vl_lora.sh"
# shellcheck source=swift/common.sh
source "$ROOT/tools/swift/common.sh"   # for latest_checkpoint
ADAPTER="$(latest_checkpoint "$OUTPUT_DIR")"
[[ -n "$ADAPTER" ]] || { echo "error: training wrote no checkpoint under $OUTPUT_DIR" >&2; exit 1; }
export ADAPTER

step "5/6 inference on the validation split (tools/swift/infer_qwen3vl_lora.sh)"
export RESULT_FILE="$ADAPTER/infer_val.jsonl"
bash "$ROOT/tools/swift/infer_qwen3vl_lora.sh"

step "6/6 merge (tools/swift/merge_qwen3vl_lora.sh)"
export MERGED_DIR="${MERGED_DIR:-$ADAPTER-merged}"
rm -rf "$MERGED_DIR"
bash "$ROOT/tools/swift/merge_qwen3vl_lora.sh"

cat <<SUMMARY

MedSwift-VL quickstart finished. For research only, not for diagnosis.
  model            $MODEL
  converted data   $DATA_DIR  (train/val/test.jsonl, skipped.tsv, summary.json)
  LoRA adapter     $ADAPTER
  training log     $(dirname "$ADAPTER")/logging.jsonl  (curves: $(dirname "$ADAPTER")/images/)
  predictions      $RESULT_FILE  ($(wc -l <"$RESULT_FILE") records)
  merged model     $MERGED_DIR
SUMMARY
