# shellcheck shell=bash
# Shared by every launcher in tools/swift/: knobs, checks and the `swift` call.
# Sourced, not run. Every knob is an environment variable with a default below;
# extra command-line flags of a launcher pass straight through to `swift`.
# For research only, not for diagnosis.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Every knob, once, with its default. A launcher that needs another default declares it with
# `launcher_default NAME VALUE` after sourcing this file and before `init_launcher`, which applies
# the user's value, else the launcher's, else the one below. (A default set any other way would
# depend on the order of lines; launcher_default after init_launcher stops with an error.)
declare -A LAUNCHER_DEFAULTS=()
declare -A EMBEDDED_DEFAULTS=()   # a launcher's recipe for the embedded tiny model (embedded_default)
declare -A KNOBS_FROM_USER=()     # knobs the user set in the environment: no default overrides them
KNOBS_APPLIED=""

launcher_default() {
  [[ -z "$KNOBS_APPLIED" ]] || die "launcher_default $1 after init_launcher would be ignored (fix the launcher)"
  LAUNCHER_DEFAULTS[$1]="$2"
}

# embedded_default NAME VALUE: the launcher's value when the base model turns out to be the embedded
# default (a 20 M-parameter random model needs another recipe than 8B to learn in minutes); applied
# by apply_embedded_defaults once the model is resolved, only to knobs the user did not set.
embedded_default() {
  [[ -z "$KNOBS_APPLIED" ]] || die "embedded_default $1 after init_launcher would be ignored (fix the launcher)"
  EMBEDDED_DEFAULTS[$1]="$2"
}

# knob NAME DEFAULT: the user's value (environment), else the launcher's default, else DEFAULT.
knob() {
  if [[ -z "${!1:-}" ]]; then
    printf -v "$1" '%s' "${LAUNCHER_DEFAULTS[$1]-$2}"
  else
    KNOBS_FROM_USER[$1]=1
  fi
}

# init_launcher KIND "$@": apply the knobs; with -h/--help among the arguments, print the calling
# launcher's own usage (its header comment) and the knobs of KIND with their values, and exit.
# KIND: train | infer (inference, merge, serving, evaluation) | all (post-training: every knob). A
# launcher's own knobs go in a function `launcher_knobs` (knob lines, as below) defined before
# init_launcher; it runs after these.
init_launcher() {
  local kind="${1:-all}"
  shift || true
  # The run defaults shared with the Python tools, in one call (medswift.core.constants.shell_defaults).
  local defaults
  defaults="$(medswift_python -m medswift.core.constants)" || die "cannot read the run defaults (medswift.core.constants)"
  IFS=$'\t' read -r DEFAULT_MODEL DEFAULT_MAX_NEW_TOKENS LOOPBACK_HOSTS <<<"$defaults"
  # shellcheck disable=SC2034  # read by the launchers that source this file
  {
    # ------------------------------------------------------------ model and data
    MODEL_FROM_USER="${MODEL:+1}"                   # infer/merge: else the adapter's args.json decides
    knob MODEL "$DEFAULT_MODEL"                     # built by scripts/build_tiny_model.py
    knob MODEL_TYPE ""                              # empty: read from $MODEL/config.json
    knob DATA_DIR "$ROOT/data/openi_swift"          # written by scripts/convert_xray_swift.py
    knob SPLIT_PREFIX ""                            # cls_ for the classification-head files
    knob TRAIN_FILE "$DATA_DIR/${SPLIT_PREFIX}train.jsonl"
    knob VAL_FILE "$DATA_DIR/${SPLIT_PREFIX}val.jsonl"
    knob OUTPUT_DIR "$ROOT/results/lora"            # ms-swift adds a v<N>-<time>/ folder per run
    knob ADAPTER ""                                 # empty: newest checkpoint under $OUTPUT_DIR

    # ------------------------------------------------------------ image budget
    # Qwen3-VL: pixels = tokens x 32 x 32. Training records it in the checkpoint (args.json
    # model_kwargs) and inference takes it from there unless set: medswift.core.models decides
    # (image_budget), resolve_choice receives the final value.
    knob IMAGE_MAX_TOKEN_NUM ""                     # empty: training the default; inference the checkpoint's
    knob MAX_PIXELS ""                              # the reference's knob: IMAGE_MAX_TOKEN_NUM = MAX_PIXELS / 1024

    # ------------------------------------------------------------ method (reference defaults)
    knob LORA_RANK 8
    knob LORA_ALPHA 32
    knob LORA_DROPOUT 0.05                          # ms-swift's; 0 on the embedded default (quickstart.sh says why)
    knob TARGET_MODULES all-linear
    knob FREEZE_VIT true
    knob FREEZE_ALIGNER true

    # ------------------------------------------------------------ training
    knob LEARNING_RATE 1e-4
    knob LR_SCHEDULER cosine
    knob WARMUP_RATIO 0.05
    knob EPOCHS 3
    knob GLOBAL_BATCH 16                            # micro x accumulation x GPUs x nodes: fixed whatever the GPU count
    knob MICRO_BATCH 1
    knob MAX_LENGTH auto                            # auto: the longest training sample (views x budget + text)
    knob GRAD_CHECKPOINTING true
    knob SAVE_STEPS 100
    knob EVAL_STEPS "$SAVE_STEPS"
    knob LOGGING_STEPS 5
    knob SAVE_TOTAL_LIMIT 2
    knob SEED 42
    knob DEEPSPEED none                             # none | zero2 | zero3 | zero2_offload | zero3_offload (CUDA)
    knob QUANT_BITS ""                              # 4 or 8: QLoRA (bitsandbytes) training, CUDA only
    knob DTYPE auto                                 # auto: bfloat16 with CUDA, float32 without
    knob TARGET auto                                # the machine the command is for: auto | gpu | cpu (see target_gpus)
    knob NUM_WORKERS 2                              # dataloader and preprocessing processes
    knob REPORT_TO tensorboard                      # tensorboard (OUTPUT_DIR/v*/runs) | wandb | swanlab | none

    # ------------------------------------------------------------ inference
    knob INFER_BACKEND transformers                 # transformers | vllm
    knob MAX_NEW_TOKENS "$DEFAULT_MAX_NEW_TOKENS"
    knob TEMPERATURE 0                              # 0 = greedy
    knob INFER_BATCH 16

    # ------------------------------------------------------------ post-training (GRPO, DPO)
    knob RL_OUTPUT_DIR ""                           # empty: results/grpo or results/dpo (ADAPTER: newest under OUTPUT_DIR)
    knob REWARD_FUNCS medswift_findings             # reward names, space-separated: the plugin's and ms-swift's own
    knob REWARD_WEIGHTS ""                          # one weight per reward; empty: all 1
    knob REWARD_PLUGIN "$ROOT/scripts/swift_plugins/medswift_rewards.py"   # registers the medswift_* rewards
    knob NUM_GENERATIONS 4                          # GRPO: reports sampled per prompt; must divide GLOBAL_BATCH
    knob MAX_COMPLETION_LENGTH 256                  # tokens per sampled report (GRPO rollouts, DPO samples)
    knob BETA ""                                    # KL weight; empty: GRPO 0.04, DPO 0.1
    knob LOSS_TYPE ""                               # empty: GRPO grpo, DPO sigmoid; others: python -m medswift.posttrain.datasets loss_types grpo|dpo
    knob USE_VLLM auto                              # GRPO rollouts: auto (vLLM with CUDA, if installed) | true | false
    knob VLLM_MODE colocate                         # colocate (vLLM inside each training process) | server (swift rollout on other GPUs/nodes)
    knob VLLM_GPU_MEMORY 0.5                        # vLLM colocate: share of each GPU for rollouts
    knob VLLM_TP 1                                  # vLLM tensor-parallel size (colocate: divides NPROC_PER_NODE)
    knob VLLM_DP 1                                  # ROLLOUT_SERVER=1: vLLM data-parallel copies on the rollout node
    knob VLLM_MAX_MODEL_LEN ""                      # empty: longest prompt of the data + MAX_COMPLETION_LENGTH
    knob VLLM_IMAGES_PER_PROMPT ""                  # empty: the most images one record of the data carries
    knob VLLM_SERVER_HOST ""                        # VLLM_MODE=server: the rollout node (ROLLOUT_SERVER=1 starts it there)
    knob VLLM_SERVER_PORT 8000                      # VLLM_MODE=server: its port
    knob SLEEP_LEVEL 1                              # vLLM colocate: 1 frees its memory while training steps run
    knob OFFLOAD_MODEL false                        # colocate, large models: move the training model to CPU during rollouts
    knob OFFLOAD_OPTIMIZER false                    # colocate, large models: move the optimizer state to CPU during rollouts
    knob MOVE_MODEL_BATCHES ""                      # large models: sync weights to vLLM in this many parts (ms-swift's 72B example: 40)
    knob ALLOW_NONFINITE 0                          # 1: a NaN/inf loss, grad_norm, reward or KL is flagged but training goes on
    knob NUM_SAMPLES 4                              # DPO: reports sampled per study to build pairs
    knob CHOSEN best                                # DPO: chosen = best sample | reference report; rejected = worst
    knob RPO_ALPHA ""                               # DPO: weight of the chosen report's NLL term; empty: none
    knob PAIRS_FILE ""                              # DPO: your own pairs (rejected_response form); empty: built
  }
  if declare -F launcher_knobs >/dev/null; then launcher_knobs; fi
  KNOBS_APPLIED=1
  local arg
  for arg in "$@"; do
    if [[ "$arg" == -h || "$arg" == --help ]]; then
      launcher_help "$kind"
      exit 0
    fi
  done
}

# The usage of the launcher that sourced this file: its header comment, then its knobs (parsed
# from init_launcher above, so the list cannot drift from what is applied) and their values now.
launcher_help() {
  local kind="$1" script="${BASH_SOURCE[-1]}"
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;/^shellcheck/d;p}}' "$script"
  echo
  echo "Knobs (environment variables; values as this run would use them):"
  local section="" line name comment
  while IFS= read -r line; do
    if [[ "$line" =~ ^[[:space:]]*#\ -+\ (.+)$ ]]; then
      section="${BASH_REMATCH[1]}"
      case "$kind:$section" in
        train:inference | infer:method* | infer:training | train:post-training* | infer:post-training*) continue ;;
      esac
      printf '\n  [%s]\n' "$section"
    elif [[ "$line" =~ ^[[:space:]]*knob\ ([A-Z_]+)\ [^#]*(#\ (.*))?$ ]]; then
      case "$kind:$section" in
        train:inference | infer:method* | infer:training | train:post-training* | infer:post-training*) continue ;;
      esac
      name="${BASH_REMATCH[1]}" comment="${BASH_REMATCH[3]:-}"
      local value="${!name}"
      [[ "$name" == *_KEY && -n "$value" ]] && value='<set>'  # a secret stays off the terminal
      printf '  %-22s %s\n' "$name=$value" "$comment"
    fi
  done < <(sed -n '/^init_launcher() {/,/^  KNOBS_APPLIED=1/p' "$ROOT/tools/swift/common.sh"
           sed -n '/^launcher_knobs() {/,/^}/p' "$script")
  echo
  echo "DRY_RUN=1 prints the command instead of running it. For research only, not for diagnosis."
}

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
      MAX_LENGTH)
        [[ "$value" == auto ]] || is_positive_int "$value" || die "$name must be auto or a positive integer, got '$value'" ;;
      LORA_RANK | LORA_ALPHA | GLOBAL_BATCH | MICRO_BATCH | SAVE_STEPS | EVAL_STEPS | \
        LOGGING_STEPS | SAVE_TOTAL_LIMIT | IMAGE_MAX_TOKEN_NUM | MAX_NEW_TOKENS | INFER_BATCH | \
        MAX_COMPLETION_LENGTH | NUM_SAMPLES | VLLM_TP | VLLM_DP | VLLM_SERVER_PORT)
        is_positive_int "$value" || die "$name must be a positive integer, got '$value'" ;;
      SEED | NUM_WORKERS)
        [[ "$value" =~ ^[0-9]+$ ]] || die "$name must be a non-negative integer, got '$value'" ;;
      EPOCHS | LEARNING_RATE)
        is_number "$value" positive || die "$name must be a positive number, got '$value'" ;;
      WARMUP_RATIO | LORA_DROPOUT)
        is_number "$value" ratio || die "$name must be a number in [0, 1), got '$value'" ;;
      TEMPERATURE)
        is_number "$value" nonneg || die "$name must be a number >= 0 (0 = greedy), got '$value'" ;;
      NUM_GENERATIONS)
        [[ "$value" =~ ^[1-9][0-9]*$ && "$value" -ge 2 ]] || die "$name must be an integer of 2 or more (GRPO compares a group), got '$value'" ;;
      BETA | RPO_ALPHA)
        is_number "$value" nonneg || die "$name must be a number >= 0, got '$value'" ;;
      VLLM_GPU_MEMORY)
        is_number "$value" positive && is_number "$value" ratio || die "$name must be a number in (0, 1), got '$value'" ;;
      SLEEP_LEVEL)
        [[ "$value" =~ ^[012]$ ]] || die "$name must be 0, 1 or 2 (ms-swift's sleep levels), got '$value'" ;;
      FREEZE_VIT | FREEZE_ALIGNER | GRAD_CHECKPOINTING)
        [[ "$value" == true || "$value" == false ]] || die "$name must be true or false, got '$value'" ;;
      *) die "check_knobs: unknown knob $name" ;;
    esac
  done
}

# The library's Python (model resolution, small checks), importable even without the editable
# install: the same path a script run from scripts/ has.
medswift_python() {
  PYTHONPATH="$ROOT/scripts:$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON_BIN" "$@"
}

# Ask the one resolver (medswift.core.models) what to load; sets MODEL, ADAPTER, MODEL_TYPE,
# MODEL_SOURCE (user | adapter | default) and IMAGE_MAX_TOKEN_NUM (the run's image budget: the
# resolver works out IMAGE_MAX_TOKEN_NUM, MAX_PIXELS, the checkpoint's own and the default), or
# stops with its one-line error.
#   resolve_choice model          a model alone (training, export): MODEL
#   resolve_choice adapter        ADAPTER, else the newest checkpoint under OUTPUT_DIR, on its base
#   resolve_choice serve          like adapter, or MODEL alone with NO_ADAPTER=1; checks INFER_BACKEND
resolve_choice() {
  local what="$1" adapter_given="$ADAPTER" args=() resolved
  [[ -n "$MODEL_FROM_USER" || "$what" == model ]] && args+=(--model "$MODEL")
  case "$what" in
    model) args+=(--no_adapter) ;;
    adapter) args+=(--adapter "$ADAPTER" --output_dir "$OUTPUT_DIR") ;;
    serve)
      args+=(--backend "$INFER_BACKEND")
      if [[ "${NO_ADAPTER:-0}" == 1 ]]; then args+=(--no_adapter); else args+=(--adapter "$ADAPTER" --output_dir "$OUTPUT_DIR"); fi
      ;;
  esac
  [[ "$DRY_RUN" == 1 ]] && args+=(--elsewhere)   # a dry run may name paths of the target machine
  # the knobs as this launcher sees them (set, defaulted or empty): the resolver decides the budget
  resolved="$(IMAGE_MAX_TOKEN_NUM="$IMAGE_MAX_TOKEN_NUM" MAX_PIXELS="$MAX_PIXELS" \
    medswift_python -m medswift.core.models "${args[@]}")" || exit 2
  local user_type="$MODEL_TYPE"
  eval "$resolved"
  [[ -n "$user_type" ]] && MODEL_TYPE="$user_type"
  if [[ "$DRY_RUN" == 1 && ! -e "$MODEL" ]]; then
    note "dry run: $MODEL is not on this machine; shown as given (the target machine must have it)"
  fi
  export IMAGE_MAX_TOKEN_NUM  # for ms-swift, which reads it from the environment
  unset MAX_PIXELS  # already in IMAGE_MAX_TOKEN_NUM; ms-swift must not convert it again
  [[ -n "$ADAPTER" && -z "$adapter_given" ]] && note "using newest checkpoint: $ADAPTER"
  RESOLVED_AS="$what"
  return 0
}

# Is MODEL the embedded default (weights/tiny-qwen3-vl, built by scripts/build_tiny_model.py)?
is_embedded_model() {
  [[ -e "$MODEL" && -e "$DEFAULT_MODEL" && "$(realpath "$MODEL")" == "$(realpath "$DEFAULT_MODEL")" ]]
}

# On the embedded default, the launcher's embedded_default values replace the knobs the user did not
# set, and one line says so; with real weights nothing changes. $1: what the recipe is for (output).
apply_embedded_defaults() {
  ((${#EMBEDDED_DEFAULTS[@]})) && [[ -z "${EMBEDDED_APPLIED:-}" ]] && is_embedded_model || return 0
  EMBEDDED_APPLIED=1
  local name applied=()
  for name in $(printf '%s\n' "${!EMBEDDED_DEFAULTS[@]}" | sort); do
    [[ -n "${KNOBS_FROM_USER[$name]:-}" ]] && continue
    printf -v "$name" '%s' "${EMBEDDED_DEFAULTS[$name]}"
    applied+=("$name=${EMBEDDED_DEFAULTS[$name]}")
  done
  ((${#applied[@]})) && note "embedded default: ${1:-the} learning recipe for the tiny model: ${applied[*]}" \
    "(knobs you set are kept; with MODEL=<real weights> the launcher's defaults apply)"
  return 0
}

require_data() {
  local path="$1" what="$2"
  if [[ "$DRY_RUN" == 1 && ! -e "$path" ]]; then  # a command prepared here for another machine
    note "dry run: $what $path is not on this machine; shown as given (the target machine must have it)"
    return 0
  fi
  [[ -f "$path" ]] || die "$what not found: $path ($(last_conversion_hint))"
  [[ -s "$path" ]] || die "$what is empty: $path"
}

# Where the last conversion wrote (the converters remember it in medswift.data.pipeline.last_conversion), as a hint for
# a launcher that finds no data; only on that error path, so the import costs nothing otherwise.
last_conversion_hint() {
  medswift_python -c 'from medswift.data.pipeline.last_conversion import last_conversion_hint; print(last_conversion_hint())' 2>/dev/null \
    || echo "convert data first: python scripts/convert_xray_swift.py --help"
}

# What swift infer/export/deploy load, as flags: NO_ADAPTER=1 -> MODEL alone; else ADAPTER (newest
# checkpoint by default) with --model only when the user named the base (else ms-swift reads the
# checkpoint's args.json, as the resolver did). Fills the array model_args.
resolve_model_args() {
  resolve_choice serve
  # shellcheck disable=SC2034  # read by the sourcing launcher
  model_args=()
  if [[ -z "$ADAPTER" ]]; then
    model_args=(--model "$MODEL")
    [[ -n "$MODEL_TYPE" ]] && model_args+=(--model_type "$MODEL_TYPE")
  else
    [[ "$MODEL_SOURCE" == user ]] && model_args=(--model "$MODEL")
    model_args+=(--adapters "$ADAPTER")
  fi
  return 0
}

# QLoRA and quantised export run on CUDA only; stop before any heavy import (a dry run may print).
require_cuda() {
  [[ "$DRY_RUN" == "1" || "$(gpu_count)" -gt 0 ]] || die "$1 needs a CUDA GPU and none is visible on this machine"
}

# GPUs of the machine the command is for. A real run: this machine's. A dry run (DRY_RUN=1) is
# usually written on a laptop for a cluster, so it shows the CUDA command (bf16, DeepSpeed)
# unless TARGET=cpu; TARGET=gpu forces that for a real run too.
target_gpus() {
  local here
  here="$(gpu_count)"
  case "$TARGET" in
    cpu) echo 0 ;;
    gpu) echo $((here > 0 ? here : 1)) ;;
    auto) if [[ "$DRY_RUN" == 1 ]]; then echo $((here > 0 ? here : 1)); else echo "$here"; fi ;;
    *) die "TARGET must be auto, gpu or cpu, got '$TARGET'" ;;
  esac
}

resolve_dtype() {
  if [[ "$DTYPE" != "auto" ]]; then
    return
  fi
  if [[ "$(target_gpus)" -gt 0 ]]; then
    DTYPE="bfloat16"
    [[ "$DRY_RUN" == 1 && "$(gpu_count)" -eq 0 ]] \
      && note "dry run: showing the command for a CUDA machine (bf16); TARGET=cpu shows the CPU one"
  else
    DTYPE="float32"
    note "no CUDA device found: using float32 on CPU (bf16 needs a GPU); expect it to be slow"
  fi
  return 0
}

# is_loopback HOST: HOST is this machine only (no API key or login needed).
is_loopback() {
  [[ " $LOOPBACK_HOSTS " == *" $1 "* ]]
}

# masked_words WORD...: the words with the value after --api_key masked, in the array `shown`.
masked_words() {
  shown=()
  local mask=0 arg
  for arg in "$@"; do
    if ((mask)); then shown+=('<API_KEY>'); else shown+=("$arg"); fi
    mask=0
    [[ "$arg" == --api_key ]] && mask=1
  done
  return 0
}

# print_command VAR... -- WORD...: the one dry-run printer. One line that can be pasted into a shell:
# the named variables that are set, as assignments, then the command (secrets masked).
print_command() {
  while (($#)) && [[ "$1" != -- ]]; do
    [[ -n "${!1:-}" ]] && printf '%s=%q ' "$1" "${!1}"
    shift
  done
  shift
  local shown
  masked_words "$@"
  printf '%q ' "${shown[@]}"
  printf '\n'
}

# Print (DRY_RUN=1) or run a command, with the variables ms-swift and torchrun read.
run_or_print() {
  if [[ "$DRY_RUN" == "1" ]]; then
    print_command IMAGE_MAX_TOKEN_NUM HF_HUB_OFFLINE NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT \
      CUDA_VISIBLE_DEVICES MEDSWIFT_LABELS_FILE -- "$@"
    exit 0
  fi
  local shown
  masked_words "$@"
  note "research use only, not for diagnosis"
  note "running: ${shown[*]}"
  if declare -F after_run >/dev/null; then  # the launcher has something to do once the command succeeded
    "$@"
    after_run
    exit 0
  fi
  exec "$@"
}

# Model cards (README.md) in every checkpoint of the newest run folder under $1 (default OUTPUT_DIR).
write_run_cards() {
  local run_dir
  run_dir="$(find "${1:-$OUTPUT_DIR}" -maxdepth 1 -type d -name 'v*-*' -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-)"
  [[ -n "$run_dir" ]] || return 0
  medswift_python -m medswift.posttrain.card --run "$run_dir" >&2 || note "could not write the model cards in $run_dir"
}

# How many processes and nodes a launcher runs, and the checks that go with them, for every
# launcher alike. $1: "single" (one process, never torchrun), "distributed" (training:
# NPROC_PER_NODE, default all visible GPUs or 1 on CPU; NNODES with NODE_RANK, MASTER_ADDR and
# MASTER_PORT) or "data" (data-parallel inference: the same variables, but one process unless
# NPROC_PER_NODE or NNODES asks for more). Sets nproc and nnodes.
processes() {
  local gpus
  gpus="$(gpu_count)"
  if [[ "$1" == single ]]; then
    # One process: make sure ms-swift does not start torchrun from an inherited environment.
    unset NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT
    if ((gpus > 0)); then
      export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
      [[ "$CUDA_VISIBLE_DEVICES" == *,* ]] && die "one-GPU launcher got CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES; use finetune_qwen3vl_lora_mp.sh for several"
    fi
    nproc=1 nnodes=1
    return 0
  fi
  # Without a GPU, ms-swift still runs several CPU processes (gloo), which is how it is tested.
  if [[ "$1" == data ]]; then
    nproc="${NPROC_PER_NODE:-1}"
  else
    nproc="${NPROC_PER_NODE:-$((gpus > 0 ? gpus : 1))}"
  fi
  if [[ "$1" == distributed && "$DRY_RUN" == 1 && -z "${NPROC_PER_NODE:-}" && "$gpus" -eq 0 ]]; then
    note "dry run: NPROC_PER_NODE is not set, so the target's visible GPUs decide; shown for 1"
  fi
  nnodes="${NNODES:-1}"
  is_positive_int "$nproc" || die "NPROC_PER_NODE must be a positive integer, got '$nproc'"
  is_positive_int "$nnodes" || die "NNODES must be a positive integer, got '$nnodes'"
  if [[ "$nnodes" != 1 ]]; then
    [[ -n "${NODE_RANK:-}" ]] || die "NNODES=$nnodes: set NODE_RANK (0..$((nnodes - 1))) on each node"
    [[ -n "${MASTER_ADDR:-}" ]] || die "NNODES=$nnodes: set MASTER_ADDR to the address of node 0"
    [[ "$NODE_RANK" =~ ^[0-9]+$ && "$NODE_RANK" -lt "$nnodes" ]] || die "NODE_RANK must be 0..$((nnodes - 1)), got '$NODE_RANK'"
    export NODE_RANK MASTER_ADDR MASTER_PORT="${MASTER_PORT:-29500}"
  fi
  if ((gpus > 0)) && ((nproc > gpus)); then
    die "NPROC_PER_NODE=$nproc but only $gpus GPU(s) are visible"
  fi
  if [[ "$nproc" == 1 && "$nnodes" == 1 ]]; then
    unset NPROC_PER_NODE NNODES   # one process: no torchrun
  else
    export NPROC_PER_NODE="$nproc" NNODES="$nnodes"
  fi
}

# The flags every LoRA training run shares, swift sft and swift rlhf alike (one place for the
# process count, knob checks, model, data length, batch arithmetic, dtype, DeepSpeed, QLoRA and
# reporting). $1 = single | distributed (see processes); $2 = model (MODEL alone: SFT) | adapter
# (ADAPTER on its base: post-training); $3 = the output folder. Fills train_flags; sets nproc, nnodes.
training_flags() {
  [[ -n "$KNOBS_APPLIED" ]] || die "the launcher must call init_launcher before training"
  local output_dir="$3"
  processes "$1"
  check_knobs LORA_RANK LORA_ALPHA LORA_DROPOUT EPOCHS LEARNING_RATE WARMUP_RATIO GLOBAL_BATCH MICRO_BATCH MAX_LENGTH \
    SAVE_STEPS EVAL_STEPS LOGGING_STEPS SAVE_TOTAL_LIMIT SEED NUM_WORKERS \
    FREEZE_VIT FREEZE_ALIGNER GRAD_CHECKPOINTING
  [[ "${RESOLVED_AS:-}" == "$2" ]] || resolve_choice "$2"   # a launcher may have resolved it already
  apply_embedded_defaults   # the launcher's own values, checked when it was written
  require_data "$TRAIN_FILE" "training data"
  # Several views per sample cost several image budgets: size MAX_LENGTH from the data (when it is here).
  if [[ -e "$TRAIN_FILE" || "$DRY_RUN" != 1 ]]; then
    MAX_LENGTH="$(medswift_python -m medswift.data.pipeline.sample_length "$TRAIN_FILE" --image_tokens "$IMAGE_MAX_TOKEN_NUM" \
      --max_length "$MAX_LENGTH")" || exit 2
  elif [[ "$MAX_LENGTH" == auto ]]; then
    note "dry run: MAX_LENGTH=auto is sized from the data; the launcher sizes it on the target machine"
  fi
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
  case "$REPORT_TO" in
    tensorboard | none) ;;
    wandb | swanlab)
      medswift_python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)' "$REPORT_TO" \
        || die "REPORT_TO=$REPORT_TO but the $REPORT_TO package is not installed in $PYTHON_BIN (pip install $REPORT_TO, or REPORT_TO=tensorboard)" ;;
    *) die "REPORT_TO must be tensorboard, wandb, swanlab or none, got '$REPORT_TO'" ;;
  esac
  resolve_dtype
  local ds_args=()
  case "$DEEPSPEED" in
    none | "") ;;
    zero2 | zero3 | zero2_offload | zero3_offload)
      if [[ "$(target_gpus)" -eq 0 ]]; then
        note "DEEPSPEED=$DEEPSPEED needs CUDA; training without DeepSpeed on CPU"
      else
        ds_args=(--deepspeed "$DEEPSPEED")
      fi
      ;;
    *) die "DEEPSPEED must be none, zero2, zero3, zero2_offload or zero3_offload, got '$DEEPSPEED'" ;;
  esac

  local type_args=()
  [[ -n "$MODEL_TYPE" ]] && type_args=(--model_type "$MODEL_TYPE")

  # shellcheck disable=SC2034  # read by the caller
  train_flags=(--model "$MODEL" "${type_args[@]}" "${val_args[@]}"
    --tuner_type lora
    --freeze_vit "$FREEZE_VIT" --freeze_aligner "$FREEZE_ALIGNER"
    --torch_dtype "$DTYPE"
    --num_train_epochs "$EPOCHS"
    --per_device_train_batch_size "$MICRO_BATCH" --per_device_eval_batch_size "$MICRO_BATCH"
    --gradient_accumulation_steps "$accum"
    --learning_rate "$LEARNING_RATE" --lr_scheduler_type "$LR_SCHEDULER" --warmup_ratio "$WARMUP_RATIO"
    --max_length "$MAX_LENGTH" --gradient_checkpointing "$GRAD_CHECKPOINTING"
    --save_steps "$SAVE_STEPS" --save_total_limit "$SAVE_TOTAL_LIMIT" --logging_steps "$LOGGING_STEPS"
    --dataloader_num_workers "$NUM_WORKERS" --dataset_num_proc "$NUM_WORKERS"
    --seed "$SEED" --check_model false --report_to "$REPORT_TO"
    --model_kwargs "{\"IMAGE_MAX_TOKEN_NUM\": $IMAGE_MAX_TOKEN_NUM}"
    --output_dir "$output_dir"
    "${ds_args[@]}" "${quant_args[@]}")
}

# swift sft with LoRA; $1 = single | distributed (see processes); the rest passes through.
# Afterwards every checkpoint of the run gets a model card.
run_sft() {
  declare -F after_run >/dev/null || after_run() { write_run_cards; }
  local nproc nnodes train_flags
  training_flags "$1" model "$OUTPUT_DIR"
  shift
  run_or_print "$SWIFT_BIN" sft --dataset "$TRAIN_FILE" "${train_flags[@]}" \
    --lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA" --lora_dropout "$LORA_DROPOUT" \
    --target_modules "$TARGET_MODULES" "$@"
}

# The rewards of a post-training run (GRPO's, and DPO's pair scoring): REWARD_FUNCS with
# REWARD_WEIGHTS, the plugin when its file exists. The names, the weights and the rewards' own knobs
# (MEDSWIFT_REWARD_UNCERTAIN, MEDSWIFT_REWARD_LENGTH_BAND) are checked in one line before any model
# loads, dry run included (medswift.posttrain.datasets check_rewards). Fills reward_names, reward_weights, plugin_args.
resolve_rewards() {
  read -r -a reward_names <<<"${REWARD_FUNCS//,/ }"
  # shellcheck disable=SC2034  # read by the launcher
  read -r -a reward_weights <<<"${REWARD_WEIGHTS//,/ }"
  plugin_args=()
  [[ -f "$REWARD_PLUGIN" ]] && plugin_args=(--external_plugins "$REWARD_PLUGIN")
  ((${#reward_names[@]})) || die "REWARD_FUNCS is empty: name at least one reward"
  medswift_python -m medswift.posttrain.datasets check_rewards "${reward_names[@]}" --weights "$REWARD_WEIGHTS" \
    ${plugin_args[1]:+--plugin "${plugin_args[1]}"} || exit 2
  # The reward plugin imports the medswift library of this checkout, in ms-swift's processes too.
  export PYTHONPATH="$ROOT/scripts:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
}

# Training health for swift rlhf: the medswift_health callback (scripts/swift_plugins/medswift_health.py)
# stops the run at a NaN/inf loss, grad_norm, reward or KL unless ALLOW_NONFINITE=1. ms-swift takes
# one --external_plugins list (a second flag would replace the first), so the plugin files of the run
# come in as arguments. Fills plugin_args (the list, with the health plugin) and health_args.
health_flags() {
  local files=("$@" "$ROOT/scripts/swift_plugins/medswift_health.py")
  [[ "$ALLOW_NONFINITE" == 0 || "$ALLOW_NONFINITE" == 1 ]] || die "ALLOW_NONFINITE must be 0 or 1, got '$ALLOW_NONFINITE'"
  export MEDSWIFT_ALLOW_NONFINITE="$ALLOW_NONFINITE"
  # shellcheck disable=SC2034  # read by the launcher
  plugin_args=(--external_plugins "${files[@]}")
  # shellcheck disable=SC2034
  health_args=(--callbacks medswift_health)
  export PYTHONPATH="$ROOT/scripts:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
}

# After a post-training run: model cards, then one error line (exit 2) when the health callback
# stopped it, a warning when it went on through non-finite values (ALLOW_NONFINITE=1).
finish_rl_run() {
  local run_dir
  write_run_cards "$RL_OUTPUT_DIR"
  run_dir="$(find "$RL_OUTPUT_DIR" -maxdepth 1 -type d -name 'v*-*' -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-)"
  [[ -n "$run_dir" ]] || return 0
  medswift_python -m medswift.posttrain.training_health "$run_dir" >/dev/null || exit 2
}
