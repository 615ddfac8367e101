"""ms-swift plugin: multi-label BCE with per-label positive-class weights.

Loaded by tools/swift/finetune_qwen3vl_cls.sh through ``--external_plugins`` and
selected with ``--loss_type medswift_weighted_bce``. The weights are the
``pos_weight`` list of the converter's labels.json (negatives / positives per label
on the training split), named by the MEDSWIFT_LABELS_FILE environment variable.
ms-swift's own seq_cls loss is an unweighted BCE; rare findings such as Hernia
(about 0.2% of ChestX-ray14) would otherwise be all but ignored.
"""
import json
import os

import torch
import torch.nn.functional as F
from swift.loss import loss_map
from swift.loss.base import BaseLoss


class WeightedBCELoss(BaseLoss):

    def __init__(self, args, trainer):
        super().__init__(args, trainer)
        path = os.environ.get("MEDSWIFT_LABELS_FILE")
        if not path:
            raise ValueError("MEDSWIFT_LABELS_FILE is not set: it must name the converter's labels.json")
        with open(path, encoding="utf-8") as fh:
            weights = json.load(fh).get("pos_weight")
        if not weights:
            raise ValueError(f"{path} has no pos_weight (is it a multi-label task?)")
        self.pos_weight = torch.tensor(weights, dtype=torch.float32)

    def __call__(self, outputs, labels, **kwargs):
        logits = outputs.logits.float()
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.device, torch.float32),
                                                  pos_weight=self.pos_weight.to(logits.device))


loss_map["medswift_weighted_bce"] = WeightedBCELoss
