#!/usr/bin/env bash
# GRPO after SFT: continues a LoRA checkpoint with clinical rewards (swift rlhf --rlhf_type grpo).
#   bash tools/swift/grpo_qwen3vl_lora.sh                      # newest SFT checkpoint under results/lora
#   ADAPTER=results/lora/v0-.../checkpoint-573 MODEL=/models/Qwen3-VL-8B-Instruct NPROC_PER_NODE=8 bash tools/swift/grpo_qwen3vl_lora.sh
#   REWARD_FUNCS="medswift_findings repetition" REWARD_WEIGHTS="1 0.2" bash tools/swift/grpo_qwen3vl_lora.sh --max_steps 50
#   DRY_RUN=1 bash tools/swift/grpo_qwen3vl_lora.sh            # print the command only
# ADAPTER is both the starting point (--adapters) and the frozen reference of the KL term
# (--ref_adapters). The data is DATA_DIR's converter JSONL: the reference report of each record
# becomes the reward's `solution` column (a view written under RL_OUTPUT_DIR/data, no second
# conversion). The image budget is the checkpoint's. One process per GPU (NPROC_PER_NODE, NNODES as
# for training); on CUDA with vLLM installed the rollouts run in vLLM colocated with training
# (USE_VLLM), else in ms-swift's transformers engine; the CPU runs the embedded default.
# Keeps ms-swift's completions.jsonl (every sampled report with its rewards) and logging.jsonl
# (reward mean/std per step); draws the reward curves beside the SFT ones and writes model cards.
# Knobs (env): see tools/swift/common.sh. For research only, not for diagnosis.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launcher_default RL_OUTPUT_DIR "$ROOT/results/grpo"
launcher_default VAL_FILE none          # the comparison card evaluates; GRPO eval would sample too
launcher_default LEARNING_RATE 1e-5
launcher_default EPOCHS 1
launcher_default LOGGING_STEPS 1        # a reward point per step
launcher_default SAVE_STEPS 50
launcher_default GLOBAL_BATCH 16        # completions per optimizer step = the generation batch
launcher_default MICRO_BATCH 4
launcher_default TEMPERATURE 1.0        # rollouts must differ for GRPO to compare them
launcher_default BETA 0.04              # DeepSeekMath's KL weight, ms-swift's default
launcher_default LOSS_TYPE grpo
init_launcher all "$@"

check_knobs NUM_GENERATIONS MAX_COMPLETION_LENGTH BETA TEMPERATURE VLLM_GPU_MEMORY
awk -v t="$TEMPERATURE" 'BEGIN { exit !(t + 0 > 0) }' || die "TEMPERATURE=$TEMPERATURE: GRPO samples, so it must be above 0"
# The generation batch (completions per optimizer step) is GLOBAL_BATCH: ms-swift samples it in
# groups of NUM_GENERATIONS per prompt.
is_positive_int "$GLOBAL_BATCH" || die "GLOBAL_BATCH must be a positive integer, got '$GLOBAL_BATCH'"
if ((GLOBAL_BATCH % NUM_GENERATIONS != 0)); then
  fits=""
  for ((g = 2; g <= GLOBAL_BATCH; g++)); do ((GLOBAL_BATCH % g == 0)) && fits+=" $g"; done
  die "NUM_GENERATIONS=$NUM_GENERATIONS does not divide the generation batch GLOBAL_BATCH=$GLOBAL_BATCH (completions per step); use one of:$fits, or change GLOBAL_BATCH"
fi
case "$LOSS_TYPE" in
  grpo | bnpo | dr_grpo | dapo | cispo | sapo) ;;
  *) die "LOSS_TYPE must be grpo, bnpo, dr_grpo, dapo, cispo or sapo for GRPO, got '$LOSS_TYPE'" ;;
esac

# Rollout engine: vLLM colocated with training on CUDA when installed, else transformers.
rollout_args=(--use_vllm false)
vllm_here() { medswift_python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("vllm") is None)'; }
case "$USE_VLLM" in
  true | auto)
    if [[ "$(target_gpus)" -eq 0 ]]; then
      [[ "$USE_VLLM" == true ]] && die "USE_VLLM=true: vLLM rollouts need a CUDA GPU and none is visible (USE_VLLM=false uses the transformers engine)"
    elif vllm_here; then
      rollout_args=(--use_vllm true --vllm_mode colocate --vllm_gpu_memory_utilization "$VLLM_GPU_MEMORY"
        --vllm_tensor_parallel_size 1 --sleep_level 1)
    elif [[ "$USE_VLLM" == true && "$DRY_RUN" != 1 ]]; then
      die "USE_VLLM=true but vllm is not installed in $PYTHON_BIN (pip install vllm, or USE_VLLM=false)"
    elif [[ "$USE_VLLM" == true ]]; then
      note "dry run: vllm is not installed here; the target machine must have it"
      rollout_args=(--use_vllm true --vllm_mode colocate --vllm_gpu_memory_utilization "$VLLM_GPU_MEMORY"
        --vllm_tensor_parallel_size 1 --sleep_level 1)
    else
      note "vllm is not installed here: rollouts use the transformers engine (USE_VLLM=true shows the vLLM command)"
    fi
    ;;
  false) ;;
  *) die "USE_VLLM must be auto, true or false, got '$USE_VLLM'" ;;
esac

train_flags=()
training_flags distributed adapter "$RL_OUTPUT_DIR"
dry=()
[[ "$DRY_RUN" == 1 ]] && dry=(--dry_run)
GRPO_FILE="$(medswift_python -m medswift.posttrain.datasets grpo_view --input "$TRAIN_FILE" --output_dir "$RL_OUTPUT_DIR/data" "${dry[@]}")" || exit 2
reward_names=() reward_weights=() plugin_args=()
resolve_rewards
weight_args=()
((${#reward_weights[@]})) && weight_args=(--reward_weights "${reward_weights[@]}")


after_run() {
  write_run_cards "$RL_OUTPUT_DIR"
}
run_or_print "$SWIFT_BIN" rlhf --rlhf_type grpo --dataset "$GRPO_FILE" "${train_flags[@]}" \
  --adapters "$ADAPTER" --ref_adapters "$ADAPTER" \
  "${plugin_args[@]}" --reward_funcs "${reward_names[@]}" "${weight_args[@]}" \
  --num_generations "$NUM_GENERATIONS" --max_completion_length "$MAX_COMPLETION_LENGTH" \
  --temperature "$TEMPERATURE" --beta "$BETA" --loss_type "$LOSS_TYPE" \
  --truncation_strategy delete --log_completions true "${rollout_args[@]}" "$@"
