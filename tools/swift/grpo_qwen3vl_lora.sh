#!/usr/bin/env bash
# GRPO after SFT: continues a LoRA checkpoint with clinical rewards (swift rlhf --rlhf_type grpo).
#   bash tools/swift/grpo_qwen3vl_lora.sh                      # newest SFT checkpoint under results/lora
#   ADAPTER=results/lora/v0-.../checkpoint-573 MODEL=/models/Qwen3-VL-8B-Instruct NPROC_PER_NODE=8 bash tools/swift/grpo_qwen3vl_lora.sh
#   REWARD_FUNCS="medswift_findings repetition" REWARD_WEIGHTS="1 0.2" bash tools/swift/grpo_qwen3vl_lora.sh --max_steps 50
#   DRY_RUN=1 bash tools/swift/grpo_qwen3vl_lora.sh            # print the command only
#   DRY_RUN=1 NPROC_PER_NODE=8 USE_VLLM=true MODEL=/models/Qwen3-VL-8B-Instruct ADAPTER=... bash tools/swift/grpo_qwen3vl_lora.sh
#   ROLLOUT_SERVER=1 MODEL=/models/Qwen3-VL-8B-Instruct bash tools/swift/grpo_qwen3vl_lora.sh   # on the rollout node
# ADAPTER is both the starting point (--adapters) and the frozen reference of the KL term
# (--ref_adapters). The data is DATA_DIR's converter JSONL: the reference report of each record
# becomes the reward's `solution` column (a view written under RL_OUTPUT_DIR/data, no second
# conversion). The image budget is the checkpoint's. One process per GPU (NPROC_PER_NODE, NNODES as
# for training); on CUDA with vLLM installed the rollouts run in vLLM colocated with training
# (USE_VLLM), else in ms-swift's transformers engine; the CPU runs the embedded default.
# On the embedded default (the tiny model) a recipe that learns on the bundled data replaces the
# knobs you did not set, and says so. A run that would train 0 steps (more prompts per step than
# records) stops before any model loads. vLLM gets --vllm_max_model_len (longest prompt of the data +
# MAX_COMPLETION_LENGTH) and --vllm_limit_mm_per_prompt (most images per record); VLLM_MODE=server
# trains against `swift rollout` on VLLM_SERVER_HOST (ROLLOUT_SERVER=1 starts that server). A NaN or
# infinite loss, grad_norm, reward or KL stops the run (ALLOW_NONFINITE=1 goes on).
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
# The embedded default: 2 prompts x 4 reports a step (2 steps an epoch on the 5-record bundled split),
# reports long enough to finish (the SFT quickstart answers in up to 128 tokens), 5 epochs.
embedded_default GLOBAL_BATCH 8
embedded_default MICRO_BATCH 4
embedded_default NUM_GENERATIONS 4
embedded_default EPOCHS 5
embedded_default LEARNING_RATE 2e-4
embedded_default MAX_COMPLETION_LENGTH 160
embedded_default SAVE_STEPS 10
init_launcher all "$@"

check_knobs NUM_GENERATIONS MAX_COMPLETION_LENGTH BETA TEMPERATURE VLLM_GPU_MEMORY VLLM_TP VLLM_DP SLEEP_LEVEL VLLM_SERVER_PORT
[[ -z "$VLLM_MAX_MODEL_LEN" ]] || is_positive_int "$VLLM_MAX_MODEL_LEN" || die "VLLM_MAX_MODEL_LEN must be a positive integer, got '$VLLM_MAX_MODEL_LEN'"
[[ -z "$VLLM_IMAGES_PER_PROMPT" ]] || is_positive_int "$VLLM_IMAGES_PER_PROMPT" || die "VLLM_IMAGES_PER_PROMPT must be a positive integer, got '$VLLM_IMAGES_PER_PROMPT'"
[[ -z "$MOVE_MODEL_BATCHES" ]] || is_positive_int "$MOVE_MODEL_BATCHES" || die "MOVE_MODEL_BATCHES must be a positive integer, got '$MOVE_MODEL_BATCHES'"
for name in OFFLOAD_MODEL OFFLOAD_OPTIMIZER; do
  [[ "${!name}" == true || "${!name}" == false ]] || die "$name must be true or false, got '${!name}'"
done
case "$VLLM_MODE" in colocate | server) ;; *) die "VLLM_MODE must be colocate or server, got '$VLLM_MODE'" ;; esac
[[ "$VLLM_MODE" == colocate || -n "$VLLM_SERVER_HOST" || "${ROLLOUT_SERVER:-0}" == 1 ]] \
  || die "VLLM_MODE=server: set VLLM_SERVER_HOST to the node that runs the rollout server (ROLLOUT_SERVER=1 there)"

# The base model first: on the embedded default its recipe replaces the knobs not set (and says so).
resolve_choice adapter
apply_embedded_defaults GRPO
check_knobs NUM_GENERATIONS MAX_COMPLETION_LENGTH
awk -v t="$TEMPERATURE" 'BEGIN { exit !(t + 0 > 0) }' || die "TEMPERATURE=$TEMPERATURE: GRPO samples, so it must be above 0"
# The generation batch (completions per optimizer step) is GLOBAL_BATCH: ms-swift samples it in
# groups of NUM_GENERATIONS per prompt.
is_positive_int "$GLOBAL_BATCH" || die "GLOBAL_BATCH must be a positive integer, got '$GLOBAL_BATCH'"
if ((GLOBAL_BATCH % NUM_GENERATIONS != 0)); then
  fits=""
  for ((g = 2; g <= GLOBAL_BATCH; g++)); do ((GLOBAL_BATCH % g == 0)) && fits+=" $g"; done
  die "NUM_GENERATIONS=$NUM_GENERATIONS does not divide the generation batch GLOBAL_BATCH=$GLOBAL_BATCH (completions per step); use one of:$fits, or change GLOBAL_BATCH"
fi
# The loss types the installed ms-swift handles (read from its trainer, so 4.6's fipo is one).
medswift_python -m medswift.posttrain.datasets loss_types grpo "$LOSS_TYPE" || exit 2

# What the data asks: 0 steps stops here; vLLM's context and images per prompt come from it.
prompts_per_step=$((GLOBAL_BATCH / NUM_GENERATIONS))
PLAN_MAX_MODEL_LEN="" PLAN_MAX_IMAGES=""
if [[ -e "$TRAIN_FILE" ]]; then
  plan="$(medswift_python -m medswift.posttrain.datasets plan --input "$TRAIN_FILE" --image_tokens "$IMAGE_MAX_TOKEN_NUM" \
    --completion "$MAX_COMPLETION_LENGTH" --prompts_per_step "$prompts_per_step")" || exit 2
  eval "$plan"
fi
note "GRPO: $prompts_per_step prompt(s) x $NUM_GENERATIONS reports per step, reports up to $MAX_COMPLETION_LENGTH tokens"

# Rollout engine: vLLM on CUDA when installed (colocated with training, or a `swift rollout` server),
# else ms-swift's transformers engine.
vllm_args() {
  local max_len="${VLLM_MAX_MODEL_LEN:-$PLAN_MAX_MODEL_LEN}" images="${VLLM_IMAGES_PER_PROMPT:-$PLAN_MAX_IMAGES}"
  if [[ -z "$max_len" || -z "$images" ]]; then
    images="${images:-1}"
    max_len="${max_len:-$(((images * IMAGE_MAX_TOKEN_NUM + 512 + MAX_COMPLETION_LENGTH + 255) / 256 * 256))}"
    note "dry run: the data is not on this machine: vLLM sized for $images image(s) of $IMAGE_MAX_TOKEN_NUM tokens," \
      "512 prompt tokens and $MAX_COMPLETION_LENGTH completion tokens (--vllm_max_model_len $max_len); set VLLM_MAX_MODEL_LEN and VLLM_IMAGES_PER_PROMPT"
  fi
  vllm_common=(--vllm_tensor_parallel_size "$VLLM_TP" --vllm_max_model_len "$max_len"
    --vllm_limit_mm_per_prompt "{\"image\": $images}")
}
rollout_args=(--use_vllm false)
vllm_here() { medswift_python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("vllm") is None)'; }
want_vllm=""
case "$USE_VLLM" in
  true | auto)
    if [[ "$(target_gpus)" -eq 0 ]]; then
      [[ "$USE_VLLM" == true ]] && die "USE_VLLM=true: vLLM rollouts need a CUDA GPU and none is visible (USE_VLLM=false uses the transformers engine)"
    elif vllm_here; then
      want_vllm=1
    elif [[ "$USE_VLLM" == true && "$DRY_RUN" != 1 ]]; then
      die "USE_VLLM=true but vllm is not installed in $PYTHON_BIN (pip install vllm, or USE_VLLM=false)"
    elif [[ "$USE_VLLM" == true ]]; then
      note "dry run: vllm is not installed here; the target machine must have it"
      want_vllm=1
    else
      note "vllm is not installed here: rollouts use the transformers engine (USE_VLLM=true shows the vLLM command)"
    fi
    ;;
  false) ;;
  *) die "USE_VLLM must be auto, true or false, got '$USE_VLLM'" ;;
esac
vllm_common=()
if [[ -n "$want_vllm" || "${ROLLOUT_SERVER:-0}" == 1 ]]; then
  vllm_args
  if [[ "$VLLM_MODE" == server ]]; then
    rollout_args=(--use_vllm true --vllm_mode server --vllm_server_host "$VLLM_SERVER_HOST" --vllm_server_port "$VLLM_SERVER_PORT")
  else
    rollout_args=(--use_vllm true --vllm_mode colocate --vllm_gpu_memory_utilization "$VLLM_GPU_MEMORY"
      "${vllm_common[@]}" --sleep_level "$SLEEP_LEVEL")
    [[ "$OFFLOAD_MODEL" == true ]] && rollout_args+=(--offload_model true)
    [[ "$OFFLOAD_OPTIMIZER" == true ]] && rollout_args+=(--offload_optimizer true)
  fi
  [[ -n "$MOVE_MODEL_BATCHES" ]] && rollout_args+=(--move_model_batches "$MOVE_MODEL_BATCHES")
fi

# ROLLOUT_SERVER=1: this node serves rollouts (swift rollout) for trainers started with VLLM_MODE=server;
# it listens on VLLM_SERVER_HOST (default all interfaces: the trainers are on other nodes).
rollout_server_command() {
  local type_args=()
  [[ -n "$MODEL_TYPE" ]] && type_args=(--model_type "$MODEL_TYPE")
  rollout_cmd=("$SWIFT_BIN" rollout --model "$MODEL" "${type_args[@]}" "${vllm_common[@]}"
    --vllm_data_parallel_size "$VLLM_DP" --host "${VLLM_SERVER_HOST:-0.0.0.0}" --port "$VLLM_SERVER_PORT")
}
if [[ "${ROLLOUT_SERVER:-0}" == 1 ]]; then
  rollout_server_command
  # One `swift rollout` process spreads over its GPUs itself (VLLM_TP x VLLM_DP): no torchrun.
  unset NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT
  run_or_print "${rollout_cmd[@]}" "$@"
fi

train_flags=()
training_flags distributed adapter "$RL_OUTPUT_DIR"
dry=()
[[ "$DRY_RUN" == 1 ]] && dry=(--dry_run)
if [[ "$DRY_RUN" == 1 && ! -e "$TRAIN_FILE" ]]; then
  # The view is named after its source's hash, which only the target machine can compute.
  GRPO_FILE="$RL_OUTPUT_DIR/data/$(basename "$TRAIN_FILE" .jsonl)_grpo-<sha of the source>.jsonl"
  note "dry run: the GRPO view of $TRAIN_FILE is written on the target machine ($GRPO_FILE)"
else
  GRPO_FILE="$(medswift_python -m medswift.posttrain.datasets grpo_view --input "$TRAIN_FILE" --output_dir "$RL_OUTPUT_DIR/data" "${dry[@]}")" || exit 2
fi
reward_names=() reward_weights=() plugin_args=() health_args=()
resolve_rewards
health_flags "${plugin_args[@]:1}"
weight_args=()
((${#reward_weights[@]})) && weight_args=(--reward_weights "${reward_weights[@]}")
if [[ "$VLLM_MODE" == server && -n "$want_vllm" && "$DRY_RUN" == 1 ]]; then
  rollout_server_command   # first line: the rollout node's command; the last: this node's
  print_command IMAGE_MAX_TOKEN_NUM HF_HUB_OFFLINE -- "${rollout_cmd[@]}"
fi

after_run() {
  finish_rl_run
}
run_or_print "$SWIFT_BIN" rlhf --rlhf_type grpo --dataset "$GRPO_FILE" "${train_flags[@]}" \
  --adapters "$ADAPTER" --ref_adapters "$ADAPTER" \
  "${plugin_args[@]}" "${health_args[@]}" --reward_funcs "${reward_names[@]}" "${weight_args[@]}" \
  --num_generations "$NUM_GENERATIONS" --max_completion_length "$MAX_COMPLETION_LENGTH" \
  --temperature "$TEMPERATURE" --beta "$BETA" --loss_type "$LOSS_TYPE" \
  --truncation_strategy delete --log_completions true "${rollout_args[@]}" "$@"
