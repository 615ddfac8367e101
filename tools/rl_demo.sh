#!/usr/bin/env bash
# Proof that the toolkit's RL path optimises its reward, on the CPU, in one command:
#   bash tools/rl_demo.sh
#   RL_DEMO_DIR=/tmp/rl_demo DEMO_SEED=1 bash tools/rl_demo.sh
# 1. a task whose answer is visible in the image, built deterministically at run time
#    (python -m medswift.data.converters.synthetic): the bundled X-rays with or without a synthetic
#    effusion; the answer "There is pleural effusion." or "There is no pleural effusion.";
#    held-out images never trained on (new crops and opacities; DEMO_HELD_OUT_BASES: of unseen X-rays); chance 50%;
# 2. a short SFT with the toolkit's launcher (tools/swift/finetune_qwen3vl_lora.sh);
# 3. GRPO from it with the toolkit's clinical reward through its plugin
#    (tools/swift/grpo_qwen3vl_lora.sh, REWARD_FUNCS=medswift_findings: 1 for the answer that
#    states what the image shows, 0 for the other one);
# 4. both scored on the held-out images (tools/evaluate_checkpoint.sh);
# 5. scripts/compare_checkpoints.py, then $RL_DEMO_DIR/compare/compare.json (verdict, reward
#    {sft, rl, delta, ci95, p}, reads_image, held-out accuracy, timings) and rl_demo.png (curves).
# Everything lies under RL_DEMO_DIR (default results/rl_demo); an earlier run there is replaced,
# a folder holding anything else is refused.
# Knobs (environment; every value reaches the launchers as their own knobs or flags):
#   RL_DEMO_DIR, DEMO_TRAIN (1000 training images: GRPO never sees one twice), DEMO_TEST (400 held-out),
#   DEMO_IMAGE_SIZE (64 px: 4 image tokens), DEMO_SEED (0), DEMO_IMAGE_TOKENS (16: image budget),
#   DEMO_HELD_OUT_BASES (0: held-out images are new images of the 8 bundled X-rays; 2: of 2 X-rays
#   that training never shows, a test of generalising from 6 X-rays to others),
#   SFT_STEPS (30), SFT_LR (1e-3), GRPO_STEPS (40), GRPO_LR (1e-3), GRPO_PROMPTS (8 prompts a step),
#   GRPO_WARMUP (0.25: share of GRPO steps the rate ramps up over), NUM_GENERATIONS (4),
#   TEMPERATURE (1.0), BETA (0.04: KL to the SFT checkpoint), LORA_RANK (32),
#   MIN_STUDIES (20: the comparison's floor). docs/rl-demo.md says why each value, with measured runs.
# Synthetic images for a software demonstration. For research only, not for diagnosis.
set -euo pipefail
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then  # its header comment is its usage
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "${BASH_SOURCE[0]}"
  exit 0
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON_BIN:-$([[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python3)}"
export PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"

RL_DEMO_DIR="${RL_DEMO_DIR:-$ROOT/results/rl_demo}"
DEMO_TRAIN="${DEMO_TRAIN:-1000}" DEMO_TEST="${DEMO_TEST:-400}" DEMO_IMAGE_SIZE="${DEMO_IMAGE_SIZE:-64}"
DEMO_SEED="${DEMO_SEED:-0}" DEMO_IMAGE_TOKENS="${DEMO_IMAGE_TOKENS:-16}" DEMO_HELD_OUT_BASES="${DEMO_HELD_OUT_BASES:-0}"
SFT_STEPS="${SFT_STEPS:-30}" SFT_LR="${SFT_LR:-1e-3}"
GRPO_STEPS="${GRPO_STEPS:-40}" GRPO_LR="${GRPO_LR:-1e-3}" GRPO_PROMPTS="${GRPO_PROMPTS:-8}"
NUM_GENERATIONS="${NUM_GENERATIONS:-4}" TEMPERATURE="${TEMPERATURE:-1.0}" BETA="${BETA:-0.04}"
GRPO_WARMUP="${GRPO_WARMUP:-0.25}"
LORA_RANK="${LORA_RANK:-32}" MIN_STUDIES="${MIN_STUDIES:-20}"
for knob in DEMO_TRAIN DEMO_TEST DEMO_IMAGE_SIZE DEMO_IMAGE_TOKENS SFT_STEPS GRPO_STEPS GRPO_PROMPTS LORA_RANK; do
  [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] || { echo "error: $knob must be a positive integer, got '${!knob}'" >&2; exit 2; }
done
[[ "$DEMO_SEED" =~ ^[0-9]+$ && "$MIN_STUDIES" =~ ^[0-9]+$ && "$DEMO_HELD_OUT_BASES" =~ ^[0-9]+$ ]] \
  || { echo "error: DEMO_SEED, DEMO_HELD_OUT_BASES and MIN_STUDIES must be non-negative integers" >&2; exit 2; }
[[ "$GRPO_WARMUP" =~ ^(0|0?\.[0-9]+)$ ]] \
  || { echo "error: GRPO_WARMUP must be a share of the GRPO steps from 0 to below 1, got '$GRPO_WARMUP'" >&2; exit 2; }

# The embedded default only (a demonstration on the CPU); a model of your own goes through the launchers.
unset MODEL ADAPTER NPROC_PER_NODE NNODES
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-}"
# What both launchers share: the task, the image budget, LoRA on the vision tower and aligner too (its
# random vision tower must learn to see an opacity), no LoRA dropout (quickstart.sh says why), no
# validation pass, one data worker.
export DATA_DIR="$RL_DEMO_DIR/data" IMAGE_MAX_TOKEN_NUM="$DEMO_IMAGE_TOKENS" VAL_FILE=none \
  FREEZE_VIT=false FREEZE_ALIGNER=false LORA_RANK LORA_ALPHA="$((2 * LORA_RANK))" LORA_DROPOUT=0 LR_SCHEDULER=constant \
  WARMUP_RATIO=0 GRAD_CHECKPOINTING=false NUM_WORKERS=1 REPORT_TO=none LOGGING_STEPS=1 SEED="$DEMO_SEED"
step() { echo; echo "==> [rl_demo] $*"; }
timings=()
timed() {  # timed NAME COMMAND...: run it, record its wall seconds
  local name="$1" start=$SECONDS
  shift
  "$@"
  timings+=("$name=$((SECONDS - start))")
}
newest() { "$PY" -m medswift.core.models --output_dir "$1" | sed -n 's/.*ADAPTER=\([^ ]*\).*/\1/p'; }

# Replace an earlier run, never a folder of anything else a mistyped RL_DEMO_DIR might name.
if [[ -e "$RL_DEMO_DIR" && -n "$(ls -A "$RL_DEMO_DIR" 2>/dev/null)" && ! -f "$RL_DEMO_DIR/data/summary.json" ]]; then
  echo "error: RL_DEMO_DIR=$RL_DEMO_DIR holds files that are not an earlier demo run: name an empty or new folder" >&2
  exit 2
fi
rm -rf "$RL_DEMO_DIR"
mkdir -p "$RL_DEMO_DIR"
step "1/5 task: $DEMO_TRAIN training and $DEMO_TEST held-out images, ${DEMO_IMAGE_SIZE}px -> $DATA_DIR"
timed data "$PY" -m medswift.data.converters.synthetic --output_dir "$DATA_DIR" --train "$DEMO_TRAIN" --test "$DEMO_TEST" \
  --image_size "$DEMO_IMAGE_SIZE" --seed "$DEMO_SEED" --held_out_bases "$DEMO_HELD_OUT_BASES"

step "2/5 SFT: $SFT_STEPS steps of 8 images, learning rate $SFT_LR (tools/swift/finetune_qwen3vl_lora.sh)"
timed sft env OUTPUT_DIR="$RL_DEMO_DIR/sft" LEARNING_RATE="$SFT_LR" EPOCHS=100 GLOBAL_BATCH=8 MICRO_BATCH=8 \
  SAVE_STEPS="$SFT_STEPS" bash "$ROOT/tools/swift/finetune_qwen3vl_lora.sh" --max_steps "$SFT_STEPS"
SFT_CKPT="$(newest "$RL_DEMO_DIR/sft")"

step "3/5 GRPO: $GRPO_STEPS steps of $GRPO_PROMPTS prompts x $NUM_GENERATIONS answers, reward medswift_findings (tools/swift/grpo_qwen3vl_lora.sh)"
# GRPO ramps its rate up: Adam's first steps move every weight by about the full rate whatever the
# gradient, and from a fresh optimiser that knocked one seed off the answer format within 4 steps
timed grpo env ADAPTER="$SFT_CKPT" RL_OUTPUT_DIR="$RL_DEMO_DIR/grpo" LEARNING_RATE="$GRPO_LR" EPOCHS=100 \
  LR_SCHEDULER=constant_with_warmup WARMUP_RATIO="$GRPO_WARMUP" \
  GLOBAL_BATCH="$((GRPO_PROMPTS * NUM_GENERATIONS))" MICRO_BATCH="$((GRPO_PROMPTS * NUM_GENERATIONS))" \
  NUM_GENERATIONS="$NUM_GENERATIONS" TEMPERATURE="$TEMPERATURE" BETA="$BETA" MAX_COMPLETION_LENGTH=16 \
  REWARD_FUNCS=medswift_findings REWARD_WEIGHTS=1 USE_VLLM=false SAVE_STEPS="$GRPO_STEPS" \
  bash "$ROOT/tools/swift/grpo_qwen3vl_lora.sh" --max_steps "$GRPO_STEPS"
RL_CKPT="$(newest "$RL_DEMO_DIR/grpo")"

step "4/5 both checkpoints on the $DEMO_TEST held-out images, greedy (tools/evaluate_checkpoint.sh)"
for side in sft rl; do
  ckpt="$SFT_CKPT"
  [[ "$side" == rl ]] && ckpt="$RL_CKPT"
  timed "eval_$side" env ADAPTER="$ckpt" SPLIT=test EVAL_DIR="$RL_DEMO_DIR/eval_$side" MAX_NEW_TOKENS=16 \
    INFER_BATCH=40 TEMPERATURE=0 bash "$ROOT/tools/evaluate_checkpoint.sh" --quiet
done

step "5/5 comparison (scripts/compare_checkpoints.py)"
timed compare "$PY" "$ROOT/scripts/compare_checkpoints.py" --sft "$RL_DEMO_DIR/eval_sft" --rl "$RL_DEMO_DIR/eval_rl" \
  --output_dir "$RL_DEMO_DIR/compare" --reward_funcs medswift_findings --min_studies "$MIN_STUDIES"
# CPU seconds of every finished child (user + system), from the kernel's own count for this shell
read -r -a stat < "/proc/$$/stat" && cpu="$(( (stat[15] + stat[16]) / $(getconf CLK_TCK) ))" || cpu=""
"$PY" -m medswift.posttrain.rl_demo --dir "$RL_DEMO_DIR" --sft_checkpoint "$SFT_CKPT" --rl_checkpoint "$RL_CKPT" \
  --timings "${timings[*]}" --cpu_seconds "$cpu" \
  --recipe "sft_steps=$SFT_STEPS sft_lr=$SFT_LR grpo_steps=$GRPO_STEPS grpo_lr=$GRPO_LR grpo_warmup=$GRPO_WARMUP prompts_per_step=$GRPO_PROMPTS num_generations=$NUM_GENERATIONS temperature=$TEMPERATURE beta=$BETA lora_rank=$LORA_RANK image_tokens=$DEMO_IMAGE_TOKENS image_size=$DEMO_IMAGE_SIZE train=$DEMO_TRAIN test=$DEMO_TEST held_out_bases=$DEMO_HELD_OUT_BASES seed=$DEMO_SEED"
