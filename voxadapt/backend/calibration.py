"""Calibration: scores (and optionally durations) to log-likelihood ratios, fitted by logistic
regression with balanced classes, so the output is an LLR independent of the target rate.

Without durations: llr = a s + b. With durations, the evidence of a score grows with the shorter
side's duration d: llr = (a + c q(d)) s + b, where q maps log d linearly from the calibration
trials' range [d_lo, d_hi] onto [0, 1] (clipped: no extrapolation). a, c >= 0, so a higher score
never lowers the LLR and a longer recording never reverses what its score says.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import atomic_path, read_json


def bayes_threshold(p_target: float) -> float:
    """Accept when LLR >= this: the minimum-risk decision for C_miss = C_fa = 1."""
    if not 0.0 < p_target < 1.0:
        raise VoxadaptError(f"p_target {p_target} is not a probability strictly between 0 and 1; "
                            "give e.g. 0.01 or 0.05")
    return float(np.log((1 - p_target) / p_target))


@dataclass
class Calibration:
    weights: list[float]  # [a] or [a, c]; a file of voxadapt <= 0.1 with quality: [a, w_log_dmin, w_log_dmax]
    bias: float
    quality: bool
    duration_range: list[float] = field(default_factory=list)  # [d_lo, d_hi] seconds (with quality)

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, durations: np.ndarray | None = None) -> Calibration:
        """`durations`: (N, 2) seconds of the shorter and the longer side of each trial, or None."""
        labels = np.asarray(labels, dtype=bool)
        if labels.all() or not labels.any():
            raise VoxadaptError("calibration needs target and non-target trials")
        s = np.asarray(scores, dtype=np.float64)
        if durations is None:
            (a,), b = _fit_logistic(s[:, None], labels)
            return cls([a], b, False)
        shorter = np.asarray(durations, dtype=np.float64)[:, 0]
        lo, hi = float(np.percentile(shorter, 2)), float(np.percentile(shorter, 98))
        hi = max(hi, lo * 1.01)
        (a, c), b = _fit_logistic(np.stack([s, s * _q(shorter, lo, hi)], axis=1), labels)
        return cls([a, c], b, True, [lo, hi])

    def llr(self, scores: np.ndarray, durations: np.ndarray | None = None) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if not self.quality:
            return self.weights[0] * s + self.bias
        if durations is None:
            raise VoxadaptError("this calibration uses durations: give them")
        d = np.asarray(durations, dtype=np.float64)
        if not self.duration_range:  # the earlier linear form, kept so older packages still load
            return np.hstack([s[:, None], np.log(d)]) @ np.array(self.weights) + self.bias
        a, c = self.weights
        return (a + c * _q(d[:, 0], *self.duration_range)) * s + self.bias

    def score_threshold(self, p_target: float) -> float | None:
        """The raw score at the Bayes threshold (only defined without quality measures)."""
        if self.quality or self.weights[0] <= 0:
            return None
        return (bayes_threshold(p_target) - self.bias) / self.weights[0]


def _q(shorter: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((np.log(np.maximum(shorter, 1e-3)) - np.log(lo)) / (np.log(hi) - np.log(lo)), 0.0, 1.0)


def _fit_logistic(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights (constrained >= 0) and bias minimising the class-balanced logistic loss of x @ w + b."""
    weight = np.where(labels, 0.5 / labels.sum(), 0.5 / (~labels).sum())
    sign = np.where(labels, 1.0, -1.0)
    scale = np.maximum(np.abs(x).max(0), 1e-12)  # well-conditioned: features in [-1, 1]
    xs = x / scale

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = sign * (xs @ theta[:-1] + theta[-1])
        value = float(weight @ np.logaddexp(0.0, -z))
        g = -weight * sign / (1.0 + np.exp(np.clip(z, -500, 500)))
        return value, np.append(xs.T @ g, g.sum())

    bounds = [(0.0, None)] * x.shape[1] + [(None, None)]
    theta = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds).x
    return theta[:-1] / scale, float(theta[-1])


def quality_measures(trials, durations: dict[str, float]) -> np.ndarray:  # noqa: ANN001 - list[Trial]
    """(N, 2): the shorter and the longer side's duration in seconds, per trial."""
    d = np.array([[durations[t.enroll], durations[t.test]] for t in trials], dtype=np.float64)
    return np.stack([d.min(1), d.max(1)], axis=1)


def save_calibrations(path: Path, calibrations: dict[str, Calibration], p_targets: list[float]) -> None:
    out = {}
    for method, cal in calibrations.items():
        out[method] = {**asdict(cal), "thresholds": {
            str(p): {"llr": bayes_threshold(p), "score": cal.score_threshold(p)} for p in p_targets}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(out, indent=1) + "\n")


def load_calibrations(path: Path) -> dict[str, Calibration]:
    fix = "re-run stage 6, which trains the calibration"
    data = read_json(path, fix)
    try:
        return {m: Calibration([float(w) for w in v["weights"]], float(v["bias"]), bool(v["quality"]),
                               [float(d) for d in v.get("duration_range", [])])
                for m, v in data.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise VoxadaptError(located(path, None, "not a calibration file (weights, bias, quality per method)",
                                    fix)) from None
