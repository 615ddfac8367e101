#!/usr/bin/env bash
# DPO after SFT: preference pairs from the SFT model's own reports, then swift rlhf --rlhf_type dpo.
#   bash tools/swift/dpo_qwen3vl_lora.sh                       # newest SFT checkpoint under results/lora
#   ADAPTER=results/lora/v0-.../checkpoint-573 NUM_SAMPLES=8 bash tools/swift/dpo_qwen3vl_lora.sh
#   PAIRS_FILE=my_pairs.jsonl bash tools/swift/dpo_qwen3vl_lora.sh   # your own pairs
#   DRY_RUN=1 bash tools/swift/dpo_qwen3vl_lora.sh             # print the commands only
# Without PAIRS_FILE the pairs are built first, under RL_OUTPUT_DIR/pairs/: NUM_SAMPLES reports per
# training study sampled from ADAPTER with scripts/batch_infer.py at TEMPERATURE (resumable),
# scored against the study's reference with the rewards GRPO uses (REWARD_FUNCS, REWARD_WEIGHTS);
# chosen = the best sample (CHOSEN=reference: the reference report), rejected = the worst; a
# study whose chosen does not beat its rejected is dropped and counted. Pairs are in ms-swift's
# rejected_response form. ADAPTER is both the start (--adapters) and the reference (--ref_adapters);
# the image budget is the checkpoint's. Samples cut at MAX_COMPLETION_LENGTH, and empty ones, are
# dropped before pairing (counted in pairs.summary.json). On the embedded default a recipe that learns
# on the bundled data replaces the knobs you did not set, and says so. A NaN or infinite loss or
# grad_norm stops the run (ALLOW_NONFINITE=1 goes on). Knobs (env): see tools/swift/common.sh.
# For research only, not for diagnosis.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launcher_default RL_OUTPUT_DIR "$ROOT/results/dpo"
launcher_default VAL_FILE none
launcher_default LEARNING_RATE 1e-5
launcher_default EPOCHS 1
launcher_default LOGGING_STEPS 1
launcher_default SAVE_STEPS 50
launcher_default TEMPERATURE 1.0        # samples must differ to be ranked
launcher_default BETA 0.1               # DPO's usual KL weight, ms-swift's default
launcher_default LOSS_TYPE sigmoid      # the DPO paper's loss
# The embedded default: samples long enough to finish (cut ones are dropped from the pairs), the
# reference report as chosen (the tiny model's samples all score about 0, so best-vs-worst ties),
# several pairs a step, epochs enough for the 5-record bundled split to move the adapter.
embedded_default MAX_COMPLETION_LENGTH 160
embedded_default CHOSEN reference
embedded_default NUM_SAMPLES 4
embedded_default GLOBAL_BATCH 4
embedded_default MICRO_BATCH 2
embedded_default EPOCHS 5
embedded_default LEARNING_RATE 2e-4
embedded_default SAVE_STEPS 10
init_launcher all "$@"

resolve_choice adapter
apply_embedded_defaults DPO
check_knobs NUM_SAMPLES MAX_COMPLETION_LENGTH BETA TEMPERATURE INFER_BATCH
medswift_python -m medswift.posttrain.datasets loss_types dpo "$LOSS_TYPE" || exit 2
[[ -z "$RPO_ALPHA" ]] || check_knobs RPO_ALPHA
case "$CHOSEN" in best | reference) ;; *) die "CHOSEN must be best or reference, got '$CHOSEN'" ;; esac
rpo_args=()
[[ -n "$RPO_ALPHA" ]] && rpo_args=(--rpo_alpha "$RPO_ALPHA")

if [[ -n "$PAIRS_FILE" ]]; then
  require_data "$PAIRS_FILE" "PAIRS_FILE"
  medswift_python -m medswift.posttrain.datasets check_pairs "$PAIRS_FILE" || exit 2
  SOURCE_FILE="$TRAIN_FILE"
  TRAIN_FILE="$PAIRS_FILE"   # sizes MAX_LENGTH from the pairs
fi
train_flags=()
training_flags distributed adapter "$RL_OUTPUT_DIR"

if [[ -z "$PAIRS_FILE" ]]; then
  SOURCE_FILE="$TRAIN_FILE"
  awk -v t="$TEMPERATURE" 'BEGIN { exit !(t + 0 > 0) }' || die "TEMPERATURE=$TEMPERATURE: pairs need sampled reports, so it must be above 0"
  reward_names=() reward_weights=() plugin_args=()
  resolve_rewards
  pairs_dir="$RL_OUTPUT_DIR/pairs/$(basename "$(dirname "$ADAPTER")")-$(basename "$ADAPTER")-n$NUM_SAMPLES-t$TEMPERATURE"
  PAIRS_FILE="$pairs_dir/pairs.jsonl"
  model_args=(--adapter_path "$ADAPTER")
  [[ "$MODEL_SOURCE" == user ]] && model_args+=(--model_path "$MODEL")
  sample=("$PYTHON_BIN" -m medswift.posttrain.datasets sample_input --input "$SOURCE_FILE" --num_samples "$NUM_SAMPLES"
    --output "$pairs_dir/sample_input.jsonl")
  infer=("$PYTHON_BIN" "$ROOT/scripts/batch_infer.py" --dataset "$pairs_dir/sample_input.jsonl" "${model_args[@]}"
    --backend "$INFER_BACKEND" --batch_size "$INFER_BATCH" --max_new_tokens "$MAX_COMPLETION_LENGTH"
    --temperature "$TEMPERATURE" --image_max_token_num "$IMAGE_MAX_TOKEN_NUM" --resume
    --output_file "$pairs_dir/samples.jsonl")
  weight_args=()
  ((${#reward_weights[@]})) && weight_args=(--reward_weights "${reward_weights[*]}")
  score=("$PYTHON_BIN" -m medswift.posttrain.datasets pairs --samples "$pairs_dir/samples.jsonl" --output "$PAIRS_FILE"
    --reward_funcs "${reward_names[*]}" "${weight_args[@]}" --chosen "$CHOSEN" --source "$SOURCE_FILE"
    ${plugin_args[1]:+--plugin "${plugin_args[1]}"})
  # Sampling runs data-parallel over the same processes as training, named on its own line.
  sample_nproc="$nproc"
  if [[ "$DRY_RUN" == 1 ]]; then
    PYTHONPATH="$ROOT/scripts:$ROOT" print_command PYTHONPATH -- "${sample[@]}"
    NPROC_PER_NODE="$sample_nproc" print_command IMAGE_MAX_TOKEN_NUM NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT -- "${infer[@]}"
    PYTHONPATH="$ROOT/scripts:$ROOT" print_command PYTHONPATH -- "${score[@]}"
  else
    mkdir -p "$pairs_dir" || die "cannot create $pairs_dir"
    note "building preference pairs in $pairs_dir ($NUM_SAMPLES samples per study at temperature $TEMPERATURE," \
      "up to $MAX_COMPLETION_LENGTH tokens; samples cut at that length or empty are dropped)"
    medswift_python "${sample[@]:1}" || exit 2
    NPROC_PER_NODE="$sample_nproc" "${infer[@]}" || die "sampling reports for the pairs failed (see above); a re-run resumes"
    medswift_python "${score[@]:1}" || exit 2
  fi
fi

plugin_args=() health_args=()
health_flags
after_run() {
  finish_rl_run
}
note "DPO on $PAIRS_FILE (from $SOURCE_FILE)"
run_or_print "$SWIFT_BIN" rlhf --rlhf_type dpo --dataset "$PAIRS_FILE" "${train_flags[@]}" \
  --adapters "$ADAPTER" --ref_adapters "$ADAPTER" "${plugin_args[@]}" "${health_args[@]}" \
  --beta "$BETA" --loss_type "$LOSS_TYPE" "${rpo_args[@]}" "$@"
