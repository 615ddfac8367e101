"""RadCliQ-v1 and the 1/RadCliQ-v1 that ReXrank reports, from the published coefficients.

RadCliQ-v1 (Yu et al., "Evaluating progress in automatic chest X-ray radiology report generation",
Patterns 2023) is a fixed linear model over four per-report metrics, each first standardised:

    RadCliQ-v1(report) = sum_k coef_k * (x_k - mean_k) / scale_k + intercept
    x = (RadGraph entity-relation F1, BERTScore, SembScore, BLEU-2)

and the score of a set of reports is the mean over reports (lower is better); ReXrank ranks by its
inverse, 1/mean. The constants below are the fitted normaliser (scikit-learn ``StandardScaler``:
``mean_``, ``scale_``) and linear model (``coef_`` and ``intercept_``) that CXR-Report-Metric ships as
``CXRMetric/normalizer.pkl`` and ``radcliq-v1.pkl`` (https://github.com/rajpurkarlab/CXR-Report-Metric),
as RadEval copies them into ``radeval/metrics/RadCliQv1/radcliq.py`` (``CompositeMetric.__init__``,
https://github.com/jbdel/RadEval; read 2026-12-07). The components are those the model was fitted on, as
RadEval's CompositeMetric computes them: the RadGraph column is the mean of entity F1 and relation F1
(CXR-Report-Metric's ``radgraph_combined``, field/radgraph.py ``entity_relation_f1``), not the
"partial" RadGraph F1 reported beside it; BERTScore and SembScore as ReXrank computes them
(field/bertscore.py, field/chexbert.py); ReXrank's BLEU-2 (fast_bleu, field/__init__.py ``bleu2``).
RadEval annotates with the original RadGraph model (``model_type="radgraph"``); here the RadGraph
model is the one DIR holds (RadGraph-XL), so figures can differ from RadEval's by that model's choices.
Research only, not diagnosis.
"""
from __future__ import annotations

import numpy as np

COLUMNS = ("radgraph_combined", "bertscore", "semb", "bleu2_rexrank")  # the model's column order
# CXR-Report-Metric's normalizer.pkl and radcliq-v1.pkl, as RadEval's RadCliQv1/radcliq.py states them.
MEAN = np.array([0.53792312, 0.61757256, 0.76479421, 0.44738335])
SCALE = np.array([0.30282584, 0.22430938, 0.25394391, 0.29892717])
COEF = np.array([-3.77083683e-01, -3.70300100e-01, -2.52616218e-01, 4.31504841e-12])
INTERCEPT = 2.46655256e-10


def per_report(radgraph, bertscore, semb, bleu2) -> np.ndarray:
    """RadCliQ-v1 of each report (lower is better) from its four component scores."""
    x = np.column_stack([np.asarray(v, dtype=np.float64) for v in (radgraph, bertscore, semb, bleu2)])
    return (x - MEAN) / SCALE @ COEF + INTERCEPT


def inverse_of_mean(sums: np.ndarray, n) -> np.ndarray:
    """1/RadCliQ-v1 of a set of reports from the sum of their per-report values (the bootstrap's form);
    NaN where the mean is exactly 0."""
    sums = np.asarray(sums, dtype=np.float64)
    return np.divide(n, sums, out=np.full(sums.shape, np.nan), where=sums != 0)
