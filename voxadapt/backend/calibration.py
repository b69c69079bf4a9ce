"""Calibration: scores (and optionally quality measures) to log-likelihood ratios, fitted by
logistic regression with balanced classes, so the output is an LLR independent of the target rate.

Three forms. 'linear': llr = a s + b. 'duration': the evidence of a score grows with the shorter
side's duration d: llr = (a + c q(d)) s + b, where q maps log d linearly from the calibration
trials' range [d_lo, d_hi] onto [0, 1] (clipped: no extrapolation); a, c >= 0, so a higher score
never lowers the LLR and a longer recording never reverses what its score says. 'qmf' (quality
measure functions, as in the VoxSRC systems): llr = a s + w . m + b, with m the trial's quality
measures (backend/quality.py: log durations, x-vector magnitudes and AS-norm cohort means of
both sides) and a >= 0; w is free, so the measures shift the LLR either way.
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


FORMS = ("linear", "duration", "qmf")


@dataclass
class Calibration:
    weights: list[float]  # linear [a]; duration [a, c] (a file of voxadapt <= 0.1: [a, w_log_dmin, w_log_dmax]); qmf [a, w...]
    bias: float
    form: str  # one of FORMS
    duration_range: list[float] = field(default_factory=list)  # [d_lo, d_hi] seconds (duration form)

    @property
    def quality(self) -> bool:
        """Whether the LLR needs quality measures of each trial besides its score."""
        return self.form != "linear"

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, quality: np.ndarray | None = None, form: str = "") -> Calibration:
        """`quality`: per trial, (N, 2) seconds of the shorter and the longer side (form 'duration',
        the default with quality) or (N, k) QMF measures (form 'qmf'); None: the linear form."""
        labels = np.asarray(labels, dtype=bool)
        if labels.all() or not labels.any():
            raise VoxadaptError("calibration needs target and non-target trials")
        s = np.asarray(scores, dtype=np.float64)
        if quality is None:
            (a,), b = _fit_logistic(s[:, None], labels)
            return cls([a], b, "linear")
        q = np.asarray(quality, dtype=np.float64)
        if form == "qmf":
            w, b = _fit_logistic(np.hstack([s[:, None], q]), labels, nonnegative=1)
            return cls(w.tolist(), b, "qmf")
        shorter = q[:, 0]
        lo, hi = float(np.percentile(shorter, 2)), float(np.percentile(shorter, 98))
        hi = max(hi, lo * 1.01)
        (a, c), b = _fit_logistic(np.stack([s, s * _q(shorter, lo, hi)], axis=1), labels)
        return cls([a, c], b, "duration", [lo, hi])

    def llr(self, scores: np.ndarray, quality: np.ndarray | None = None) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if not self.quality:
            return self.weights[0] * s + self.bias
        if quality is None:
            raise VoxadaptError(f"this calibration ({self.form}) uses quality measures of each trial: give them")
        q = np.asarray(quality, dtype=np.float64)
        if self.form == "qmf":
            return np.hstack([s[:, None], q]) @ np.array(self.weights) + self.bias
        if not self.duration_range:  # the earlier linear form, kept so older packages still load
            return np.hstack([s[:, None], np.log(q)]) @ np.array(self.weights) + self.bias
        a, c = self.weights
        return (a + c * _q(q[:, 0], *self.duration_range)) * s + self.bias

    def score_threshold(self, p_target: float) -> float | None:
        """The raw score at the Bayes threshold (only defined without quality measures)."""
        if self.quality or self.weights[0] <= 0:
            return None
        return (bayes_threshold(p_target) - self.bias) / self.weights[0]


def _q(shorter: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((np.log(np.maximum(shorter, 1e-3)) - np.log(lo)) / (np.log(hi) - np.log(lo)), 0.0, 1.0)


def _fit_logistic(x: np.ndarray, labels: np.ndarray, nonnegative: int | None = None) -> tuple[np.ndarray, float]:
    """Weights and bias minimising the class-balanced logistic loss of x @ w + b; the first
    `nonnegative` weights (default: all) are constrained to be >= 0."""
    weight = np.where(labels, 0.5 / labels.sum(), 0.5 / (~labels).sum())
    sign = np.where(labels, 1.0, -1.0)
    centre = np.zeros(x.shape[1])
    if nonnegative is not None:  # free weights: centred features, so the bias stays well-conditioned
        centre[nonnegative:] = x[:, nonnegative:].mean(0)
    scale = np.maximum(np.abs(x - centre).max(0), 1e-12)  # well-conditioned: features in [-1, 1]
    xs = (x - centre) / scale

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = sign * (xs @ theta[:-1] + theta[-1])
        value = float(weight @ np.logaddexp(0.0, -z))
        g = -weight * sign / (1.0 + np.exp(np.clip(z, -500, 500)))
        return value, np.append(xs.T @ g, g.sum())

    n_nonneg = x.shape[1] if nonnegative is None else nonnegative
    bounds = [(0.0, None)] * n_nonneg + [(None, None)] * (x.shape[1] - n_nonneg + 1)
    theta = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds).x
    w = theta[:-1] / scale
    return w, float(theta[-1] - w @ centre)


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
        out = {m: Calibration([float(w) for w in v["weights"]], float(v["bias"]),
                              # files before QMF said only whether durations were used
                              str(v["form"]) if "form" in v else ("duration" if v["quality"] else "linear"),
                              [float(d) for d in v.get("duration_range", [])])
               for m, v in data.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        out = {}
    if not out or any(c.form not in FORMS for c in out.values()):
        raise VoxadaptError(located(path, None, "not a calibration file (weights, bias, form per method)", fix))
    return out
