"""Training the back-end from labelled x-vectors (mean, LDA, PLDA, AS-norm cohort), and the
trials it is calibrated on when no calibration set is given."""

from __future__ import annotations

import numpy as np

from voxadapt.backend.lda import CHUNK_ROWS, ClassStats, apply_affine, class_stats, lda_from_stats, length_norm
from voxadapt.backend.plda import Plda
from voxadapt.backend.scoring import Backend, Embeddings
from voxadapt.config import ScoringConfig
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import Trial, make_trials
from voxadapt.errors import VoxadaptError


def train_backend(emb: Embeddings, utt2spk: dict[str, str], cfg: ScoringConfig) -> tuple[Backend, list[float]]:
    """Mean, LDA, length norm, PLDA (EM) and the AS-norm cohort from labelled x-vectors."""
    missing = [u for u in emb.ids if u not in utt2spk]
    if missing:
        raise VoxadaptError(f"no speaker for {len(missing)} x-vector(s), e.g. '{missing[0]}'; give the matching utt2spk")
    labels = np.array([utt2spk[u] for u in emb.ids])
    x = emb.matrix  # float32; every pass below is chunked so a million x-vectors fit in a few GB
    stats = class_stats(x, labels)
    mean = stats.mean
    # LDA of the mean-subtracted data (Kaldi's order): the same scatter, shifted class means.
    lda = lda_from_stats(ClassStats(stats.counts, stats.means - mean, stats.scatter), cfg.lda_dim)
    projected = np.empty((len(x), lda.shape[0]), dtype=np.float32)
    for s in range(0, len(x), CHUNK_ROWS):
        projected[s:s + CHUNK_ROWS] = length_norm(apply_affine(lda, x[s:s + CHUNK_ROWS] - mean))
    plda, history = Plda.train(projected, labels, cfg.plda_iters)
    return Backend(mean, lda, plda, stats.means), history  # the cohort: training speaker means


def split_calibration_speakers(speakers: list[str], fraction: float, seed: int) -> set[str]:
    n = min(max(2, round(len(speakers) * fraction)), len(speakers) // 2)
    rng = np.random.default_rng(seed)
    return set(rng.choice(sorted(speakers), n, replace=False).tolist())


def calibration_trials(d: DataDir, emb: Embeddings, held: set[str], cfg: ScoringConfig) -> list[Trial]:
    """Trials among the held-out training speakers: all target pairs up to half the list."""
    spk2utt = {s: [u for u in us if u in emb.index] for s, us in d.spk2utt.items() if s in held}
    n_tar = sum(len(u) * (len(u) - 1) // 2 for u in spk2utt.values())
    n_utt = sum(len(u) for u in spk2utt.values())
    n_non = (n_utt**2 - sum(len(u) ** 2 for u in spk2utt.values())) // 2
    n = min(cfg.calibration_trials, 2 * n_tar, n_tar + n_non)
    return make_trials(spk2utt, n, 0.5, np.random.default_rng(cfg.seed))
