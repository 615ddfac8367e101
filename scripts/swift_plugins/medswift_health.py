"""ms-swift plugin: the ``medswift_health`` trainer callback (research only, not diagnosis).

Loaded with ``swift rlhf ... --external_plugins scripts/swift_plugins/medswift_health.py
--callbacks medswift_health`` (the GRPO and DPO launchers pass both). ms-swift builds every name
in ``--callbacks`` from ``swift.callbacks.callbacks_map`` as ``Callback(args, trainer)``; this
file adds one entry. On every logged row it:

* stops the run at a NaN or infinite loss, grad_norm, reward or KL (medswift.posttrain.training_health;
  ``MEDSWIFT_ALLOW_NONFINITE=1`` flags it and goes on);
* keeps ms-swift's GRPO ``completions.jsonl`` to one block per step: the trainer's end-of-training
  summary row goes through the same ``log`` as a step's row and would append the last step's
  completions a second time, so logging completions is switched off for that row only.

The logic lives in the library; this file only registers it.
"""
import importlib.util
import os
import sys

from swift.callbacks import TrainerCallback, callbacks_map

# As medswift_rewards.py: ms-swift imports this file by path; the library is one folder up.
_LIBRARY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if importlib.util.find_spec("medswift") is None or _LIBRARY not in sys.path:
    sys.path.insert(0, _LIBRARY)

from medswift.posttrain import training_health  # noqa: E402

SUMMARY_KEY = "train_runtime"  # present only in the trainer's end-of-training row


class MedSwiftHealth(TrainerCallback):

    def __init__(self, args, trainer):
        super().__init__(args, trainer)
        training_health.allowed()  # a wrong MEDSWIFT_ALLOW_NONFINITE stops here, before training

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if SUMMARY_KEY in logs and hasattr(self.trainer, "log_completions"):
            self.trainer.log_completions = False  # the last step's completions are already written
        # Every rank sees the same gathered row and stops alike; rank 0 alone writes the report.
        if training_health.check_row(logs, state.global_step, args.output_dir, report=state.is_world_process_zero):
            control.should_training_stop = True
        return control


callbacks_map["medswift_health"] = MedSwiftHealth
