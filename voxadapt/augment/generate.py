"""Stand-ins for MUSAN noise/music and RIRS_NOISES when the user has not given them.

Noises cover several colours (white, pink, brown, blue), stationary textures (hum with
harmonics, fan/HVAC band noise) and non-stationary ones (keyboard-like clicks, rain-like
crackle, amplitude-modulated traffic rumble); four more kinds (siren, engine, wind, beeps) are
kept out of augmentation for the degraded test condition. Music is additive synthesis: notes of random
scales with harmonic timbres and envelopes, chords, and percussive bursts on a beat. Room impulse
responses follow the usual statistical model: a direct path, sparse early reflections, and an
exponentially decaying diffuse tail whose decay time (RT60) is shorter at high frequencies.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt


def _coloured(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown, -1 blue)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / f ** (exponent / 2), n)


def _band(x: np.ndarray, lo: float, hi: float, sr: int) -> np.ndarray:
    return sosfilt(butter(4, [lo, hi], "bandpass", fs=sr, output="sos"), x)


def make_noise(kind: str, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * sr)
    t = np.arange(n) / sr
    if kind in ("white", "pink", "brown", "blue"):
        x = _coloured(n, {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0}[kind], rng)
    elif kind == "hum":
        f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.98, 1.02)
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) for k in range(1, 9))
        x = x + 0.05 * _coloured(n, 1.0, rng) / 10
    elif kind == "fan":
        x = _band(_coloured(n, 1.0, rng), rng.uniform(80, 200), rng.uniform(800, 3000), sr)
        x *= 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(5, 30) * t)
    elif kind == "clicks":
        x = np.zeros(n)
        for pos in rng.integers(0, n - 400, int(seconds * rng.uniform(3, 12))):
            burst = rng.standard_normal(400) * np.exp(-np.arange(400) / rng.uniform(20, 80))
            x[pos:pos + 400] += burst * rng.uniform(0.3, 1.0)
        x = _band(x, 500, 6000, sr)
    elif kind == "rain":
        x = np.zeros(n)
        idx = rng.integers(0, n, int(seconds * rng.uniform(200, 1500)))
        np.add.at(x, idx, rng.standard_normal(len(idx)))
        x = _band(x, 1000, 7000, sr) + 0.3 * _band(_coloured(n, 0.0, rng), 2000, 7000, sr)
    elif kind == "traffic":
        x = _band(_coloured(n, 2.0, rng), 30, 600, sr)
        x *= 1 + 0.8 * np.clip(np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3)), 0, None)
    elif kind == "siren":  # held out: a tone sweeping up and down, with harmonics
        f = rng.uniform(500, 900) * (1 + 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(0.2, 1.5) * t)) / 2)
        phase = 2 * np.pi * np.cumsum(f) / sr
        x = np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)
    elif kind == "engine":  # held out: firing harmonics with a wandering rate, over rumble
        f0 = rng.uniform(25, 60) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(np.sin(k * phase) / k ** rng.uniform(0.5, 1.2) for k in range(1, 25) if k * 60 < sr / 2)
        x = x + 0.5 * _band(_coloured(n, 2.0, rng), 20, 400, sr) / 20
    elif kind == "wind":  # held out: low-passed noise in gusts
        gust = np.clip(1 + np.cumsum(rng.standard_normal(n)) / np.sqrt(sr * 2), 0.1, None)
        x = _band(_coloured(n, 1.0, rng), 20, rng.uniform(300, 1200), sr) * gust
    elif kind == "beeps":  # held out: alarm / call-progress tones switching on and off
        on = (np.sin(2 * np.pi * rng.uniform(0.5, 4) * t) > rng.uniform(-0.5, 0.5)).astype(float)
        x = on * (np.sin(2 * np.pi * rng.uniform(350, 1000) * t) + np.sin(2 * np.pi * rng.uniform(1000, 2500) * t))
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return x / (np.max(np.abs(x)) + 1e-9) * 0.5


NOISE_KINDS = ("white", "pink", "brown", "blue", "hum", "fan", "clicks", "rain", "traffic")
# Kinds augmentation never generates: the degraded test condition (corpus/degrade.py) uses them.
HELDOUT_NOISE_KINDS = ("siren", "engine", "wind", "beeps")


def make_music(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * sr)
    out = np.zeros(n)
    tonic = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    scales = ([0, 2, 4, 5, 7, 9, 11], [0, 2, 3, 5, 7, 8, 10], [0, 2, 4, 7, 9])  # major, minor, pentatonic
    scale = scales[int(rng.integers(len(scales)))]
    beat = 60.0 / rng.uniform(70, 160)
    harmonics = rng.uniform(0.1, 1.0, 8) / np.arange(1, 9) ** rng.uniform(0.5, 2.0)
    pos = 0.0
    while pos < seconds:
        dur = beat * rng.choice([0.5, 1, 1, 2])
        chord = [scale[i % len(scale)] + 12 * (i // len(scale)) for i in rng.integers(0, 14, rng.integers(1, 4))]
        start, m = int(pos * sr), int(dur * sr)
        tt = np.arange(min(m, n - start)) / sr
        env = np.minimum(tt / 0.01, 1.0) * np.exp(-tt / rng.uniform(0.2, 1.5))
        for semis in chord:
            f = tonic * 2 ** (semis / 12)
            out[start:start + len(tt)] += env * sum(
                a * np.sin(2 * np.pi * f * (k + 1) * tt) for k, a in enumerate(harmonics) if f * (k + 1) < sr / 2)
        pos += dur
    if rng.random() < 0.7:  # percussion on the beat
        for b in np.arange(0, seconds, beat):
            s = int(b * sr)
            k = min(int(0.08 * sr), n - s)
            out[s:s + k] += rng.uniform(0.3, 0.8) * rng.standard_normal(k) * np.exp(-np.arange(k) / (0.015 * sr))
    return out / (np.max(np.abs(out)) + 1e-9) * 0.5


def make_rir(sr: int, rng: np.random.Generator, rt60_range: tuple[float, float] = (0.2, 0.9)) -> np.ndarray:
    """A mono room impulse response, unit energy, direct path first."""
    rt60 = rng.uniform(*rt60_range)
    length = int(min(1.5, 1.2 * rt60) * sr)
    rir = np.zeros(length)
    delay = int(rng.uniform(0.002, 0.012) * sr)  # source distance 0.7-4 m
    rir[delay] = 1.0
    # Early reflections: sparse, within 50 ms of the direct path, decaying.
    for _ in range(int(rng.integers(6, 20))):
        d = delay + int(rng.uniform(0.001, 0.05) * sr)
        if d < length:
            rir[d] += rng.choice([-1, 1]) * rng.uniform(0.1, 0.7) * np.exp(-(d - delay) / sr * 6.9 / rt60)
    # Diffuse tail: band-wise exponential decay, faster above 2 kHz (air and wall absorption).
    t = np.arange(length) / sr
    onset = np.clip((t - delay / sr) / 0.02, 0, 1)
    tail = np.zeros(length)
    for (lo, hi), factor in (((60, 500), 1.1), ((500, 2000), 1.0), ((2000, 7000), 0.6)):
        noise = _band(rng.standard_normal(length), lo, min(hi, sr / 2 * 0.95), sr)
        tail += noise * np.exp(-6.9 * t / (rt60 * factor))
    drr = 10 ** (rng.uniform(-3, 8) / 10)  # direct-to-reverberant energy ratio, -3..8 dB
    tail *= np.sqrt(np.sum(rir**2) / (drr * np.sum((tail * onset) ** 2) + 1e-12))
    rir += tail * onset
    return rir / np.sqrt(np.sum(rir**2))
