"""The degraded test condition: a copy of a test set whose every utterance went through one
condition the model never trained on, so its trial lists measure robustness on the same trials.

  room       a generated room with a longer reverberation time than any training room
  noise      a noise kind kept out of augmentation (siren, engine, wind, beeps) at 0-10 dB SNR
  telephone  300-3400 Hz, 8 kHz, G.711 mu-/A-law or GSM 6.10, back to the data's rate
  codec      MP3, Vorbis or Opus at a low bit rate

Each utterance's condition and draws come from (seed, its index in sorted order): one seed gives
the same audio. The copy keeps utterance ids, speakers, trial lists and enroll.map; utt2condition
says which condition each utterance got.
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from voxadapt.augment.channel import lossy_codec, telephone
from voxadapt.augment.generate import HELDOUT_NOISE_KINDS, make_noise, make_rir
from voxadapt.augment.online import add_at_snr, reverberate
from voxadapt.config.data import DegradedConfig
from voxadapt.corpus.synthetic import seeded_rng
from voxadapt.data.audio import read_audio
from voxadapt.data.kaldi_dir import DataDir, read_key_values, tables_digest, write_table
from voxadapt.fileio import atomic_path, recipe_path, write_text_atomic
from voxadapt.layout import DegradedSetLayout, enroll_map, trial_lists

log = logging.getLogger(__name__)


def conditions(set_dir: Path) -> dict[str, str] | None:
    """Each utterance's condition ('noise:siren:3.2dB') of a degraded copy; None for any other set."""
    path = DegradedSetLayout(set_dir).utt2condition
    if not path.is_file():
        return None
    return dict(zip(*read_key_values(path)))


def degrade(x: np.ndarray, sr: int, condition: str, cfg: DegradedConfig, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """`x` through `condition`; returns the audio and what was applied (e.g. 'noise:siren:3.2dB')."""
    x = x.astype(np.float32)
    if condition == "room":
        rir = make_rir(sr, rng, (cfg.rt60[0], cfg.rt60[1]))
        return reverberate(x, rir, normalize=True), "room"
    if condition == "noise":
        kind = str(rng.choice(HELDOUT_NOISE_KINDS))
        snr = float(rng.uniform(*cfg.noise_snr))
        noise = make_noise(kind, len(x) / sr + 0.01, sr, rng)[: len(x)]
        return add_at_snr(x, noise, snr), f"noise:{kind}:{snr:.1f}dB"
    if condition == "telephone":
        y, codec = telephone(x, sr, rng)
        return y, f"telephone:{codec}"
    y, codec = lossy_codec(x, sr, rng, (cfg.codec_compression[0], cfg.codec_compression[1]))
    return y, f"codec:{codec}"


@dataclass(frozen=True)
class _Job:
    index: int
    rx: str  # the utterance's recording, and its segment (end -1: to the end)
    start: float
    end: float
    condition: str
    out: Path


def _degrade_one(job: _Job, cfg: DegradedConfig, sr: int) -> str:
    sidecar = job.out.with_suffix(".json")
    if job.out.is_file() and sidecar.is_file():  # written by an earlier (killed) run with the same settings
        return str(json.loads(sidecar.read_text())["applied"])
    audio, _ = read_audio(job.rx, job.start, job.end)
    y, applied = degrade(audio[0], sr, job.condition, cfg, seeded_rng(cfg.seed, job.index))
    peak = float(np.max(np.abs(y)))
    if peak > 0.99:  # keep 16-bit FLAC from clipping
        y = y * (0.99 / peak)
    write_text_atomic(sidecar, json.dumps({"applied": applied}) + "\n")
    with atomic_path(job.out) as tmp:
        sf.write(tmp, y, sr, format="FLAC", subtype="PCM_16")
    return applied


def make_degraded_set(src: Path, dst: Path, cfg: DegradedConfig, sr: int, nj: int = 1) -> DataDir:
    """Write the degraded copy of data dir `src` to `dst` (audio in dst/flac/); resumable: files of a
    killed run made with the same settings are kept, of other settings removed."""
    d = DataDir.load(src)
    # The source's tables, not its path: a recipe moved with its data/ keeps its copy.
    settings = json.dumps({"config": asdict(cfg), "source": tables_digest(src), "sample_rate": sr}, sort_keys=True)
    layout = DegradedSetLayout(dst)
    audio_dir, stamp = layout.audio, layout.settings
    if dst.exists() and (not stamp.is_file() or stamp.read_text() != settings):
        shutil.rmtree(dst)  # a partial copy made with other settings: nothing in it is reusable
    audio_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stamp, settings)
    utts = d.utterance_ids
    order = seeded_rng(cfg.seed, 1_000_000).permutation(len(utts))
    conditions = {utts[i]: cfg.conditions[k % len(cfg.conditions)] for k, i in enumerate(order)}
    jobs = []
    for i, u in enumerate(utts):
        seg = d.segments[u] if d.segments is not None else None
        jobs.append(_Job(i, d.wav_scp[d.recording_of(u)], seg.start if seg else 0.0, seg.end if seg else -1.0,
                         conditions[u], layout.utterance_audio(u)))
    log.info("degrading %d utterances of %s (%s) into %s", len(utts), src, ", ".join(cfg.conditions), dst)
    work = partial(_degrade_one, cfg=cfg, sr=sr)
    if nj <= 1:
        applied = [work(j) for j in jobs]
    else:
        with ProcessPoolExecutor(nj) as pool:
            applied = list(pool.map(work, jobs, chunksize=16))
    out = DataDir(dst, {u: recipe_path(layout.utterance_audio(u)) for u in utts}, dict(d.utt2spk))
    out.write()
    write_table(layout.utt2condition, zip(utts, applied))
    for f in [*trial_lists(src).values(), enroll_map(src)]:
        if f.is_file():
            shutil.copyfile(f, dst / f.name)
    return out
