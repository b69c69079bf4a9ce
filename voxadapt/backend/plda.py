"""Two-covariance PLDA as Kaldi's ivector-compute-plda trains it, scored as ivector-plda-scoring.

Model: class centre y ~ N(0, B), example x = y + e, e ~ N(0, W) (after the mean is removed).
Kaldi's choices, kept: the mean is the mean of the speaker means (each speaker weighs the same,
however many utterances it has), EM starts from W = B = I, and the model stored is mean,
transform (W -> I, B -> diag(psi)) and psi. Each EM iteration works in the basis that whitens W
and diagonalises B, where every class posterior is diagonal: cost O(C d + d^3), so VoxCeleb2's
million vectors reduce to class statistics once; the update is Kaldi's (PldaEstimator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh

from voxadapt.backend.lda import class_stats
from voxadapt.errors import VoxadaptError

LOG_2PI = np.log(2 * np.pi)


def _diagonalise(within: np.ndarray, between: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(psi, V) with V.T W V = I and V.T B V = diag(psi), psi descending."""
    psi, V = eigh(between, within)
    order = np.argsort(psi)[::-1]
    return np.clip(psi[order], 0.0, None), V[:, order]


def log_likelihood(counts: np.ndarray, means: np.ndarray, scatter: np.ndarray, within: np.ndarray,
                   between: np.ndarray) -> float:
    """log p(data | W, B) per example: the quantity EM must never decrease."""
    psi, V = _diagonalise(within, between)
    z = means @ V
    n = counts[:, None]
    _, logdet_w = np.linalg.slogdet(within)
    d, N = within.shape[0], counts.sum()
    ll = -0.5 * (N * d * LOG_2PI + N * logdet_w + np.trace(np.linalg.solve(within, scatter))
                 + np.log1p(n * psi).sum() + (n * z**2 / (1 + n * psi)).sum())
    return float(ll / N)


@dataclass
class Plda:
    mean: np.ndarray
    transform: np.ndarray
    psi: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.mean)

    @classmethod
    def train(cls, x: np.ndarray, labels: np.ndarray, iters: int = 10) -> tuple[Plda, list[float]]:
        """EM from Kaldi's starting point (W = B = I); returns the model and the log-likelihood
        per example before each iteration and after the last."""
        stats = class_stats(x, labels)
        if len(stats.counts) < 2:
            raise VoxadaptError("PLDA needs at least two speakers")
        mean = stats.means.mean(0)  # Kaldi: sum of class means / number of classes
        counts, means, scatter = stats.counts, stats.means - mean, stats.scatter  # of the centred data
        N, C, d = counts.sum(), len(counts), x.shape[1]
        within, between = np.eye(d), np.eye(d)
        history = [log_likelihood(counts, means, scatter, within, between)]
        for _ in range(iters):
            psi, V = _diagonalise(within, between)
            Vinv = np.linalg.inv(V)
            z = means @ V  # class means in the diagonal basis, where W = I and B = diag(psi)
            n = counts[:, None]
            post_var = psi / (1 + n * psi)  # (C, d): posterior variance of each class centre
            post_mean = n * psi * z / (1 + n * psi)
            between_u = (post_mean.T @ post_mean + np.diag(post_var.sum(0))) / C
            diff = z - post_mean
            within_u = (diff.T @ (diff * n) + np.diag((post_var * n).sum(0))) / N
            between = Vinv.T @ between_u @ Vinv
            within = scatter / N + Vinv.T @ within_u @ Vinv
            within, between = (within + within.T) / 2, (between + between.T) / 2
            history.append(log_likelihood(counts, means, scatter, within, between))
        psi, V = _diagonalise(within, between)
        return cls(mean, V.T, psi), history

    def smoothed(self, factor: float) -> Plda:
        """Kaldi's ivector-copy-plda --smoothing: add factor * B to W (in the model's basis, where
        W = I and B = diag(psi)) and re-whiten."""
        if not 0.0 <= factor <= 1.0:
            raise VoxadaptError(f"PLDA smoothing {factor} is outside [0, 1]; Kaldi's recipes use 0.0 or 0.1")
        within = 1.0 + factor * self.psi
        return Plda(self.mean, self.transform / np.sqrt(within)[:, None], self.psi / within)

    def transform_vectors(self, x: np.ndarray, num_examples: np.ndarray | float = 1.0,
                          normalize_length: bool = True) -> np.ndarray:
        """Kaldi's Plda::TransformIvector (normalize_length=true, simple_length_norm=false);
        `num_examples`: per row (or for all), how many utterances were averaged into it."""
        if x.shape[1] != self.dim:
            raise VoxadaptError(f"PLDA is {self.dim}-dimensional but the vectors are {x.shape[1]}-dimensional; "
                                "apply the same mean/LDA as in training")
        y = (x - self.mean) @ self.transform.T
        if normalize_length:
            n = np.broadcast_to(np.asarray(num_examples, dtype=np.float64), (len(y),))[:, None]
            y = y * np.sqrt(self.dim / ((y**2) / (self.psi + 1.0 / n)).sum(1, keepdims=True))
        return y

    def llr(self, enroll: np.ndarray, test: np.ndarray, n_enroll: np.ndarray | float = 1.0) -> np.ndarray:
        """Kaldi's Plda::LogLikelihoodRatio for row-aligned transformed enroll/test vectors; an
        enrolment row that averages n utterances is scored with the n-utterance posterior."""
        psi = self.psi
        n = np.asarray(n_enroll, dtype=np.float64)
        n = n[:, None] if n.ndim else n
        k = n * psi / (n * psi + 1.0)
        var_given = 1.0 + psi / (n * psi + 1.0)
        var_without = 1.0 + psi
        given = -0.5 * (np.log(var_given).sum(-1) + ((test - k * enroll) ** 2 / var_given).sum(1))
        without = -0.5 * (np.log(var_without).sum() + (test**2 / var_without).sum(1))
        return given - without
