"""Online augmentation: with probability augment.probability, one of reverberation,
additive noise, music or babble at an SNR drawn from that kind's range, or a channel (telephone
line, lossy codec) when augment.weights gives those a weight."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse import load_manifest
from scipy.signal import fftconvolve

from voxadapt.augment.channel import lossy_codec, telephone
from voxadapt.config import AugmentConfig
from voxadapt.data.audio import read_samples, rxfilename
from voxadapt.data.packed import PackedStrings
from voxadapt.errors import DataError, located
from voxadapt.layout import AUGMENT_KINDS, AUGMENT_WEIGHTS


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) + 1e-20


def snr_db(clean: np.ndarray, noise: np.ndarray) -> float:
    return 10 * np.log10(power(clean) / power(noise))


def add_at_snr(clean: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    if power(noise) < 1e-12:  # a silent stretch of a noise file: nothing to add
        return clean
    scale = np.sqrt(power(clean) / (power(noise) * 10 ** (snr / 10)))
    return (clean + scale * noise).astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray, normalize: bool) -> np.ndarray:
    """Convolve, align to the direct path (strongest tap) and keep the input's length."""
    shift = int(np.argmax(np.abs(rir)))
    y = fftconvolve(x, rir)[shift:shift + len(x)]
    if normalize:
        y = y * np.sqrt(power(x) / power(y))
    return y.astype(np.float32)


@dataclass
class AudioPool:
    """Recordings (rxfilenames) to draw random crops from; compact, and safe to share with workers."""

    sources: PackedStrings
    num_samples: np.ndarray

    @classmethod
    def from_manifest(cls, path: Path) -> AudioPool:
        if not path.is_file():
            raise DataError(located(path, None, "missing", "run stage 2 (augment) first"))
        recs = load_manifest(path)
        return cls(PackedStrings(rxfilename(r) for r in recs), np.array([r.num_samples for r in recs]))

    def __len__(self) -> int:
        return len(self.num_samples)

    def read(self, i: int, start: int = 0, frames: int = -1) -> np.ndarray:
        return read_samples(self.sources[i], start, frames)

    def crop(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """A random `n`-sample crop of a random recording, repeated if the recording is shorter."""
        i = int(rng.integers(len(self)))
        total = int(self.num_samples[i])
        x = self.read(i, int(rng.integers(0, total - n + 1)), n) if total >= n else self.read(i)
        # Manifest lengths come from rounded durations: a read may be a sample short; repeat to fit.
        return x if len(x) == n else np.resize(x, n)


class Augmenter:
    def __init__(self, cfg: AugmentConfig, resources: dict[str, Path], sample_rate: int):
        """`resources`: the manifest of each kind in AUGMENT_KINDS (stage 2's outputs)."""
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.pools = {k: AudioPool.from_manifest(resources[k]) for k in AUGMENT_KINDS}
        self.kinds = [k for k in AUGMENT_WEIGHTS if cfg.weights.get(k, 0.0) > 0]
        w = np.array([cfg.weights[k] for k in self.kinds])
        self.probs = w / w.sum()

    def __call__(self, x: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, str]:
        """Augment `x` (float32, mono); `kind` forces one kind (benchmarks and tests)."""
        if kind is None:
            if rng.random() >= self.cfg.probability:
                return x, "none"
            kind = str(rng.choice(self.kinds, p=self.probs))
        n = len(x)
        if kind == "none":
            return x, kind
        if kind == "telephone":
            return telephone(x, self.sample_rate, rng)[0], kind
        if kind == "codec":
            return lossy_codec(x, self.sample_rate, rng)[0], kind
        if kind == "reverb":
            pool = self.pools["rir"]
            return reverberate(x, pool.read(int(rng.integers(len(pool)))), self.cfg.rir_normalize), kind
        if kind == "babble":
            lo, hi = self.cfg.babble_speakers
            parts = [self.pools["speech"].crop(n, rng) for _ in range(int(rng.integers(lo, hi + 1)))]
            noise = sum(p / np.sqrt(power(p)) for p in parts)
            snr = rng.uniform(*self.cfg.babble_snr)
        else:
            noise = self.pools[kind].crop(n, rng)
            snr = rng.uniform(*(self.cfg.noise_snr if kind == "noise" else self.cfg.music_snr))
        return add_at_snr(x, noise, snr), kind
