"""LDA as Kaldi's ivector-compute-lda makes it: within-class covariance whitened, directions of
largest between-class variance first, written as an affine (dim x (d+1)) Kaldi matrix.

scikit-learn's LinearDiscriminantAnalysis solves the same generalised eigenproblem but rescales
its directions to unit norm; the within-class whitening is what later length normalisation and
PLDA expect, so the transform is computed here from the scatter matrices directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from voxadapt.errors import VoxadaptError

log = logging.getLogger(__name__)

CHUNK_ROWS = 65_536  # rows per pass step: float64 accumulators, float32 data never copied whole


@dataclass(frozen=True)
class ClassStats:
    counts: np.ndarray  # (C,)
    means: np.ndarray  # (C, d) float64
    scatter: np.ndarray  # (d, d) within-class scatter, float64 (invariant to shifting the data)

    @property
    def mean(self) -> np.ndarray:
        return (self.means * self.counts[:, None]).sum(0) / self.counts.sum()


def class_stats(x: np.ndarray, labels: np.ndarray) -> ClassStats:
    """Counts, class means and within-class scatter in float64, in one chunked pass over x."""
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    sums = np.zeros((len(classes), x.shape[1]))
    gram = np.zeros((x.shape[1], x.shape[1]))
    for s in range(0, len(x), CHUNK_ROWS):
        xd = x[s:s + CHUNK_ROWS].astype(np.float64)
        rows = inverse[s:s + CHUNK_ROWS]
        # Class sums as a sparse one-hot product: far faster than np.add.at on a million rows.
        onehot = csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(len(classes), len(rows)))
        sums += onehot @ xd
        gram += xd.T @ xd
    means = sums / counts[:, None]
    return ClassStats(counts, means, gram - (means * counts[:, None]).T @ means)


def compute_lda(x: np.ndarray, labels: np.ndarray, dim: int) -> np.ndarray:
    """Affine LDA transform (dim, d+1): y = A[:, :d] @ x + A[:, d]."""
    return lda_from_stats(class_stats(x, labels), dim)


def lda_from_stats(stats: ClassStats, dim: int) -> np.ndarray:
    """Kaldi's ComputeLdaTransform (--total-covariance-factor=0): whiten the within-class
    covariance through its eigendecomposition (eigenvalues floored at 1e-6 of the largest, so the
    whitening is exact where the data has variance), then keep the `dim` directions of largest
    between-class variance; the offset maps the utterance-weighted mean to 0."""
    counts, means, d = stats.counts, stats.means, stats.means.shape[1]
    if len(counts) < 2:
        raise VoxadaptError("LDA needs at least two speakers")
    usable = min(d, len(counts) - 1)
    if dim > usable:  # Kaldi would keep directions without between-speaker variance: noise
        log.warning("LDA: %d dimensions asked, %d kept (%s); set scoring.lda_dim: %d", dim, usable,
                    f"the x-vectors are {d}-dimensional" if usable == d else f"{len(counts)} speakers give at most "
                    f"{usable} directions of between-speaker variance", usable)
        dim = usable
    mean = stats.mean
    centred = means - mean
    between = (centred * counts[:, None]).T @ centred / counts.sum()
    within = stats.scatter / counts.sum()
    values, vectors = np.linalg.eigh(within)
    values = np.maximum(values, 1e-6 * values.max())
    whiten = vectors.T / np.sqrt(values)[:, None]  # whiten @ within @ whiten.T = I
    projected = whiten @ between @ whiten.T
    values, vectors = np.linalg.eigh((projected + projected.T) / 2)
    order = np.argsort(values)[::-1][:dim]
    linear = vectors[:, order].T @ whiten
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
