"""Percentile bootstrap over records (studies or images), vectorised with numpy.

Every headline metric is a function of *sums* of per-record quantities, so one resample is a
vector of multiplicities (how often each record was drawn) and its sums are one matrix
product: ``counts (B x n) @ per_record (n x K)``. The records are resampled once for all
metrics of a group, in blocks of resamples sized so that the count matrix stays around
32 MB whatever the number of rows.

* BLEU-1..4: per record, the clipped n-gram matches, candidate n-gram totals, hypothesis
  length and effective reference length as pycocoevalcap's ``BleuScorer`` computes them
  (``closest`` reference length), summed, then pycocoevalcap's corpus formula
  (``bleu_from_stats``; test_report_card_ci.py checks it equals ``Bleu(4)`` on the full set).
* ROUGE-L and CIDEr: pycocoevalcap's corpus score is the mean of per-record scores, so the
  resample mean of those scores (CIDEr's document frequencies stay those of the full set).
* finding F1: per-record true positives, false positives and false negatives per finding.
* METEOR: per-record METEOR statistics summed (``text_metrics.meteor_additive``) and scored
  by the METEOR jar itself (``MeteorJar.corpus_scores``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# pycocoevalcap's BleuScorer constants: "so that if guess is 0 still return 0" and no 0/0.
_TINY, _SMALL = 1e-15, 1e-9
BLEU_N = 4
COUNT_MATRIX_BYTES = 32 * 2 ** 20


def bleu_stats(comps: list[dict]) -> np.ndarray:
    """(n, 2*N+2) rows ``correct_1..N, guess_1..N, testlen, reflen`` from BleuScorer.ctest.

    ``reflen`` follows pycocoevalcap's "closest" rule: the reference length nearest the
    hypothesis length, the shorter one on a tie."""
    out = np.empty((len(comps), 2 * BLEU_N + 2), dtype=np.float64)
    for i, c in enumerate(comps):
        refs = c["reflen"] if isinstance(c["reflen"], list) else [c["reflen"]]
        out[i, :BLEU_N] = c["correct"]
        out[i, BLEU_N:2 * BLEU_N] = c["guess"]
        out[i, 2 * BLEU_N] = c["testlen"]
        out[i, 2 * BLEU_N + 1] = min((abs(r - c["testlen"]), r) for r in refs)[1]
    return out


def bleu_from_stats(sums: np.ndarray) -> np.ndarray:
    """Corpus BLEU-1..N from summed statistics, for a (K,) vector or a (B, K) matrix of sums.

    The same arithmetic, in the same order, as BleuScorer.compute_score: the running
    product of (correct + tiny) / (guess + small), its k-th root, and the brevity penalty
    exp(1 - 1/ratio) when the hypothesis is shorter than the reference."""
    sums = np.atleast_2d(np.asarray(sums, dtype=np.float64))
    correct, guess = sums[:, :BLEU_N], sums[:, BLEU_N:2 * BLEU_N]
    testlen, reflen = sums[:, 2 * BLEU_N], sums[:, 2 * BLEU_N + 1]
    running = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=1)
    bleus = running ** (1.0 / np.arange(1, BLEU_N + 1))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1.0)), 1.0)
    return bleus * penalty[:, None]


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(micro F1, macro F1) per row of (B, F) summed counts. A finding with no reference and no
    predicted positive is undefined and left out of the macro mean (NaN when none is defined)."""
    micro_den = 2 * tp.sum(1) + fp.sum(1) + fn.sum(1)
    micro = np.divide(2 * tp.sum(1), micro_den, out=np.zeros(len(tp)), where=micro_den > 0)
    den = 2 * tp + fp + fn
    per = np.divide(2 * tp, den, out=np.full(tp.shape, np.nan), where=den > 0)
    defined = den > 0
    macro = np.divide(np.nansum(per, 1), defined.sum(1), out=np.full(len(tp), np.nan), where=defined.any(1))
    return micro, macro


def resample_sums(per_record: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, K) sums of ``per_record`` (n, K) over ``n_boot`` resamples of its rows with
    replacement. Seeded and deterministic for a given (n, n_boot, seed)."""
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    per_record = np.asarray(per_record, dtype=np.float64)
    n = len(per_record)
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, COUNT_MATRIX_BYTES // (8 * max(n, 1))))
    out = np.empty((n_boot, per_record.shape[1]))
    # One BLAS thread: OpenBLAS's threads spin on a busy 2-core machine, and one product of the
    # 100,000-row findings counts took 4.7 s with two threads against 0.03 s with one.
    with threadpool_limits(1, user_api="blas"):
        for start in range(0, n_boot, block):
            b = min(block, n_boot - start)
            drawn = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
            counts = np.bincount(drawn.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
            out[start:start + b] = counts @ per_record
    return out


def percentile_interval(values: np.ndarray) -> list[float | None]:
    """The 2.5th and 97.5th percentiles, ignoring undefined (NaN) resamples."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return [None, None]
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def intervals(per_record: dict[str, np.ndarray], statistics: dict[str, tuple[list[str], Callable]],
              n_boot: int, seed: int) -> dict[str, list[float | None]]:
    """95% intervals of named statistics of one group of records, from a single resampling.

    ``per_record`` maps block names to (n, k) arrays (all with the same n records);
    ``statistics`` maps a block name to (output names, function of the block's (B, k) sums
    and n -> (B, len(names)) values)."""
    names = list(per_record)
    widths = [np.atleast_2d(per_record[k].T).T.shape[1] for k in names]
    matrix = np.hstack([np.asarray(per_record[k], dtype=np.float64).reshape(-1, w) for k, w in zip(names, widths)])
    n = len(matrix)
    sums = resample_sums(matrix, n_boot, seed)
    out, col = {}, 0
    for name, width in zip(names, widths):
        block = sums[:, col:col + width]
        col += width
        outputs, fn = statistics[name]
        values = np.asarray(fn(block, n), dtype=np.float64).reshape(n_boot, len(outputs))
        for j, output in enumerate(outputs):
            out[output] = percentile_interval(values[:, j])
    return out


# --------------------------------------------------------------------------- paired significance
def swapped_sums(first: np.ndarray, second: np.ndarray, n_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate randomisation (Riezler & Maxwell 2005; RadEval's and SacreBLEU's paired test):
    in each of ``n_perm`` trials every row's two values (``first``, ``second``: (n, K) per-row
    quantities of two systems on the same rows) are exchanged with probability 1/2. Returns the
    (n_perm, K) sums of each side per trial. Seeded; blocks sized like ``resample_sums``."""
    from threadpoolctl import threadpool_limits

    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    n = len(first)
    rng = np.random.default_rng(seed)
    moved = second - first  # exchanging row i moves its difference from one side to the other
    base, total = first.sum(0), first.sum(0) + second.sum(0)
    out = np.empty((n_perm, first.shape[1]))
    block = max(1, min(n_perm, COUNT_MATRIX_BYTES // (8 * max(n, 1))))
    with threadpool_limits(1, user_api="blas"):
        for start in range(0, n_perm, block):
            b = min(block, n_perm - start)
            out[start:start + b] = base + rng.integers(0, 2, size=(b, n)).astype(np.float64) @ moved
    return out, total - out


def randomisation_p(observed: float, permuted: np.ndarray, one_sided: bool = False) -> float | None:
    """The achieved significance level of ``observed`` against its randomised values:
    (1 + trials at least as extreme) / (1 + trials), two-sided on the absolute value unless
    ``one_sided`` (then "at least as large"). None when nothing is defined."""
    permuted = np.asarray(permuted, dtype=np.float64)
    permuted = permuted[np.isfinite(permuted)]
    if observed is None or not np.isfinite(observed) or not len(permuted):
        return None
    tol = 1e-12  # ties count as extreme, whatever the float rounding of the two sums
    extreme = permuted >= observed - tol if one_sided else np.abs(permuted) >= abs(observed) - tol
    return float((1 + extreme.sum()) / (1 + len(permuted)))
