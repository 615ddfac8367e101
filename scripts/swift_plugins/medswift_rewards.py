"""ms-swift GRPO reward plugin of MedSwift-VL: ``--external_plugins scripts/swift_plugins/medswift_rewards.py
--reward_funcs <name>``.

GRPO drops the assistant turn from the dataset, so each reward reads its reference from its own column
(``solution``, ms-swift's name for it; ``reference`` is accepted too). A reward of None is NaN to ms-swift:
the row has no usable reference. For research only, not for diagnosis.
"""
from swift.rewards import ORM, orms

from medswift.eval.boxes import box_reward


# =========================================================================== box reward (issue 19)
# orms["medswift_boxes"]: IoU-matched soft F1 between the completion's boxes and the reference's, one-to-one
# (Hungarian) matching of same-label boxes as RadVLM-GRPO does; the scoring lives in medswift.eval.boxes.
class MedswiftBoxes(ORM):
    """Soft F1 of Qwen3-VL box JSON against the ``solution`` column: precision and recall are the summed
    IoU of matched boxes over the predicted and reference box counts; an answer that is not box JSON
    scores 0; a correct "no finding" (both ``[]``) scores 1."""

    def __call__(self, completions, solution=None, reference=None, **kwargs) -> list:
        refs = solution if solution is not None else reference
        if refs is None:
            raise ValueError("medswift_boxes needs the reference boxes in a 'solution' column of the dataset")
        return [box_reward(completion, ref) for completion, ref in zip(completions, refs)]


orms["medswift_boxes"] = MedswiftBoxes
