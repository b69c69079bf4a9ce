"""Frame targets for masked prediction: MFCCs (+ deltas) on the SSL model's own frame grid,
clustered with k-means (HuBERT's first iteration)."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse.features.kaldi.extractors import Mfcc, MfccConfig
from sklearn.cluster import MiniBatchKMeans

# The wav2vec2/HuBERT/WavLM CNN: frame j sees samples [320 j, 320 j + 400).
WINDOW, HOP = 400, 320


def num_frames(num_samples: int) -> int:
    return max(0, (num_samples - WINDOW) // HOP + 1)


@functools.lru_cache(maxsize=4)
def _mfcc_extractor(sr: int) -> Mfcc:
    with warnings.catch_warnings():  # lhotse warns that snip_edges changes its frame counts: wanted here
        warnings.simplefilter("ignore")
        return Mfcc(MfccConfig(sampling_rate=sr, frame_length=WINDOW / sr, frame_shift=HOP / sr,
                               snip_edges=True, num_filters=40, num_ceps=13))


def mfcc(x: np.ndarray, sr: int) -> np.ndarray:
    """(frames, 39): Kaldi MFCCs (lhotse's) with deltas and delta-deltas, mean-normalised per
    utterance, one frame per SSL frame."""
    n = num_frames(len(x))
    c = _mfcc_extractor(sr).extract(x.astype(np.float32), sr)[:n]
    d1 = np.gradient(c, axis=0) if n > 1 else np.zeros_like(c)
    d2 = np.gradient(d1, axis=0) if n > 1 else np.zeros_like(c)
    feats = np.concatenate([c, d1, d2], axis=1)
    return (feats - feats.mean(0)).astype(np.float32)


@dataclass
class FrameTargets:
    """Cluster ids of every frame of every utterance, packed (one array + offsets)."""

    labels: np.ndarray
    offsets: np.ndarray

    def of(self, i: int) -> np.ndarray:
        return self.labels[self.offsets[i]:self.offsets[i + 1]]

    def save(self, path: Path) -> None:
        np.savez(path, labels=self.labels, offsets=self.offsets)

    @classmethod
    def load(cls, path: Path) -> FrameTargets:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["labels"], z["offsets"])


def fit_targets(features: list[np.ndarray], clusters: int, max_frames: int, seed: int) -> tuple[FrameTargets, float]:
    """K-means on a sample of frames, then every frame's cluster; returns targets and inertia/frame."""
    rng = np.random.default_rng(seed)
    pool = np.concatenate(features)
    sample = pool[rng.choice(len(pool), min(max_frames, len(pool)), replace=False)]
    scale = sample.std(0) + 1e-6  # per-dimension variance normalisation before clustering
    km = MiniBatchKMeans(n_clusters=clusters, batch_size=4096, n_init=3, random_state=seed, max_iter=100)
    km.fit(sample / scale)
    labels = [km.predict(f / scale).astype(np.int16) for f in features]
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum([len(lab) for lab in labels], out=offsets[1:])
    return FrameTargets(np.concatenate(labels), offsets), float(km.inertia_ / len(sample))
