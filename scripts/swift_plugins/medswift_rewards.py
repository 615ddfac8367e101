"""ms-swift plugin: the clinical rewards of medswift.posttrain.rewards as GRPO reward functions.

Research only, not diagnosis. Loaded with ``swift rlhf --rlhf_type grpo --external_plugins
scripts/swift_plugins/medswift_rewards.py --reward_funcs medswift_findings [medswift_format ...]
[--reward_weights ...]``. ms-swift calls each as ``ORM(args)(completions, solution=[...], **columns)``
and ``solution`` is the dataset column that holds the reference report (GRPO drops the assistant
turn). Registered names:

* ``medswift_findings``: clinical agreement with the reference in [0, 1]; 0 for every completion
  of a reference that states no observation (counted in a warning); uncertain mentions per
  MEDSWIFT_REWARD_UNCERTAIN (partial | positive | negative, default partial).
* ``medswift_format``: length within MEDSWIFT_REWARD_LENGTH_BAND ("lo,hi" ratios of the
  reference's length, default 0.5,2) and a finished last sentence.
* ``medswift_repetition``: share of distinct n-grams (1 = no repetition).
* ``medswift_think_format``: ``<think>reasoning</think>report`` for the Thinking variant.
* ``medswift_boxes``: for grounding data (scripts/convert_grounding.py), IoU-matched soft F1 of the
  completion's Qwen3-VL box JSON against the reference boxes, one-to-one (Hungarian) matching of
  same-label boxes as RadVLM-GRPO does; not box JSON scores 0, a correct ``[]`` scores 1.
* ``chexbert_f1``: F1 of the completion's and the reference's CheXbert labels (medswift.posttrain.field_rewards),
  from the weights in MEDSWIFT_METRICS_DIR (or the Hugging Face cache), loaded once per run.
* ``radgraph_f1``: RadGraph F1 ("partial" level, RadGraph-XL) of the completion against the reference
  (medswift.posttrain.field_rewards), from the same folder, loaded once per run.

Every reward follows one input contract (medswift.posttrain.reward_inputs.text_inputs): completions and
solutions are read as text (strings, TRL's chat messages, ms-swift's content parts); anything else
scores 0 with a counted warning, and a solution list of another length than the completions' is
refused with one error line.

ms-swift logs each reward under its class name, not its registered name: ``rewards/MedSwiftFindings/mean``
(and ``/std``), ``rewards/MedSwiftFormat/mean``, ``rewards/MedSwiftRepetition/mean``,
``rewards/MedSwiftThinkFormat/mean``, ``rewards/MedSwiftBoxes/mean`` in ``logging.jsonl``, and the
class names as columns of ``completions.jsonl`` (docs/post-training-recipe.md, "Log keys").

The logic lives in the library; this file only registers it.
"""
import importlib.util
import logging
import os
import sys

from swift.rewards import ORM, orms

# ms-swift imports this file by path and puts only its own folder on sys.path. The library is
# the medswift package one folder up (scripts/): put it first, so that the rewards are always
# this checkout's, whichever copy an installed package or PYTHONPATH would name.
_LIBRARY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if importlib.util.find_spec("medswift") is None or _LIBRARY not in sys.path:
    sys.path.insert(0, _LIBRARY)

from medswift.core.errors import UsageError  # noqa: E402
from medswift.posttrain import rewards  # noqa: E402
from medswift.posttrain.reward_inputs import text_inputs  # noqa: E402

logger = logging.getLogger("medswift.rewards")


def _references(name, completions, solution):
    if solution is None:  # text_inputs(needs_solution=True) says so first; kept for direct calls
        raise UsageError(f"{name} needs the reference in a 'solution' column of the dataset")
    return [s or "" for s in solution]


class MedSwiftFindings(ORM):

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self.uncertain = rewards.uncertain_policy()  # a wrong value stops here, before training
        self.unscorable = 0

    @text_inputs("medswift_findings", needs_solution=True)
    def __call__(self, completions, solution=None, **kwargs):
        refs = _references("medswift_findings", completions, solution)
        values = rewards.findings_reward_batch([c or "" for c in completions], refs, uncertain=self.uncertain)
        # The library says None for a reference that states no observation. Returned as None,
        # ms-swift logs the whole row (reference and completion text) when no other reward
        # scores it; 0 for the whole group gives the same zero advantage without the text.
        missing = sum(v is None for v in values)
        if missing:
            self.unscorable += missing
            logger.warning("medswift_findings: %d completions (%d so far) have a reference that states "
                           "no observation the labeller reads; scored 0", missing, self.unscorable)
        return [0.0 if v is None else v for v in values]


class MedSwiftFormat(ORM):

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self.band = rewards.length_band()

    @text_inputs("medswift_format")
    def __call__(self, completions, solution=None, **kwargs):
        refs = solution if solution is not None else [None] * len(completions)
        return [rewards.format_reward(c or "", r, band=self.band) for c, r in zip(completions, refs)]


class MedSwiftRepetition(ORM):

    @text_inputs("medswift_repetition")
    def __call__(self, completions, solution=None, **kwargs):
        refs = solution if solution is not None else [None] * len(completions)
        return [rewards.repetition_reward(c or "", r) for c, r in zip(completions, refs)]


class MedSwiftThinkFormat(ORM):

    @text_inputs("medswift_think_format")
    def __call__(self, completions, **kwargs):
        return [rewards.think_format_reward(c or "") for c in completions]


class MedSwiftBoxes(ORM):

    @text_inputs("medswift_boxes", needs_solution=True)
    def __call__(self, completions, solution=None, **kwargs):
        refs = _references("medswift_boxes", completions, solution)
        return [rewards.box_reward(c or "", r) for c, r in zip(completions, refs)]


class ChexbertF1(ORM):

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        from medswift.posttrain.field_rewards import ChexbertF1 as Scorer

        self.scorer = Scorer()  # a missing chexbert.pth stops here, before training, in one line

    @text_inputs("chexbert_f1", needs_solution=True)
    def __call__(self, completions, solution=None, **kwargs):
        refs = _references("chexbert_f1", completions, solution)
        return self.scorer([c or "" for c in completions], refs)


class RadgraphF1(ORM):

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        from medswift.posttrain.field_rewards import RadgraphF1 as Scorer

        self.scorer = Scorer()  # a missing radgraph-xl stops here, before training, in one line

    @text_inputs("radgraph_f1", needs_solution=True)
    def __call__(self, completions, solution=None, **kwargs):
        refs = _references("radgraph_f1", completions, solution)
        return self.scorer([c or "" for c in completions], refs)


orms["medswift_findings"] = MedSwiftFindings
orms["medswift_format"] = MedSwiftFormat
orms["medswift_repetition"] = MedSwiftRepetition
orms["medswift_think_format"] = MedSwiftThinkFormat
orms["medswift_boxes"] = MedSwiftBoxes
orms["chexbert_f1"] = ChexbertF1
orms["radgraph_f1"] = RadgraphF1
