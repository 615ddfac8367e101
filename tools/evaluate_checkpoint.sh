#!/usr/bin/env bash
# One command from a checkpoint to a report card: batched inference over a split with
# blank/noise controls (scripts/batch_infer.py --ablation), then scripts/evaluate.py.
#   bash tools/evaluate_checkpoint.sh                                   # newest checkpoint, test split
#   ADAPTER=results/lora/v0-.../checkpoint-573 SPLIT=val bash tools/evaluate_checkpoint.sh
#   NO_ADAPTER=1 MODEL=/models/Qwen3-VL-8B-Instruct bash tools/evaluate_checkpoint.sh   # base model alone
# Writes <EVAL_DIR>/predictions.jsonl, metrics.json, report.md and charts; a re-run resumes.
# Knobs (env): SPLIT (test|val|train), EVAL_DIR, INFER_BATCH, MAX_NEW_TOKENS, TEMPERATURE,
# INFER_BACKEND, IMAGE_MAX_TOKEN_NUM and the rest of tools/swift/common.sh.
# For research only, not for diagnosis.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/swift/common.sh"
init_launcher infer "$@"

SPLIT="${SPLIT:-test}"
check_knobs MAX_NEW_TOKENS TEMPERATURE INFER_BATCH
DATASET="${DATASET:-$DATA_DIR/$SPLIT.jsonl}"
require_data "$DATASET" "$SPLIT split"
resolve_choice serve
model_args=(--model_path "$MODEL")
if [[ -z "$ADAPTER" ]]; then
  EVAL_DIR="${EVAL_DIR:-$OUTPUT_DIR/eval_base_$SPLIT}"
else
  [[ "$MODEL_SOURCE" == user ]] || model_args=()   # batch_infer reads the base from args.json too
  model_args+=(--adapter_path "$ADAPTER")
  EVAL_DIR="${EVAL_DIR:-${ADAPTER%/}/eval_$SPLIT}"
fi
[[ "$DTYPE" == "auto" ]] || model_args+=(--dtype "$DTYPE")
mkdir -p "$EVAL_DIR"

infer=("$PYTHON_BIN" "$ROOT/scripts/batch_infer.py" --dataset "$DATASET" "${model_args[@]}"
  --backend "$INFER_BACKEND" --batch_size "$INFER_BATCH" --max_new_tokens "$MAX_NEW_TOKENS"
  --temperature "$TEMPERATURE" --image_max_token_num "$IMAGE_MAX_TOKEN_NUM"
  --ablation --resume --output_file "$EVAL_DIR/predictions.jsonl")
score=("$PYTHON_BIN" "$ROOT/scripts/evaluate.py" --predictions "$EVAL_DIR/predictions.jsonl" --output_dir "$EVAL_DIR")
if [[ "$DRY_RUN" == "1" ]]; then
  printf '%q ' "${infer[@]}"; printf '\n'
  printf '%q ' "${score[@]}"; printf '\n'
  exit 0
fi
"${infer[@]}" "$@"
"${score[@]}"
if [[ -n "$ADAPTER" ]]; then  # the checkpoint's model card shows its report cards' headline metrics
  medswift_python -m medswift.eval.model_card "$ADAPTER" >&2 || note "could not refresh the model card of $ADAPTER"
fi
