"""What every waveform goes through before it is embedded (stage 5, the API, validation during
training): optional energy-based voice activity detection, then level normalisation.

The VAD follows Kaldi's compute-vad (25 ms frames every 10 ms, log energy, a frame is speech when
enough of its +-2 neighbours are) with one change: the threshold lies midway (in dB) between the
background level (10th percentile of frame energies) and the speech level (95th percentile), at
least 6 dB above the background, instead of at a share of the mean energy, which a long silence
drags down into the noise.
"""

from __future__ import annotations

import numpy as np

from voxadapt.config import ExtractConfig

FRAME_SECONDS, SHIFT_SECONDS = 0.025, 0.010
CONTEXT_FRAMES, PROPORTION = 2, 0.6  # Kaldi's vad-frames-context and vad-proportion-threshold
FLOOR_DBFS = -70.0  # below this a frame is never speech


def speech_mask(x: np.ndarray, sr: int) -> np.ndarray:
    """A boolean per sample: inside a frame judged to be speech."""
    frame, shift = int(FRAME_SECONDS * sr), int(SHIFT_SECONDS * sr)
    if len(x) < frame:
        return np.ones(len(x), dtype=bool)
    starts = np.arange(0, len(x) - frame + 1, shift)
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    power = (energy[starts + frame] - energy[starts]) / frame
    db = 10 * np.log10(np.maximum(power, 1e-12))
    background, speech = np.percentile(db, 10), np.percentile(db, 95)
    loud = db > max(background + max(6.0, (speech - background) / 2), FLOOR_DBFS)
    padded = np.pad(loud.astype(float), CONTEXT_FRAMES)
    window = 2 * CONTEXT_FRAMES + 1
    voiced = np.convolve(padded, np.ones(window) / window, mode="valid") >= PROPORTION
    mask = np.zeros(len(x), dtype=bool)
    for s in starts[voiced]:
        mask[s:s + frame] = True
    return mask


def normalize_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale to an RMS of `dbfs` decibels relative to full scale (an all-zero input stays zero)."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0
    return x if rms == 0.0 else (x * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def condition(x: np.ndarray, sr: int, opts: ExtractConfig) -> np.ndarray:
    """VAD (when on; the whole input if it finds under 0.2 s of speech), then level normalisation."""
    if opts.vad:
        mask = speech_mask(x, sr)
        if mask.sum() >= 0.2 * sr:
            x = x[mask]
    return normalize_level(x, opts.level_dbfs) if opts.level_dbfs is not None else x
