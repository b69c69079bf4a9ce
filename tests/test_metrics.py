"""EER / minDCF against independent references, with ties and any trial order."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from voxadapt.errors import VoxadaptError
from voxadapt.metrics import actual_dcf, eer, min_dcf


def reference_eer(scores, labels):
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1 - tpr
    d = fnr - fpr  # falls from +1 to -1 along sklearn's (descending threshold) order
    i = int(np.flatnonzero(d <= 0)[0])
    if d[i] == 0:
        return fpr[i]
    t = d[i - 1] / (d[i - 1] - d[i])
    return fpr[i - 1] + t * (fpr[i] - fpr[i - 1])


def reference_min_dcf(scores, labels, p):
    best = np.inf
    for thr in np.concatenate([np.unique(scores), [np.inf]]):
        p_miss = np.mean(scores[labels] < thr)
        p_fa = np.mean(scores[~labels] >= thr)
        best = min(best, p * p_miss + (1 - p) * p_fa)
    return best / min(p, 1 - p)


CASES = {
    "random": lambda r: (r.normal(size=3000), r.random(3000) < 0.2),
    "separable": lambda r: (np.r_[r.normal(5, 1, 200), r.normal(-5, 1, 800)], np.r_[np.ones(200, bool), np.zeros(800, bool)]),
    "overlapping": lambda r: (np.r_[r.normal(1, 1, 500), r.normal(0, 1, 2500)], np.r_[np.ones(500, bool), np.zeros(2500, bool)]),
    "heavily tied": lambda r: (np.round(r.normal(size=4000) + 0.8 * (lab := r.random(4000) < 0.3)), lab),
}


@pytest.mark.parametrize("case", CASES)
def test_against_references(case):
    scores, labels = CASES[case](np.random.default_rng(1))
    assert eer(scores, labels)[0] == pytest.approx(reference_eer(scores, labels), abs=1e-12)
    for p in (0.01, 0.05):
        assert min_dcf(scores, labels, p)[0] == pytest.approx(reference_min_dcf(scores, labels, p), abs=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_independent_of_trial_order(case):
    scores, labels = CASES[case](np.random.default_rng(2))
    perm = np.random.default_rng(3).permutation(len(scores))
    assert eer(scores[perm], labels[perm]) == eer(scores, labels)
    assert min_dcf(scores[perm], labels[perm], 0.01) == min_dcf(scores, labels, 0.01)


def test_known_values():
    labels = np.array([True, True, False, False])
    assert eer(np.array([0.9, 0.8, 0.1, 0.2]), labels)[0] == 0.0
    assert eer(np.array([0.1, 0.2, 0.9, 0.8]), labels)[0] == 1.0
    assert eer(np.array([0.5, 0.5, 0.5, 0.5]), labels)[0] == pytest.approx(0.5)
    llr = np.array([5.0, -5.0, -5.0, 5.0])  # one miss, one false alarm at the Bayes threshold
    assert actual_dcf(llr, labels, 0.5) == pytest.approx(1.0)


def test_bad_inputs():
    with pytest.raises(VoxadaptError, match="need both target and non-target"):
        eer(np.array([1.0, 2.0]), np.array([True, True]))
    with pytest.raises(VoxadaptError, match="NaN or Inf"):
        eer(np.array([1.0, np.nan]), np.array([True, False]))
