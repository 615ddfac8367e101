# shellcheck shell=bash
# Shared by every launcher in tools/swift/: knobs, checks and the `swift` call.
# Sourced, not run. Every knob is an environment variable with a default below;
# extra command-line flags of a launcher pass straight through to `swift`.
# For research only, not for diagnosis.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# ---------------------------------------------------------------- model and data
MODEL_DEFAULT="$ROOT/weights/tiny-qwen3-vl"          # built by scripts/build_tiny_model.py
# shellcheck disable=SC2034  # read by the infer and merge launchers
MODEL_FROM_USER="${MODEL:+1}"                          # infer/merge: else args.json decides
MODEL="${MODEL:-$MODEL_DEFAULT}"                       # e.g. /models/Qwen3-VL-8B-Instruct
MODEL_TYPE="${MODEL_TYPE:-}"                           # empty: read from $MODEL/config.json
DATA_DIR="${DATA_DIR:-$ROOT/data/openi_swift}"         # written by scripts/convert_xray_swift.py
TRAIN_FILE="${TRAIN_FILE:-$DATA_DIR/train.jsonl}"
VAL_FILE="${VAL_FILE:-$DATA_DIR/val.jsonl}"
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/results/lora}"         # ms-swift adds a v<N>-<time>/ folder per run
ADAPTER="${ADAPTER:-}"                                 # empty: newest checkpoint under $OUTPUT_DIR

# ---------------------------------------------------------------- image budget
# Qwen3-VL: pixels = tokens x 32 x 32. 1024 tokens ~ 1.05 MP, the reference's
# MAX_PIXELS=1003520. Use the same value for training and inference.
export IMAGE_MAX_TOKEN_NUM="${IMAGE_MAX_TOKEN_NUM:-1024}"

# ---------------------------------------------------------------- method (reference defaults)
LORA_RANK="${LORA_RANK:-8}"
LORA_ALPHA="${LORA_ALPHA:-32}"
TARGET_MODULES="${TARGET_MODULES:-all-linear}"
FREEZE_VIT="${FREEZE_VIT:-true}"
FREEZE_ALIGNER="${FREEZE_ALIGNER:-true}"

# ---------------------------------------------------------------- training
LEARNING_RATE="${LEARNING_RATE:-1e-4}"
LR_SCHEDULER="${LR_SCHEDULER:-cosine}"
WARMUP_RATIO="${WARMUP_RATIO:-0.05}"
EPOCHS="${EPOCHS:-3}"
GLOBAL_BATCH="${GLOBAL_BATCH:-16}"   # micro batch x accumulation x GPUs x nodes: fixed whatever the GPU count
MICRO_BATCH="${MICRO_BATCH:-1}"
MAX_LENGTH="${MAX_LENGTH:-2048}"
GRAD_CHECKPOINTING="${GRAD_CHECKPOINTING:-true}"
SAVE_STEPS="${SAVE_STEPS:-100}"
EVAL_STEPS="${EVAL_STEPS:-$SAVE_STEPS}"
LOGGING_STEPS="${LOGGING_STEPS:-5}"
SAVE_TOTAL_LIMIT="${SAVE_TOTAL_LIMIT:-2}"
SEED="${SEED:-42}"
DEEPSPEED="${DEEPSPEED:-none}"      # none | zero2 | zero3 (needs CUDA)
QUANT_BITS="${QUANT_BITS:-}"        # 4 or 8: QLoRA (bitsandbytes) training, CUDA only
DTYPE="${DTYPE:-auto}"              # auto: bfloat16 with CUDA, float32 without
NUM_WORKERS="${NUM_WORKERS:-2}"     # dataloader and preprocessing processes

# ---------------------------------------------------------------- inference
INFER_BACKEND="${INFER_BACKEND:-transformers}"   # transformers | vllm
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-512}"
TEMPERATURE="${TEMPERATURE:-0}"                  # 0 = greedy
INFER_BATCH="${INFER_BATCH:-16}"

# ---------------------------------------------------------------- environment
# Local weights only by default: no hub lookups, no "is this model the latest" probe.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-$HF_HUB_OFFLINE}"
DRY_RUN="${DRY_RUN:-0}"

PYTHON_BIN="${PYTHON_BIN:-$([[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python3)}"
if [[ -n "${SWIFT_BIN:-}" ]]; then
  :
elif [[ -x "$ROOT/.venv/bin/swift" ]]; then
  SWIFT_BIN="$ROOT/.venv/bin/swift"
else
  SWIFT_BIN="swift"
fi

die() {
  echo "error: $*" >&2
  exit 2
}

note() {
  echo "[medswift] $*" >&2
}

# Number of CUDA devices this process may use, without importing torch.
gpu_count() {
  if [[ -n "${CUDA_VISIBLE_DEVICES+x}" ]]; then
    if [[ -z "$CUDA_VISIBLE_DEVICES" || "$CUDA_VISIBLE_DEVICES" == "-1" ]]; then
      echo 0
      return
    fi
    if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
      echo 0
      return
    fi
    local ids
    IFS=',' read -r -a ids <<<"$CUDA_VISIBLE_DEVICES"
    echo "${#ids[@]}"
    return
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}

is_positive_int() {
  [[ "$1" =~ ^[1-9][0-9]*$ ]]
}

# A decimal or scientific number (1e-4, 0.05, 3); $2 = "positive" (> 0), "nonneg" (>= 0) or "ratio" (0 <= x < 1).
is_number() {
  [[ "$1" =~ ^[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$ ]] || return 1
  case "${2:-positive}" in
    positive) awk -v x="$1" 'BEGIN { exit !(x + 0 > 0) }' ;;
    nonneg) return 0 ;;
    ratio) awk -v x="$1" 'BEGIN { exit !(x + 0 < 1) }' ;;
  esac
}

# Every numeric and boolean knob, checked in one pass before `swift` starts: a typo is one line
# here, not a peft traceback after the model has loaded (LORA_RANK=-1) or argparse after 30 s.
check_knobs() {
  local name
  for name in "$@"; do
    local value="${!name}"
    case "$name" in
      LORA_RANK | LORA_ALPHA | GLOBAL_BATCH | MICRO_BATCH | MAX_LENGTH | SAVE_STEPS | EVAL_STEPS | \
        LOGGING_STEPS | SAVE_TOTAL_LIMIT | IMAGE_MAX_TOKEN_NUM | MAX_NEW_TOKENS | INFER_BATCH)
        is_positive_int "$value" || die "$name must be a positive integer, got '$value'" ;;
      SEED | NUM_WORKERS)
        [[ "$value" =~ ^[0-9]+$ ]] || die "$name must be a non-negative integer, got '$value'" ;;
      EPOCHS | LEARNING_RATE)
        is_number "$value" positive || die "$name must be a positive number, got '$value'" ;;
      WARMUP_RATIO)
        is_number "$value" ratio || die "$name must be a number in [0, 1), got '$value'" ;;
      TEMPERATURE)
        is_number "$value" nonneg || die "$name must be a number >= 0 (0 = greedy), got '$value'" ;;
      FREEZE_VIT | FREEZE_ALIGNER | GRAD_CHECKPOINTING)
        [[ "$value" == true || "$value" == false ]] || die "$name must be true or false, got '$value'" ;;
      *) die "check_knobs: unknown knob $name" ;;
    esac
  done
}

require_model() {
  [[ -d "$MODEL" ]] || die "model not found: $MODEL (set MODEL to a local Qwen3-VL folder, or build the default: python scripts/build_tiny_model.py)"
  [[ -f "$MODEL/config.json" ]] || die "not a model folder (no config.json): $MODEL"
  if [[ -z "$MODEL_TYPE" ]]; then
    # The ms-swift model type is the config's model_type (qwen3_vl, qwen3_vl_moe, ...).
    MODEL_TYPE="$("$PYTHON_BIN" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("model_type", ""))' \
      "$MODEL/config.json")" || die "cannot read model_type from $MODEL/config.json"
  fi
}

require_data() {
  local path="$1" what="$2"
  [[ -f "$path" ]] || die "$what not found: $path (convert data first: python scripts/convert_xray_swift.py --help)"
  [[ -s "$path" ]] || die "$what is empty: $path"
}

# Newest checkpoint-<step> under $1 (by modification time), or nothing; merged
# models (checkpoint-<step>-merged) are not adapters and are left out.
latest_checkpoint() {
  local dir="$1"
  [[ -d "$dir" ]] || return 0
  find "$dir" -maxdepth 3 -type d -regextype posix-extended -regex '.*/checkpoint-[0-9]+' -printf '%T@ %p\n' 2>/dev/null \
    | sort -n | tail -n 1 | cut -d' ' -f2-
}

# What swift infer/deploy load: NO_ADAPTER=1 -> MODEL alone; else ADAPTER (newest checkpoint by
# default) on the base named in its args.json, or on MODEL when set. Fills the array model_args.
resolve_model_args() {
  # shellcheck disable=SC2034  # read by the sourcing launcher
  model_args=()
  if [[ "${NO_ADAPTER:-0}" == "1" ]]; then
    require_model
    model_args=(--model "$MODEL")
    [[ -n "$MODEL_TYPE" ]] && model_args+=(--model_type "$MODEL_TYPE")
  else
    resolve_adapter
    if [[ -n "$MODEL_FROM_USER" ]]; then
      require_model
      model_args=(--model "$MODEL")
    fi
    model_args+=(--adapters "$ADAPTER")
  fi
  return 0
}

resolve_adapter() {
  if [[ -z "$ADAPTER" ]]; then
    ADAPTER="$(latest_checkpoint "$OUTPUT_DIR")"
    [[ -n "$ADAPTER" ]] || die "no adapter given and no checkpoint-* under $OUTPUT_DIR (train first, or set ADAPTER to a checkpoint-N folder)"
    note "using newest checkpoint: $ADAPTER"
  fi
  [[ -d "$ADAPTER" ]] || die "adapter not found: $ADAPTER"
  [[ -f "$ADAPTER/adapter_config.json" || -f "$ADAPTER/args.json" ]] \
    || die "not an adapter checkpoint (no adapter_config.json): $ADAPTER"
}

# QLoRA and quantised export run on CUDA only; stop before any heavy import (a dry run may print).
require_cuda() {
  [[ "$DRY_RUN" == "1" || "$(gpu_count)" -gt 0 ]] || die "$1 needs a CUDA GPU and none is visible on this machine"
}

resolve_dtype() {
  if [[ "$DTYPE" != "auto" ]]; then
    return
  fi
  if [[ "$(gpu_count)" -gt 0 ]]; then
    DTYPE="bfloat16"
  else
    DTYPE="float32"
    note "no CUDA device found: using float32 on CPU (bf16 needs a GPU); expect it to be slow"
  fi
}

# Print (DRY_RUN=1) or run a command; the printed form can be pasted into a shell.
run_or_print() {
  local exported=(IMAGE_MAX_TOKEN_NUM HF_HUB_OFFLINE)
  local v
  for v in NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT CUDA_VISIBLE_DEVICES MEDSWIFT_LABELS_FILE; do
    [[ -n "${!v:-}" ]] && exported+=("$v")
  done
  # What is shown keeps secrets out of the terminal: the value after --api_key is masked.
  local shown=() mask=0 arg
  for arg in "$@"; do
    if ((mask)); then shown+=('<API_KEY>'); else shown+=("$arg"); fi
    mask=0
    [[ "$arg" == --api_key ]] && mask=1
  done
  if [[ "$DRY_RUN" == "1" ]]; then
    for v in "${exported[@]}"; do
      printf '%s=%q ' "$v" "${!v}"
    done
    printf '%q ' "${shown[@]}"
    printf '\n'
    exit 0
  fi
  note "research use only, not for diagnosis"
  note "running: ${shown[*]}"
  exec "$@"
}

# swift sft with LoRA; $1 = processes per node, $2 = nodes; rest passes through.
run_sft() {
  local nproc="$1" nnodes="$2"
  shift 2
  is_positive_int "$nproc" || die "NPROC_PER_NODE must be a positive integer, got '$nproc'"
  is_positive_int "$nnodes" || die "NNODES must be a positive integer, got '$nnodes'"
  check_knobs LORA_RANK LORA_ALPHA EPOCHS LEARNING_RATE WARMUP_RATIO GLOBAL_BATCH MICRO_BATCH MAX_LENGTH \
    SAVE_STEPS EVAL_STEPS LOGGING_STEPS SAVE_TOTAL_LIMIT SEED NUM_WORKERS IMAGE_MAX_TOKEN_NUM \
    FREEZE_VIT FREEZE_ALIGNER GRAD_CHECKPOINTING
  require_model
  require_data "$TRAIN_FILE" "training data"
  local val_args=()
  if [[ -n "$VAL_FILE" && "$VAL_FILE" != "none" ]]; then
    require_data "$VAL_FILE" "validation data"
    val_args=(--val_dataset "$VAL_FILE" --eval_steps "$EVAL_STEPS")
  fi

  # Hold the global batch fixed: accumulation = global / (micro x processes x nodes).
  local per_step=$((MICRO_BATCH * nproc * nnodes))
  ((GLOBAL_BATCH % per_step == 0)) \
    || die "GLOBAL_BATCH=$GLOBAL_BATCH is not a multiple of MICRO_BATCH x NPROC_PER_NODE x NNODES = $per_step"
  local accum=$((GLOBAL_BATCH / per_step))

  local quant_args=()
  if [[ -n "$QUANT_BITS" ]]; then
    [[ "$QUANT_BITS" == 4 || "$QUANT_BITS" == 8 ]] || die "QUANT_BITS must be 4 or 8, got '$QUANT_BITS'"
    require_cuda "QLoRA (QUANT_BITS=$QUANT_BITS, bitsandbytes)"
    quant_args=(--quant_method bnb --quant_bits "$QUANT_BITS" --bnb_4bit_compute_dtype bfloat16)
  fi
  resolve_dtype
  local ds_args=()
  case "$DEEPSPEED" in
    none | "") ;;
    zero2 | zero3 | zero2_offload | zero3_offload)
      if [[ "$(gpu_count)" -eq 0 ]]; then
        note "DEEPSPEED=$DEEPSPEED needs CUDA; training without DeepSpeed on CPU"
      else
        ds_args=(--deepspeed "$DEEPSPEED")
      fi
      ;;
    *) die "DEEPSPEED must be none, zero2, zero3, zero2_offload or zero3_offload, got '$DEEPSPEED'" ;;
  esac

  local type_args=()
  [[ -n "$MODEL_TYPE" ]] && type_args=(--model_type "$MODEL_TYPE")

  run_or_print "$SWIFT_BIN" sft \
    --model "$MODEL" "${type_args[@]}" \
    --dataset "$TRAIN_FILE" "${val_args[@]}" \
    --tuner_type lora \
    --lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA" --target_modules "$TARGET_MODULES" \
    --freeze_vit "$FREEZE_VIT" --freeze_aligner "$FREEZE_ALIGNER" \
    --torch_dtype "$DTYPE" \
    --num_train_epochs "$EPOCHS" \
    --per_device_train_batch_size "$MICRO_BATCH" --per_device_eval_batch_size "$MICRO_BATCH" \
    --gradient_accumulation_steps "$accum" \
    --learning_rate "$LEARNING_RATE" --lr_scheduler_type "$LR_SCHEDULER" --warmup_ratio "$WARMUP_RATIO" \
    --max_length "$MAX_LENGTH" --gradient_checkpointing "$GRAD_CHECKPOINTING" \
    --save_steps "$SAVE_STEPS" --save_total_limit "$SAVE_TOTAL_LIMIT" --logging_steps "$LOGGING_STEPS" \
    --dataloader_num_workers "$NUM_WORKERS" --dataset_num_proc "$NUM_WORKERS" \
    --seed "$SEED" --check_model false \
    --output_dir "$OUTPUT_DIR" \
    "${ds_args[@]}" "${quant_args[@]}" "$@"
}
