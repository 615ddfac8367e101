#!/usr/bin/env bash
# The main job end to end on the embedded default, from a fresh checkout:
# set up .venv, build the tiny Qwen3-VL (random vision, report-language text), convert the bundled OpenI
# X-rays, train a LoRA adapter with the one-GPU launcher, infer on the validation
# split, merge the adapter, write a report card; then print where each result lies.
#   bash tools/quickstart.sh
#   MODEL=/models/Qwen3-VL-8B-Instruct IMAGES_DIR=/data/openi/images bash tools/quickstart.sh
# On the embedded default it trains with a recipe that lets the tiny model learn (rank 64,
# learning rate 3e-3, 40 steps, image budget 64; QUICKSTART_STEPS changes the steps); with
# MODEL=... the launcher's reference settings apply. LANG_CODE=en uses the English reports;
# every launcher knob (tools/swift/common.sh) applies. For research only, not for diagnosis.
set -euo pipefail
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then  # its header comment is its usage
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "${BASH_SOURCE[0]}"
  exit 0
fi
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

step "1/7 environment"
bash "$ROOT/tools/setup.sh"
PY="$ROOT/.venv/bin/python"

step "2/7 model"
EMBEDDED=""
if [[ -z "${MODEL:-}" ]]; then
  "$PY" "$ROOT/scripts/build_tiny_model.py"
  export MODEL="$ROOT/weights/tiny-qwen3-vl"
  EMBEDDED=1
fi
echo "model: $MODEL"

step "3/7 data: $REPORTS + $IMAGES_DIR -> $DATA_DIR"
"$PY" "$ROOT/scripts/convert_xray_swift.py" --input "$REPORTS" --images_dir "$IMAGES_DIR" \
  --output_dir "$DATA_DIR" --lang "$LANG_CODE" --quiet

step "4/7 LoRA training (tools/swift/finetune_qwen3vl_lora.sh)"
train_args=()
if [[ -n "$EMBEDDED" ]]; then
  # A 10 M-parameter random model needs more adapter capacity, a higher rate and more steps than 8B
  # to fit the bundled reports in a few minutes; real weights keep the launcher's (the reference's)
  # settings. Each value is still a knob the user can set. No LoRA dropout: the tiny model pins its
  # unused tokens through one hidden dimension held at a large constant, and dropout on that input
  # makes training-mode log-probs differ from sampling's by tens of nats (measured: 61), which GRPO
  # and DPO after this adapter turn into exploding gradients.
  export LORA_DROPOUT="${LORA_DROPOUT:-0}" LORA_RANK="${LORA_RANK:-64}" LORA_ALPHA="${LORA_ALPHA:-128}" LEARNING_RATE="${LEARNING_RATE:-3e-3}" \
    LR_SCHEDULER="${LR_SCHEDULER:-constant}" WARMUP_RATIO="${WARMUP_RATIO:-0}" \
    IMAGE_MAX_TOKEN_NUM="${IMAGE_MAX_TOKEN_NUM:-64}" GLOBAL_BATCH="${GLOBAL_BATCH:-4}" \
    MICRO_BATCH="${MICRO_BATCH:-4}" LOGGING_STEPS="${LOGGING_STEPS:-1}" MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-128}"
  steps="${QUICKSTART_STEPS:-40}"
  export SAVE_STEPS="${SAVE_STEPS:-$steps}"
  train_args=(--max_steps "$steps")
  echo "embedded default: learning recipe for the tiny model: LoRA rank $LORA_RANK / alpha $LORA_ALPHA, dropout $LORA_DROPOUT," \
    "learning rate $LEARNING_RATE $LR_SCHEDULER, $steps steps, image budget $IMAGE_MAX_TOKEN_NUM tokens," \
    "answers up to $MAX_NEW_TOKENS tokens" \
    "(with MODEL=... the launcher's reference settings apply)"
fi
bash "$ROOT/tools/swift/finetune_qwen3vl_lora.sh" "${train_args[@]}"
# The newest checkpoint under OUTPUT_DIR, as every launcher resolves it (medswift.core.models).
resolved="$("$PY" -m medswift.core.models --output_dir "$OUTPUT_DIR")" || exit 1
eval "$resolved"
export ADAPTER

step "5/7 inference on the validation split (tools/swift/infer_qwen3vl_lora.sh)"
export RESULT_FILE="$ADAPTER/infer_val.jsonl"
bash "$ROOT/tools/swift/infer_qwen3vl_lora.sh"

step "6/7 merge (tools/swift/merge_qwen3vl_lora.sh)"
export MERGED_DIR="${MERGED_DIR:-$ADAPTER-merged}"
rm -rf "$MERGED_DIR"
bash "$ROOT/tools/swift/merge_qwen3vl_lora.sh"

step "7/7 report card on the validation split (tools/evaluate_checkpoint.sh)"
export EVAL_DIR="$ADAPTER/eval_val"
SPLIT="val" bash "$ROOT/tools/evaluate_checkpoint.sh" --quiet

# What the run shows: the loss curve's ends, as the adapter's model card states them.
learned="$(sed -n 's/^- \(training loss .*\)$/\1/p' "$ADAPTER/README.md" 2>/dev/null || true)"

cat <<SUMMARY

MedSwift-VL quickstart finished. For research only, not for diagnosis.
${learned:+  $learned
}
  model            $MODEL
  converted data   $DATA_DIR  (train/val/test.jsonl, skipped.tsv, summary.json)
  LoRA adapter     $ADAPTER
  training log     $(dirname "$ADAPTER")/logging.jsonl  (curves: $(dirname "$ADAPTER")/images/)
  predictions      $RESULT_FILE  ($(wc -l <"$RESULT_FILE") records)
  merged model     $MERGED_DIR
  report card      $EVAL_DIR/report.md  (metrics.json, findings_f1.png, text_metrics.png)
  scored copy      $EVAL_DIR/predictions.jsonl  (the report card's own run: the same predictions plus its blank/noise control rows)
  model card       $ADAPTER/README.md
Try it in the browser (http://127.0.0.1:7860, this machine only):
  .venv/bin/python app/gradio_app.py --adapter_path $ADAPTER
SUMMARY
