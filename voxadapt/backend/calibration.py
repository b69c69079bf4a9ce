"""Calibration: logistic regression from scores (and optional quality measures) to log-likelihood
ratios, trained with balanced classes so the output is an LLR independent of the target rate."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

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
    weights: list[float]  # score first, then quality measures
    bias: float
    quality: bool

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, quality: np.ndarray | None = None) -> "Calibration":
        feats = _features(scores, quality)
        if labels.all() or not labels.any():
            raise VoxadaptError("calibration needs target and non-target trials")
        lr = LogisticRegression(class_weight="balanced", C=1e4, max_iter=1000)
        lr.fit(feats, labels)
        return cls([float(w) for w in lr.coef_[0]], float(lr.intercept_[0]), quality is not None)

    def llr(self, scores: np.ndarray, quality: np.ndarray | None = None) -> np.ndarray:
        if self.quality and quality is None:
            raise VoxadaptError("this calibration uses quality measures (durations): give them")
        return _features(scores, quality if self.quality else None) @ np.array(self.weights) + self.bias

    def score_threshold(self, p_target: float) -> float | None:
        """The raw score at the Bayes threshold (only defined without quality measures)."""
        return None if self.quality else (bayes_threshold(p_target) - self.bias) / self.weights[0]


def _features(scores: np.ndarray, quality: np.ndarray | None) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)[:, None]
    return s if quality is None else np.hstack([s, np.asarray(quality, dtype=np.float64)])


def quality_measures(trials, durations: dict[str, float]) -> np.ndarray:  # noqa: ANN001 - list[Trial]
    """log of the shorter and the longer side's duration, per trial."""
    d = np.array([[durations[t.enroll], durations[t.test]] for t in trials])
    return np.log(np.stack([d.min(1), d.max(1)], axis=1))


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
        return {m: Calibration([float(w) for w in v["weights"]], float(v["bias"]), bool(v["quality"]))
                for m, v in data.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise VoxadaptError(located(path, None, "not a calibration file (weights, bias, quality per method)",
                                    fix)) from None
