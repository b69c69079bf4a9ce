"""Quality measures of each trial, the inputs of the duration-aware and QMF calibrations.

'duration': the shorter and the longer side's duration (seconds). 'qmf': three pairs, each
ordered (lower, higher) so a trial scores the same either way round: log durations, x-vector
magnitudes (norms before any normalisation: short or noisy inputs give smaller ones) and AS-norm
cohort means (how close each side sits to the cohort: a side close to everyone scores high
against everyone).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxadapt.backend.scoring import Backend, Embeddings, asnorm_stats
from voxadapt.data.trials import Trial
from voxadapt.errors import DataError, VoxadaptError, located


def _ordered_pairs(enroll_side: np.ndarray, test_side: np.ndarray) -> np.ndarray:
    pair = np.stack([enroll_side, test_side], axis=1)
    return np.sort(pair, axis=1)


def trial_durations(trials: Sequence[Trial], durations: dict[str, float], source: str | Path) -> np.ndarray:
    """(N, 2): the shorter and the longer side's duration in seconds, per trial."""
    try:
        d = np.array([[durations[t.enroll], durations[t.test]] for t in trials], dtype=np.float64)
    except KeyError as err:
        raise DataError(located(source, None, f"no duration for '{err.args[0]}', a side of the trials",
                                "give the utt2dur (or data dir) of the scored utterances")) from None
    return _ordered_pairs(d[:, 0], d[:, 1])


def trial_quality(form: str, trials: Sequence[Trial], durations: dict[str, float], backend: Backend, emb: Embeddings,
                  top_n: int, source: str | Path, enroll: Embeddings | None = None) -> np.ndarray | None:
    """The measures calibration `form` needs (None for 'linear'), one row per trial."""
    if form == "linear":
        return None
    d = trial_durations(trials, durations, source)
    if form == "duration":
        return d
    if backend.cohort is None:
        raise VoxadaptError("QMF calibration needs the AS-norm cohort (cohort.ark from stage 6, or --cohort-scp)")
    enroll = enroll or emb
    ie = enroll.positions((t.enroll for t in trials), len(trials))
    it = emb.positions((t.test for t in trials), len(trials))
    if (ie < 0).any() or (it < 0).any():
        raise VoxadaptError(located(source, None, "a side of the trials has no x-vector", "extract x-vectors for it"))
    cohort = backend.cosine_space(backend.cohort)

    def per_vector(side: Embeddings, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        used, inverse = np.unique(rows, return_inverse=True)
        x = side.matrix[used]
        mean, _ = asnorm_stats(backend.cosine_space(x), cohort, top_n)
        return np.linalg.norm(x.astype(np.float64), axis=1)[inverse], mean[inverse]

    mag_e, coh_e = per_vector(enroll, ie)
    mag_t, coh_t = per_vector(emb, it)
    return np.hstack([np.log(np.maximum(d, 1e-3)), _ordered_pairs(mag_e, mag_t), _ordered_pairs(coh_e, coh_t)])
