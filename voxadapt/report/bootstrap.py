"""How sure is a metric, and is one system better than another on this trial list? A speaker
bootstrap: the list's speakers are drawn with replacement and each trial counts as often as the
product of its two speakers' draws (trials of one speaker are not independent, so resampling
trials would understate the noise). A system may be several runs (seeds) scored on the same list:
its metric is their mean, recomputed on every draw. Differences are paired: both systems are
measured on the same draws.

Each draw reweights the trials of one sort (metrics.ranked_roc), so a draw costs O(trials)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from voxadapt.metrics import ranked_roc, roc_eer, roc_min_dcf

METRIC_NAMES = ("eer", "cllr", "mindcf0.01", "mindcf0.05")  # cllr: of calibrated LLRs
DRAWS = 1000


@dataclass(frozen=True)
class Interval:
    value: float  # on the whole list
    low: float  # 2.5th percentile over the draws
    high: float  # 97.5th percentile
    draws: int  # draws with both target and non-target trials (the others are skipped)

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def weighted_metric(metric: str, scores: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], float]:
    """metric(weights) of one system's scores, with the sort (or per-trial costs) done once."""
    if metric == "cllr":
        cost = np.where(labels, np.logaddexp(0.0, -scores), np.logaddexp(0.0, scores))

        def cllr(w: np.ndarray) -> float:
            return float((np.average(cost[labels], weights=w[labels]) + np.average(cost[~labels], weights=w[~labels]))
                         / (2 * np.log(2)))
        return cllr
    values, inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    if metric == "eer":
        return lambda w: roc_eer(ranked_roc(values, inverse, labels, w))[0]
    if metric.startswith("mindcf"):
        p = float(metric[len("mindcf"):])
        return lambda w: roc_min_dcf(ranked_roc(values, inverse, labels, w), p)[0]
    raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRIC_NAMES)}")


def speaker_weights(enroll_speaker: np.ndarray, test_speaker: np.ndarray, draws: int, seed: int) -> Iterator[np.ndarray]:
    """Per-trial weights of each draw (the same sequence for the same speakers and seed)."""
    speakers, inverse = np.unique(np.concatenate([enroll_speaker, test_speaker]), return_inverse=True)
    ie, it = inverse[: len(enroll_speaker)], inverse[len(enroll_speaker):]
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        count = np.bincount(rng.integers(0, len(speakers), len(speakers)), minlength=len(speakers))
        yield (count[ie] * count[it]).astype(np.float64)


@dataclass(frozen=True)
class Draws:
    """A system's metric on the whole list and on each draw (the same draws for the same list and
    seed, so two systems' Draws pair up)."""

    value: float
    per_draw: np.ndarray

    def interval(self) -> Interval:
        return _interval(self.value, self.per_draw)

    def minus(self, other: Draws) -> Interval:
        """self - other, paired draw by draw."""
        return _interval(self.value - other.value, self.per_draw - other.per_draw)


def _interval(value: float, per_draw: np.ndarray) -> Interval:
    low, high = np.percentile(per_draw, [2.5, 97.5]) if len(per_draw) else (np.nan, np.nan)
    return Interval(value, float(low), float(high), len(per_draw))


def bootstrap_draws(metric: str, runs: Sequence[np.ndarray], labels: np.ndarray, enroll_speaker: np.ndarray,
                    test_speaker: np.ndarray, draws: int = DRAWS, seed: int = 0) -> Draws:
    """The metric of `runs` (score arrays of one list, e.g. seeds; their mean) on the list and on
    every draw that has both target and non-target trials."""
    labels = np.asarray(labels, dtype=bool)
    fns = [weighted_metric(metric, np.asarray(r, dtype=np.float64), labels) for r in runs]
    out = [float(np.mean([f(w) for f in fns])) for w in speaker_weights(enroll_speaker, test_speaker, draws, seed)
           if w[labels].sum() > 0 and w[~labels].sum() > 0]
    ones = np.ones(len(labels))
    return Draws(float(np.mean([f(ones) for f in fns])), np.array(out))


def metric_interval(metric: str, runs: Sequence[np.ndarray], labels: np.ndarray, enroll_speaker: np.ndarray,
                    test_speaker: np.ndarray, draws: int = DRAWS, seed: int = 0) -> Interval:
    """The metric (mean over `runs`, score arrays of one list) and its 95 % interval."""
    return bootstrap_draws(metric, runs, labels, enroll_speaker, test_speaker, draws, seed).interval()


def difference_interval(metric: str, a: Sequence[np.ndarray], b: Sequence[np.ndarray], labels: np.ndarray,
                        enroll_speaker: np.ndarray, test_speaker: np.ndarray, draws: int = DRAWS,
                        seed: int = 0) -> Interval:
    """metric(b) - metric(a) (each the mean over its runs) and its paired 95 % interval."""
    args = (labels, enroll_speaker, test_speaker, draws, seed)
    return bootstrap_draws(metric, b, *args).minus(bootstrap_draws(metric, a, *args))
