"""EER and minDCF, exact on the ROC and independent of trial order (ties are one ROC step)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxadapt.errors import VoxadaptError


@dataclass(frozen=True)
class Roc:
    thresholds: np.ndarray  # accept when score >= threshold; last entry +inf (reject everything)
    p_miss: np.ndarray
    p_fa: np.ndarray


def roc(scores: np.ndarray, labels: np.ndarray) -> Roc:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise VoxadaptError("scores and labels must be 1-d arrays of equal length")
    n_tar, n_non = int(labels.sum()), int((~labels).sum())
    if n_tar == 0 or n_non == 0:
        raise VoxadaptError(f"need both target and non-target trials (got {n_tar} and {n_non})")
    if not np.isfinite(scores).all():
        raise VoxadaptError("scores contain NaN or Inf")
    values, inverse = np.unique(scores, return_inverse=True)  # ascending; ties collapse to one value
    return ranked_roc(values, inverse, labels)


def ranked_roc(values: np.ndarray, inverse: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> Roc:
    """The ROC of trials whose scores are `values[inverse]`, each counted `weights` times (default
    once): a bootstrap reweights the trials of one sort instead of sorting every resample."""
    w = np.ones(len(labels)) if weights is None else weights
    tar_at = np.bincount(inverse, weights=w * labels, minlength=len(values))
    non_at = np.bincount(inverse, weights=w * ~labels, minlength=len(values))
    n_tar, n_non = tar_at.sum(), non_at.sum()
    # Threshold = each distinct score: misses are targets strictly below, false alarms non-targets at or above.
    p_miss = np.concatenate([[0.0], np.cumsum(tar_at)]) / n_tar
    p_fa = np.concatenate([[n_non], n_non - np.cumsum(non_at)]) / n_non
    thresholds = np.concatenate([values, [np.inf]])
    return Roc(thresholds, p_miss, p_fa)


def eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where P_miss = P_fa, interpolated linearly between the two ROC points around it."""
    return roc_eer(roc(scores, labels))


def roc_eer(r: Roc) -> tuple[float, float]:
    diff = r.p_miss - r.p_fa  # rises from -1 to +1 as the threshold grows
    i = int(np.searchsorted(diff, 0.0, side="left"))
    if diff[i] == 0.0:
        return float(r.p_miss[i]), float(r.thresholds[i])
    a, b = i - 1, i
    t = diff[a] / (diff[a] - diff[b])
    value = r.p_fa[a] + t * (r.p_fa[b] - r.p_fa[a])
    lo, hi = r.thresholds[a], r.thresholds[b] if np.isfinite(r.thresholds[b]) else r.thresholds[a]
    return float(value), float(lo + t * (hi - lo))


def min_dcf(scores: np.ndarray, labels: np.ndarray, p_target: float, c_miss: float = 1.0,
            c_fa: float = 1.0) -> tuple[float, float]:
    """(normalised minimum detection cost, its threshold)."""
    return roc_min_dcf(roc(scores, labels), p_target, c_miss, c_fa)


def roc_min_dcf(r: Roc, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[float, float]:
    cost = c_miss * p_target * r.p_miss + c_fa * (1 - p_target) * r.p_fa
    i = int(np.argmin(cost))
    return float(cost[i] / min(c_miss * p_target, c_fa * (1 - p_target))), float(r.thresholds[i])


def actual_dcf(llrs: np.ndarray, labels: np.ndarray, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised cost of Bayes decisions on calibrated log-likelihood ratios."""
    llrs, labels = np.asarray(llrs, dtype=np.float64), np.asarray(labels, dtype=bool)
    threshold = np.log(c_fa * (1 - p_target) / (c_miss * p_target))
    p_miss = np.mean(llrs[labels] < threshold)
    p_fa = np.mean(llrs[~labels] >= threshold)
    return float((c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa) / min(c_miss * p_target, c_fa * (1 - p_target)))


def cllr(llrs: np.ndarray, labels: np.ndarray) -> float:
    """Log-likelihood-ratio cost in bits (Brümmer): 0 for perfect LLRs, 1 for LLRs that say nothing
    (all 0); above 1, the LLRs mislead. Penalises miscalibration at every prior, not one threshold."""
    llrs, labels = np.asarray(llrs, dtype=np.float64), np.asarray(labels, dtype=bool)
    miss = np.logaddexp(0.0, -llrs[labels]).mean()
    false_alarm = np.logaddexp(0.0, llrs[~labels]).mean()
    return float((miss + false_alarm) / (2 * np.log(2)))
