"""Augmentation resources as lhotse RecordingSets.

The resources are what online augmentation draws from: MUSAN and RIRS_NOISES through lhotse's
recipes when the user gives them, otherwise generated stand-ins and, for babble, up to
BABBLE_RECORDINGS of the training recordings.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import Recording, RecordingSet

from voxadapt.augment.generate import NOISE_KINDS, make_music, make_noise, make_rir
from voxadapt.config import AugmentConfig
from voxadapt.errors import DataError, located
from voxadapt.fileio import atomic_path

MIN_RIR_SECONDS = 0.001
# Babble mixes 3-8 recordings at a time: 10,000 recordings are plenty (MUSAN speech has 426
# files), and every training worker holds the pool.
BABBLE_RECORDINGS = 10_000


def babble_recordings(recordings: Path, seed: int) -> list[Recording]:
    """A seeded sample of up to BABBLE_RECORDINGS of a recordings manifest, in manifest order."""
    with gzip.open(recordings, "rt") as f:
        count = sum(1 for _ in f)
    keep = np.zeros(count, dtype=bool)
    keep[np.random.default_rng(seed).permutation(count)[:BABBLE_RECORDINGS]] = True
    with gzip.open(recordings, "rt") as f:
        return [Recording.from_dict(json.loads(line)) for line, k in zip(f, keep) if k]


def build_resources(cfg: AugmentConfig, audio_dir: Path, sr: int,
                    train_recordings: Iterable[Recording]) -> dict[str, RecordingSet]:
    """noise, music, speech (babble) and rir recordings, checked; generated audio goes to `audio_dir`."""
    if cfg.musan_root:
        sets = _musan(Path(cfg.musan_root))
    else:
        sets = _generated_noise_music(cfg, audio_dir, sr)
        # Babble from the training speakers' own recordings (3-8 at a time, mixed online).
        sets["speech"] = RecordingSet.from_recordings(train_recordings)
    sets["rir"] = _rirs(Path(cfg.rirs_root)) if cfg.rirs_root else _generated_rirs(cfg, audio_dir, sr)
    _check_resources(sets, sr)
    return sets


def _musan(root: Path) -> dict[str, RecordingSet]:
    from lhotse.recipes.musan import scan_recordings

    out = {}
    for part in ("noise", "music", "speech"):
        if not (root / part).is_dir():
            raise DataError(located(root, None, f"not a MUSAN directory (no '{part}/' inside)",
                                    "give the directory that holds noise/, music/ and speech/"))
        out[part] = scan_recordings(root / part)
        if len(out[part]) == 0:
            raise DataError(located(root / part, None, "no .wav files", "unpack MUSAN completely"))
    return out


def _rirs(root: Path) -> RecordingSet:
    from lhotse.recipes.rir_noise import prepare_rir_noise

    parts = [p for p, d in (("sim_rir", "simulated_rirs"), ("real_rir", "real_rirs_isotropic_noises"))
             if (root / d).is_dir()]
    if not parts:
        raise DataError(located(root, None, "not an RIRS_NOISES directory (no simulated_rirs/ or "
                                "real_rirs_isotropic_noises/)", "give the unpacked RIRS_NOISES directory"))
    manifests = prepare_rir_noise(root, parts=parts)
    recordings = [r for p in parts for r in manifests[p]["recordings"]]
    if not recordings:
        raise DataError(located(root, None, "no RIR .wav files found", "unpack RIRS_NOISES completely"))
    return RecordingSet.from_recordings(recordings)


def _write_generated(out_dir: Path, name: str, audio: np.ndarray, sr: int) -> Recording:
    path = out_dir / f"{name}.wav"
    if not path.is_file():  # deterministic content: a file left by a killed run is complete and equal
        with atomic_path(path) as tmp:  # 24-bit PCM: float WAVs get a timestamped PEAK chunk (not reproducible)
            sf.write(tmp, np.clip(audio, -1.0, 1.0).astype(np.float32), sr, subtype="PCM_24", format="WAV")
    return Recording.from_file(path, recording_id=name)


def _rng(cfg: AugmentConfig, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *keys]))


def _generated_noise_music(cfg: AugmentConfig, audio_dir: Path, sr: int) -> dict[str, RecordingSet]:
    noise = []
    for i in range(cfg.generated_noises):
        kind = NOISE_KINDS[i % len(NOISE_KINDS)]
        audio = make_noise(kind, cfg.generated_seconds, sr, _rng(cfg, 1, i))
        noise.append(_write_generated(audio_dir / "noise", f"noise-{kind}-{i:03d}", audio, sr))
    music = [_write_generated(audio_dir / "music", f"music-{i:03d}", make_music(cfg.generated_seconds, sr, _rng(cfg, 2, i)), sr)
             for i in range(cfg.generated_music)]
    return {"noise": RecordingSet.from_recordings(noise), "music": RecordingSet.from_recordings(music)}


def _generated_rirs(cfg: AugmentConfig, audio_dir: Path, sr: int) -> RecordingSet:
    return RecordingSet.from_recordings(
        _write_generated(audio_dir / "rir", f"rir-{i:04d}", make_rir(sr, _rng(cfg, 3, i)), sr)
        for i in range(cfg.generated_rirs))


def _check_resources(sets: dict[str, RecordingSet], sr: int) -> None:
    for kind, recs in sets.items():
        if len(recs) == 0:
            raise DataError(f"the {kind} resource set is empty; give a complete corpus or drop '{kind}' "
                            "from augment.weights")
        for r in recs:
            path = r.sources[0].source
            if r.sampling_rate != sr:
                raise DataError(located(path, None, f"{kind} audio at {r.sampling_rate} Hz, data is {sr} Hz",
                                        "resample the corpus to the data's rate"))
            if kind == "rir" and r.duration < MIN_RIR_SECONDS:
                raise DataError(located(path, None, f"RIR only {r.duration * 1000:.2f} ms long (minimum 1 ms)",
                                        "remove it from the RIR directory"))
