#!/usr/bin/env bash
# One command from a checkpoint to a report card: batched inference over a split with
# blank/noise controls (scripts/batch_infer.py --ablation), then scripts/evaluate.py.
#   bash tools/evaluate_checkpoint.sh                                   # newest checkpoint, test split
#   ADAPTER=results/lora/v0-.../checkpoint-573 SPLIT=val bash tools/evaluate_checkpoint.sh
#   NO_ADAPTER=1 MODEL=/models/Qwen3-VL-8B-Instruct bash tools/evaluate_checkpoint.sh   # base model alone
#   NPROC_PER_NODE=8 bash tools/evaluate_checkpoint.sh          # inference on 8 GPUs (torchrun)
# Writes <EVAL_DIR>/predictions.jsonl, metrics.json, report.md and charts; a re-run resumes.
# Knobs (env): SPLIT (test|val|train), EVAL_DIR, INFER_BATCH, MAX_NEW_TOKENS, TEMPERATURE,
# INFER_BACKEND, IMAGE_MAX_TOKEN_NUM, NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
# (as for training; one process by default) and the rest of tools/swift/common.sh. On several
# nodes every node runs this with its NODE_RANK on a shared EVAL_DIR; node 0 writes the report card.
# For research only, not for diagnosis.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/swift/common.sh"
launcher_knobs() {
  # ------------------------------------------------------------ evaluation
  knob SPLIT test                                 # test | val | train
  knob DATASET "$DATA_DIR/$SPLIT.jsonl"
  knob EVAL_DIR ""                                # empty: <ADAPTER>/eval_<SPLIT> (eval_base_<SPLIT> under OUTPUT_DIR without one)
}
init_launcher infer "$@"

check_knobs MAX_NEW_TOKENS TEMPERATURE INFER_BATCH
processes data
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
# Node 0's rank 0 merges the predictions once every node's ranks are done; only node 0 scores them.
scores=1
((nnodes == 1)) || [[ "$NODE_RANK" == 0 ]] || scores=0
if [[ "$DRY_RUN" == "1" ]]; then  # batch_infer.py reads the torchrun variables
  print_command NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT -- "${infer[@]}"
  ((scores)) && print_command -- "${score[@]}"
  exit 0
fi
"${infer[@]}" "$@"
((scores)) || exit 0
"${score[@]}"
if [[ -n "$ADAPTER" ]]; then  # the checkpoint's model card shows its report cards' headline metrics
  medswift_python -m medswift.posttrain.card "$ADAPTER" >&2 || note "could not refresh the model card of $ADAPTER"
fi
