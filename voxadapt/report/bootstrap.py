"""Is one system better than another on this trial list, or is the difference noise? A speaker
bootstrap: the list's speakers are drawn with replacement and each trial counts as often as the
product of its two speakers' draws (trials of one speaker are not independent, so resampling
trials would understate the noise), and the metric difference is recomputed for every draw."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxadapt.metrics import cllr, eer, min_dcf

METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "eer": lambda s, y: eer(s, y)[0],
    "cllr": cllr,  # of calibrated LLRs
    "mindcf0.01": lambda s, y: min_dcf(s, y, 0.01)[0],
    "mindcf0.05": lambda s, y: min_dcf(s, y, 0.05)[0],
}


@dataclass(frozen=True)
class Difference:
    value: float  # metric(b) - metric(a) on the whole list
    low: float  # 2.5th percentile over the draws
    high: float  # 97.5th percentile
    draws: int  # draws with both target and non-target trials (the others are skipped)


def speaker_bootstrap(metric: str, a: np.ndarray, b: np.ndarray, labels: np.ndarray, enroll_speaker: np.ndarray,
                      test_speaker: np.ndarray, draws: int = 1000, seed: int = 0) -> Difference:
    """metric(b) - metric(a) and its 95 % interval; the arrays are per trial."""
    fn = METRICS[metric]
    speakers, inverse = np.unique(np.concatenate([enroll_speaker, test_speaker]), return_inverse=True)
    ie, it = inverse[: len(labels)], inverse[len(labels):]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        count = np.bincount(rng.integers(0, len(speakers), len(speakers)), minlength=len(speakers))
        rows = np.repeat(np.arange(len(labels)), count[ie] * count[it])
        y = labels[rows]
        if y.all() or not y.any():
            continue
        diffs.append(fn(b[rows], y) - fn(a[rows], y))
    low, high = np.percentile(diffs, [2.5, 97.5]) if diffs else (np.nan, np.nan)
    return Difference(fn(b, labels) - fn(a, labels), float(low), float(high), len(diffs))
