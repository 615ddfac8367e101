#!/usr/bin/env bash
# One SLURM task per node: map SLURM's variables to the launcher's and run it.
# Called by tools/slurm/finetune_qwen3vl_lora.sbatch (and evaluate_checkpoint.sbatch) through srun;
# MASTER_ADDR comes from there. NODE_LAUNCHER: what each node runs (default the multi-GPU
# training launcher; tools/evaluate_checkpoint.sh for data-parallel inference).
#   DRY_RUN=1 SLURM_NNODES=2 SLURM_NODEID=1 MASTER_ADDR=gpu-01 bash tools/slurm/slurm_node.sh
# For research only, not for diagnosis.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
launcher="${NODE_LAUNCHER:-$here/../swift/finetune_qwen3vl_lora_mp.sh}"
die() { echo "error: $*" >&2; exit 2; }
[[ -f "$launcher" ]] || die "NODE_LAUNCHER not found: $launcher"
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then  # this header, then the launcher's own usage
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "${BASH_SOURCE[0]}"
  echo
  exec bash "$launcher" --help
fi
# ZeRO-3 on a cluster by default (the batch script's setting, so a dry run here shows what the job runs).
export DEEPSPEED="${DEEPSPEED:-zero3}"

[[ -n "${SLURM_NNODES:-}" ]] || die "SLURM_NNODES is not set: run this through tools/slurm/finetune_qwen3vl_lora.sbatch"
[[ -n "${SLURM_NODEID:-}" ]] || die "SLURM_NODEID is not set: run this through srun"
[[ -n "${MASTER_ADDR:-}" ]] || die "MASTER_ADDR is not set (the sbatch script sets it to the first node)"
export NNODES="$SLURM_NNODES"
export NODE_RANK="$SLURM_NODEID"
export MASTER_PORT="${MASTER_PORT:-29500}"
# GPUs on this node as SLURM granted them; the launcher counts visible GPUs when unset.
if [[ -n "${SLURM_GPUS_ON_NODE:-}" && -z "${NPROC_PER_NODE:-}" ]]; then
  export NPROC_PER_NODE="$SLURM_GPUS_ON_NODE"
fi
exec bash "$launcher" "$@"
