"""Transmission channels: a telephone line (300-3400 Hz band, 8 kHz sampling, a narrow-band speech
codec) and lossy compression (MP3, Vorbis, Opus), both through libsndfile's own encoders in memory,
so nothing outside the Python packages is needed."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfilt

TELEPHONE_CODECS = ("ULAW", "ALAW", "GSM610")  # G.711 mu-law and A-law, GSM full rate (WAV subtypes)
LOSSY_CODECS = {"mp3": ("MP3", "MPEG_LAYER_III"), "vorbis": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS")}


def _round_trip(x: np.ndarray, sr: int, fmt: str, subtype: str, compression: float | None = None) -> np.ndarray:
    """Encode and decode `x` (peak-normalised on the way, gain restored), same length as `x`."""
    peak = float(np.max(np.abs(x))) + 1e-9
    buf = io.BytesIO()
    sf.write(buf, (x / peak * 0.9).astype(np.float32), sr, format=fmt, subtype=subtype, compression_level=compression)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    y = y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))
    return (y * (peak / 0.9)).astype(np.float32)


def telephone(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Band-limit to 300-3400 Hz, go down to 8 kHz, through a telephone codec, and back up to `sr`."""
    codec = str(rng.choice(TELEPHONE_CODECS))
    y = sosfilt(butter(6, [300, 3400], "bandpass", fs=sr, output="sos"), x.astype(np.float64))
    narrow = _round_trip(resample_poly(y, 8000, sr).astype(np.float32), 8000, "WAV", codec)
    out = resample_poly(narrow, sr, 8000)[: len(x)]
    return np.pad(out, (0, len(x) - len(out))).astype(np.float32), codec.lower()


def lossy_codec(x: np.ndarray, sr: int, rng: np.random.Generator,
                compression: tuple[float, float] = (0.5, 1.0)) -> tuple[np.ndarray, str]:
    """MP3, Vorbis or Opus at a compression level drawn from `compression` (0: best quality, 1: the
    lowest bit rate libsndfile offers)."""
    name = str(rng.choice(sorted(LOSSY_CODECS)))
    fmt, subtype = LOSSY_CODECS[name]
    return _round_trip(x, sr, fmt, subtype, float(rng.uniform(*compression))), name
