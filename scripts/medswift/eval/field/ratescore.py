"""RaTEScore (Zhao et al. 2024) through the ``ratescore`` package (0.6.0, its ``RaTEScore`` class, unchanged):
RaTE-NER-Deberta tags the entities of each sentence (abnormality, non-abnormality, disease, non-disease,
anatomy), BioLORD-2023-C embeds each entity, and each entity of one report is matched to its most similar
entity of the other; the cosines, weighted by the pair of entity types (the package's DEFAULT_MATRIX_LONG)
and penalised when a negated type meets its positive (neg_weight), give a precision and a recall whose F1
is the report's score. A report with no entity scores 0.5 (the package's rule).

What is not the package's own code, and why:

* **medspacy.** The package imports ``medspacy`` at import time and splits sentences with
  ``medspacy.load(medspacy_enable=["medspacy_pyrush", "medspacy_context"])``. No medspacy release installs
  on this stack: every one caps spaCy below 3.8 on Python 3.11 (1.3.x: ``spacy<3.8``; 1.2.0 and before:
  ``<3.6``), and spaCy 3.7 needs thinc 8.2, which needs numpy < 2 (numpy 2.4.6 here). What RaTEScore reads
  of that pipeline is ``doc.sents`` only, which ``load`` builds as ``spacy.blank("en")`` with the
  ``medspacy_pyrush`` component (medspacy's ConText sets no sentence boundary; with an explicit list
  medspacy's own tokenizer is not enabled). ``medspacy_pyrush`` is PyRuSH's own spaCy factory; PyRuSH
  1.0.8 is the last release whose metadata allows spaCy 3.8 on Python 3.11. ``package()`` imports the
  package with a stand-in ``medspacy`` module whose ``load`` returns that pipeline (``splitter()``) with
  PyRuSH's bundled rules. Measured on the 6,423 bundled OpenI reports: after the package's own filter
  (strip, drop pieces shorter than 3 characters) the sentences are identical to medspacy 1.3.1 + PyRuSH
  1.0.13 + spaCy 3.7.5's (docs/metrics.md).
* **A report with no sentence.** The package's ``run_ner`` keeps one entity list per report that yields a
  sentence, so an empty report (or one of under 3 characters) shifts every later pair, and alone it fails
  (the tagger gets an empty batch). Such pairs are scored here as the package scores a report without
  entities (0.5); the rest go to ``compute_score`` together.

Research only, not diagnosis.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

from medswift.core.errors import UsageError
from medswift.eval.field import weights

NO_ENTITY = 0.5  # RaTEScore.compute_score: "if the length of gt or pred is 0, the score is 0.5"
# Sentences per tagger pass (the package's batch_size; its default is 1). Padded batches give the tagger's labels
# of one-at-a-time passes (test/test_ratescore.py compares with the package at its default) much faster.
BATCH = 32


def splitter():
    """What RaTEScore uses of ``medspacy.load(medspacy_enable=["medspacy_pyrush", "medspacy_context"])``:
    spaCy's blank English pipeline with PyRuSH's ``medspacy_pyrush`` sentence splitter (module docstring)."""
    import PyRuSH  # noqa: F401  (registers the medspacy_pyrush factory)
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("medspacy_pyrush")
    return nlp


def package():
    """The ``RaTEScore`` package, imported with a stand-in ``medspacy`` whose ``load`` is ``splitter``."""
    if "RaTEScore.scorer" in sys.modules:
        return sys.modules["RaTEScore"]
    stand_in = types.ModuleType("medspacy")
    stand_in.load = lambda *args, **kwargs: splitter()
    saved = sys.modules.get("medspacy")
    sys.modules["medspacy"] = stand_in
    try:
        import RaTEScore
        import RaTEScore.scorer  # noqa: F401
    finally:
        if saved is None:
            sys.modules.pop("medspacy", None)
        else:
            sys.modules["medspacy"] = saved
    return RaTEScore


class RaTE:
    """Load once; ``scores(refs, preds)`` -> RaTEScore per pair (``RaTEScore.compute_score``)."""

    def __init__(self, ner: Path, encoder: Path, device: str | None = None):
        weights.go_offline()
        import torch

        use_gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        self.package = package()
        try:
            self.scorer = self.package.RaTEScore(bert_model=str(ner), eval_model=str(encoder), batch_size=BATCH,
                                                 use_gpu=use_gpu, affinity_matrix="long")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # no weights, a foreign folder, bad shapes
            raise UsageError(f"{ner} and {encoder} do not load as RaTEScore's models "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
        types_known = {kind for pair in self.scorer.affinity_matrix for kind in pair}
        labels = {str(label) for label in self.scorer.idx2label.values()}
        foreign = sorted(label for label in labels if label != "O" and label[2:] not in types_known)
        if foreign:
            raise UsageError(f"{ner}/config.json: labels {', '.join(foreign[:3])} are not RaTE-NER's "
                             f"(B-/I- of {', '.join(sorted(types_known - {'NEG', 'WEIGHT'}))}, and O)")

    def scores(self, refs: list[str], preds: list[str]) -> np.ndarray:
        split = self.package.utils.sentence_split
        out = np.full(len(refs), NO_ENTITY, dtype=np.float64)
        keep = [i for i, (ref, pred) in enumerate(zip(refs, preds)) if split([ref])[0] and split([pred])[0]]
        if keep:
            out[keep] = self.scorer.compute_score([preds[i] for i in keep], [refs[i] for i in keep])
        return out
