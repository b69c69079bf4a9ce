"""LDA as Kaldi's ivector-compute-lda makes it: within-class covariance whitened, directions of
largest between-class variance first, written as an affine (dim x (d+1)) Kaldi matrix.

scikit-learn's LinearDiscriminantAnalysis solves the same generalised eigenproblem but rescales
its directions to unit norm; the within-class whitening is what later length normalisation and
PLDA expect, so the transform is computed here from the scatter matrices directly.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh

from voxadapt.errors import VoxadaptError


def class_stats(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts (C,), class means (C, d), within-class scatter (d, d)) in float64, one pass."""
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    sums = np.zeros((len(classes), x.shape[1]))
    np.add.at(sums, inverse, x)
    means = sums / counts[:, None]
    xd = x.astype(np.float64, copy=False)
    scatter = xd.T @ xd - (means * counts[:, None]).T @ means
    return counts, means, scatter


def compute_lda(x: np.ndarray, labels: np.ndarray, dim: int) -> np.ndarray:
    """Affine LDA transform (dim, d+1): y = A[:, :d] @ x + A[:, d]."""
    counts, means, within = class_stats(x, labels)
    if len(counts) < 2:
        raise VoxadaptError("LDA needs at least two speakers")
    dim = min(dim, x.shape[1], len(counts) - 1)
    mean = (means * counts[:, None]).sum(0) / counts.sum()
    centred = means - mean
    between = (centred * counts[:, None]).T @ centred / counts.sum()
    within = within / counts.sum() + 1e-6 * np.eye(x.shape[1]) * np.trace(within) / counts.sum() / x.shape[1]
    values, vectors = eigh(between, within)  # vectors.T @ within @ vectors = I
    order = np.argsort(values)[::-1][:dim]
    linear = vectors[:, order].T
    return np.hstack([linear, -(linear @ mean)[:, None]])


def apply_affine(transform: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Kaldi's transform-vec: a (k, d) linear or (k, d+1) affine matrix applied to rows of x."""
    d = x.shape[1]
    if transform.shape[1] == d:
        return x @ transform.T
    if transform.shape[1] == d + 1:
        return x @ transform[:, :d].T + transform[:, d]
    raise VoxadaptError(f"transform of shape {transform.shape} does not fit {d}-dimensional vectors")


def length_norm(x: np.ndarray, scale_to_sqrt_dim: bool = True) -> np.ndarray:
    """Kaldi's ivector-normalize-length: to norm sqrt(dim) (scaleup=true), or to 1."""
    norm = np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return x / norm * (np.sqrt(x.shape[1]) if scale_to_sqrt_dim else 1.0)
