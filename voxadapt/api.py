"""The Python API: load a packaged model, embed audio, verify two recordings.

    import voxadapt
    model = voxadapt.load("exp/mhfa_tiny/package")
    result = model.verify("a.wav", "b.wav")        # score, llr, accept at the packaged threshold
    vector = model.embed("a.wav")                  # or a (samples,) float array at model.sample_rate
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from voxadapt.backend.calibration import bayes_threshold, load_calibrations
from voxadapt.backend.quality import trial_quality
from voxadapt.backend.scoring import Backend, Embeddings, score_trials
from voxadapt.data.audio import is_pipe, read_audio
from voxadapt.data.trials import Trial
from voxadapt.data.validate import SILENCE_PEAK
from voxadapt.embed import embed_waveforms
from voxadapt.errors import VoxadaptError, first_line
from voxadapt.layout import PackageLayout
from voxadapt.models.loading import load_speaker_model
from voxadapt.package import read_manifest
from voxadapt.train.distributed import resolve_device

# The decision's prior when none is given: even odds, i.e. accept when the evidence favours the
# same speaker. NIST-style priors (0.01) need far stronger evidence than a small model gives.
DEFAULT_P_TARGET = 0.5


@dataclass(frozen=True)
class Verification:
    score: float  # the back-end's raw score
    llr: float  # calibrated log-likelihood ratio
    accept: bool  # llr >= threshold
    threshold: float  # the Bayes threshold on the LLR for p_target
    method: str
    p_target: float


def load_audio(source: str | Path, sample_rate: int, channel: int | None = None, allow_upsample: bool = False) -> np.ndarray:
    """A file soundfile reads, or a Kaldi pipe 'cmd |' (refused with VOXADAPT_NO_PIPES=1), as mono
    float32 at `sample_rate` (higher rates are resampled)."""
    if isinstance(source, str) and is_pipe(source):
        data, sr = read_audio(source)
        audio, path = data.T, source
    else:
        path = Path(source)
        if path.is_dir():
            raise VoxadaptError(f"{path}: is a directory; give audio files")
        if not path.is_file():
            raise VoxadaptError(f"{path}: audio file not found")
        try:
            audio, sr = sf.read(path, dtype="float32", always_2d=True)
        except Exception as err:  # noqa: BLE001 - soundfile raises several kinds for bad files
            raise VoxadaptError(f"{path}: not readable audio ({first_line(err)}); give WAV, FLAC or OGG") from None
    channels = audio.shape[1]
    if channel is None and channels > 1:
        raise VoxadaptError(f"{path}: {channels} channels; pick one with --channel N (0-based)")
    if channel is not None and not 0 <= channel < channels:
        raise VoxadaptError(f"{path}: no channel {channel} (it has {channels}: 0"
                            f"{f'-{channels - 1}' if channels > 1 else ''}); give a channel it has")
    x = audio[:, channel or 0]
    if sr < sample_rate and not allow_upsample:
        raise VoxadaptError(f"{path}: {sr} Hz audio, the model expects {sample_rate} Hz and nothing above "
                            f"{sr // 2} Hz is there; pass --allow-upsample to resample it anyway")
    if sr != sample_rate:
        g = np.gcd(sr, sample_rate)
        x = resample_poly(x, sample_rate // g, sr // g).astype(np.float32)
    return x


def check_waveform(x: np.ndarray, sample_rate: int, min_duration: float, what: str) -> np.ndarray:
    """The conditions every input meets before embedding, whether a file or an array: one mono
    float waveform, finite, not silent, at least the data dirs' minimum duration."""
    if x.ndim != 1:
        raise VoxadaptError(f"{what}: give a mono waveform of shape (samples,), not {x.shape}")
    if len(x) < min_duration * sample_rate:
        raise VoxadaptError(f"{what}: only {len(x) / sample_rate:.3f} s of audio at {sample_rate} Hz; "
                            f"need at least {min_duration} s")
    if not np.isfinite(x).all():
        raise VoxadaptError(f"{what}: the waveform has NaN or Inf samples; give finite values in [-1, 1]")
    if float(np.abs(x - x.mean()).max()) < SILENCE_PEAK:
        raise VoxadaptError(f"{what}: silent (no signal above one 16-bit step); give audio with speech")
    return x


class SpeakerVerifier:
    def __init__(self, path: str | Path, device: str = "cpu", method: str | None = None, batch_seconds: float = 200.0,
                 vad: bool | None = None):
        if not batch_seconds > 0:
            raise VoxadaptError(f"batch size {batch_seconds} s: give a positive number of seconds per batch")
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.device = str(resolve_device(device))
        loaded = load_speaker_model(self.path, self.device)
        self.model, self.cfg = loaded.model, loaded.cfg
        self.sample_rate = int(self.manifest["sample_rate"])
        self.min_duration = self.cfg.data.min_duration
        self.method = method or self.manifest["default_method"]
        if self.method not in self.manifest["methods"]:
            raise VoxadaptError(f"method '{self.method}' is not in this package ({', '.join(self.manifest['methods'])})")
        pkg = PackageLayout(self.path)
        self.backend = Backend.load(pkg.backend)
        self.calibrations = load_calibrations(pkg.calibration)
        if self.method not in self.calibrations:
            raise VoxadaptError(f"{pkg.calibration}: no calibration for '{self.method}'; re-package the model")
        self.cfg.extract.batch_seconds = max(batch_seconds, self.cfg.extract.max_chunk_seconds)
        if vad is not None:  # None: as the model's x-vectors were made (its config's extract.vad)
            self.cfg.extract.vad = vad

    def _waveform(self, x: str | Path | np.ndarray | Sequence[float], channel: int | None,
                  allow_upsample: bool) -> np.ndarray:
        if isinstance(x, (str, Path)):
            return check_waveform(load_audio(x, self.sample_rate, channel, allow_upsample), self.sample_rate,
                                  self.min_duration, str(x))
        try:
            wav = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            raise VoxadaptError(f"cannot use a {type(x).__name__} as audio; give a file path or a (samples,) "
                                f"float array at {self.sample_rate} Hz") from None
        return check_waveform(wav, self.sample_rate, self.min_duration, "waveform")

    def embed_many(self, items: list[str | Path | np.ndarray], channel: int | None = None,
                   allow_upsample: bool = False) -> np.ndarray:
        if isinstance(items, (str, Path, np.ndarray)):
            raise VoxadaptError("embed_many takes a list of files or waveforms; use embed() for one")
        if len(items) == 0:
            raise VoxadaptError("nothing to embed: give at least one file or waveform")
        wavs = [self._waveform(x, channel, allow_upsample) for x in items]
        return embed_waveforms(self.model, wavs, self.sample_rate, self.cfg.extract, self.device)

    def embed(self, item: str | Path | np.ndarray, channel: int | None = None, allow_upsample: bool = False) -> np.ndarray:
        """A waveform at model.sample_rate, or a file path -> the embedding (float32)."""
        return self.embed_many([item], channel, allow_upsample)[0]

    def verify(self, a: str | Path | np.ndarray, b: str | Path | np.ndarray, p_target: float = DEFAULT_P_TARGET,
               channel: int | None = None, allow_upsample: bool = False) -> Verification:
        threshold = bayes_threshold(p_target)  # checks p_target before any work
        wavs = [self._waveform(x, channel, allow_upsample) for x in (a, b)]
        emb = Embeddings(["a", "b"], embed_waveforms(self.model, wavs, self.sample_rate, self.cfg.extract, self.device))
        trials = [Trial("a", "b", False)]
        score = float(score_trials(self.backend, emb, trials, [self.method], self.manifest["asnorm_top_n"])[self.method][0])
        cal = self.calibrations[self.method]
        durations = {name: len(w) / self.sample_rate for name, w in zip(emb.ids, wavs)}
        quality = trial_quality(cal.form, trials, durations, self.backend, emb, self.manifest["asnorm_top_n"], "verify")
        llr = float(cal.llr(np.array([score]), quality)[0])
        return Verification(score, llr, llr >= threshold, threshold, self.method, p_target)


def load(path: str | Path, device: str = "cpu", method: str | None = None, vad: bool | None = None) -> SpeakerVerifier:
    return SpeakerVerifier(path, device, method, vad=vad)
