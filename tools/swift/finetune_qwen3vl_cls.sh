#!/usr/bin/env bash
# LoRA + classification head (ms-swift --task_type seq_cls) for ChestX-ray14 or HAM10000.
#   bash tools/swift/finetune_qwen3vl_cls.sh                                  # data/cxr14_swift
#   DATA_DIR=data/ham10000_swift bash tools/swift/finetune_qwen3vl_cls.sh
#   NPROC_PER_NODE=4 bash tools/swift/finetune_qwen3vl_cls.sh                 # several GPUs (and NNODES...)
# Reads problem type and label count from $DATA_DIR/labels.json (written by the converter).
# Multi-label: the loss is BCE weighted by the training split's positive-class weights
# (POS_WEIGHT=none for plain BCE). Knobs (env): see tools/swift/common.sh.
# For research only, not for diagnosis.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launcher_default DATA_DIR "$ROOT/data/cxr14_swift"
launcher_default SPLIT_PREFIX cls_                # cls_train.jsonl, cls_val.jsonl
launcher_default OUTPUT_DIR "$ROOT/results/cls"
launcher_knobs() {
  # ------------------------------------------------------------ classification head
  knob LABELS_FILE "$DATA_DIR/labels.json"        # written by the converter: problem type and labels
  knob POS_WEIGHT auto                            # auto (multi-label: BCE weighted by the training split) | none
}
init_launcher train "$@"

[[ -f "$LABELS_FILE" ]] || die "labels file not found: $LABELS_FILE (convert first: scripts/convert_chestxray14.py or convert_ham10000.py)"
read -r PROBLEM_TYPE NUM_LABELS < <("$PYTHON_BIN" -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["problem_type"], len(m["labels"]))' "$LABELS_FILE") \
  || die "cannot read problem_type and labels from $LABELS_FILE"

cls_args=(--task_type seq_cls --problem_type "$PROBLEM_TYPE" --num_labels "$NUM_LABELS")
case "$POS_WEIGHT" in
  auto)
    if [[ "$PROBLEM_TYPE" == multi_label_classification ]]; then
      export MEDSWIFT_LABELS_FILE="$LABELS_FILE"
      cls_args+=(--external_plugins "$ROOT/scripts/swift_plugins/weighted_bce.py" --loss_type medswift_weighted_bce)
    fi
    ;;
  none) ;;
  *) die "POS_WEIGHT must be auto or none, got '$POS_WEIGHT'" ;;
esac

run_sft distributed "${cls_args[@]}" "$@"
