"""Post-training rewards from the field's scorers, when their weights are present.

Research only, not diagnosis. ``chexbert_f1``: per (completion, reference) pair, the F1 of their
CheXbert labels over the 14 observations in f1chexbert's "rrg" mapping (present and uncertain
positive), 2 x shared / (completion's + reference's positives); 1.0 when neither states a
positive label (CheXbert calls a normal study "No Finding", so a reference without any is rare).
The labeller is loaded once per run from ``MEDSWIFT_METRICS_DIR`` (or the Hugging Face cache)
and labels every batch of completions in one padded pass, each distinct text once (a GRPO group
shares its reference). Registered with ms-swift by scripts/swift_plugins/medswift_rewards.py::

    REWARD_FUNCS=chexbert_f1 MEDSWIFT_METRICS_DIR=DIR bash tools/swift/grpo_qwen3vl_lora.sh

``radgraph_f1``: per pair, RadGraph F1 at the "partial" level (radgraph 0.1.18's ``compute_reward``,
as ``F1RadGraph`` and the report card's RadGraph figure use it): 0 when either side is empty or has
no entity. RadGraph-XL is loaded once per run (medswift/eval/field/radgraph.py); each batch's distinct
texts (a GRPO group shares its reference) are annotated once, in one call of the package's annotator.

Speed: bench/bench_field_metrics.py (docs/metrics.md).
"""
from __future__ import annotations

import numpy as np

from medswift.eval import field

REWARD_NAMES = ("chexbert_f1", "radgraph_f1")


def pair_f1(completion_labels: np.ndarray, reference_labels: np.ndarray) -> np.ndarray:
    """Row-wise F1 of two (n, 14) 0/1 label matrices; 1.0 where both rows are empty."""
    shared = (completion_labels & reference_labels).sum(1)
    total = completion_labels.sum(1) + reference_labels.sum(1)
    return np.divide(2 * shared, total, out=np.ones(len(total)), where=total > 0)


class ChexbertF1:
    """Load CheXbert once; ``self(completions, references)`` -> one reward in [0, 1] per pair."""

    def __init__(self, metrics_dir: str | None = None, device: str | None = None):
        from medswift.eval.field.chexbert import CheXbert

        located = field.locate(["chexbert"], metrics_dir)
        self.labeller = CheXbert(located["root"], device=device)

    def __call__(self, completions: list[str], references: list[str]) -> list[float]:
        labels = self.labeller.labels([c or "" for c in completions] + [r or "" for r in references])
        n = len(completions)
        return pair_f1(labels[:n], labels[n:]).tolist()


class RadgraphF1:
    """Load RadGraph-XL once; ``self(completions, references)`` -> one reward in [0, 1] per pair,
    equal to ``F1RadGraph(reward_level="partial")``'s per-pair score."""

    def __init__(self, metrics_dir: str | None = None, device: str | None = None):
        from medswift.eval.field.radgraph import RadGraphF1

        located = field.locate(["radgraph"], metrics_dir)
        self.model = RadGraphF1(located["files"]["radgraph-xl"], located["root"], device=device)

    def __call__(self, completions: list[str], references: list[str]) -> list[float]:
        import torch
        from radgraph.rewards import compute_reward

        from medswift.eval.field.radgraph import LEVEL

        completions, references = [c or "" for c in completions], [r or "" for r in references]
        distinct = [t for t in dict.fromkeys(completions + references) if t]  # F1RadGraph: "" scores 0
        with torch.inference_mode():
            graphs = self.model.scorer.radgraph(distinct) if distinct else {}
        by_text = {text: graphs[str(i)] for i, text in enumerate(distinct)}
        return [float(compute_reward(by_text[c], by_text[r], LEVEL)) if c and r else 0.0
                for c, r in zip(completions, references)]
