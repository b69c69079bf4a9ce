"""The Python API: load a packaged model, embed audio, verify two recordings.

    import voxadapt
    model = voxadapt.load("exp/mhfa_tiny/package")
    result = model.verify("a.wav", "b.wav")        # score, llr, accept at the packaged threshold
    vector = model.embed("a.wav")                  # or a (samples,) float array at model.sample_rate
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from voxadapt.backend.calibration import bayes_threshold, load_calibrations
from voxadapt.backend.scoring import Backend, Embeddings, score_trials
from voxadapt.data.trials import Trial
from voxadapt.embed import embed_waveforms
from voxadapt.errors import VoxadaptError
from voxadapt.package import load_speaker_model, read_manifest


@dataclass(frozen=True)
class Verification:
    score: float  # the back-end's raw score
    llr: float  # calibrated log-likelihood ratio
    accept: bool  # llr >= threshold
    threshold: float  # the Bayes threshold on the LLR for p_target
    method: str
    p_target: float


def load_audio(path: str | Path, sample_rate: int, channel: int | None = None, allow_upsample: bool = False) -> np.ndarray:
    """Any format soundfile reads, as mono float32 at `sample_rate` (higher rates are resampled)."""
    path = Path(path)
    if not path.is_file():
        raise VoxadaptError(f"{path}: audio file not found")
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - soundfile raises several kinds for bad files
        raise VoxadaptError(f"{path}: not readable audio ({str(err).splitlines()[0]}); give WAV, FLAC or OGG") from None
    if audio.shape[1] > 1:
        if channel is None:
            raise VoxadaptError(f"{path}: {audio.shape[1]} channels; pick one with --channel N (0-based)")
        if not 0 <= channel < audio.shape[1]:
            raise VoxadaptError(f"{path}: no channel {channel} (it has {audio.shape[1]})")
    x = audio[:, channel or 0]
    if sr < sample_rate and not allow_upsample:
        raise VoxadaptError(f"{path}: {sr} Hz audio, the model expects {sample_rate} Hz and nothing above "
                            f"{sr // 2} Hz is there; pass --allow-upsample to resample it anyway")
    if sr != sample_rate:
        g = np.gcd(sr, sample_rate)
        x = resample_poly(x, sample_rate // g, sr // g).astype(np.float32)
    if len(x) < sample_rate // 10:
        raise VoxadaptError(f"{path}: only {len(x) / sample_rate:.3f} s of audio; need at least 0.1 s")
    return x


class SpeakerVerifier:
    def __init__(self, path: str | Path, device: str = "cpu", method: str | None = None, batch_seconds: float = 200.0):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.model, self.cfg = load_speaker_model(self.path, self.manifest, device)
        self.device, self.sample_rate = device, int(self.manifest["sample_rate"])
        self.method = method or self.manifest["default_method"]
        if self.method not in self.manifest["methods"]:
            raise VoxadaptError(f"method '{self.method}' is not in this package ({', '.join(self.manifest['methods'])})")
        self.backend = Backend.load(self.path / "backend")
        self.calibrations = load_calibrations(self.path / "calibration.json")
        self.cfg.extract.batch_seconds = max(batch_seconds, self.cfg.extract.max_chunk_seconds)

    def _waveform(self, x: str | Path | np.ndarray, channel: int | None, allow_upsample: bool) -> np.ndarray:
        if isinstance(x, np.ndarray):
            if x.ndim != 1:
                raise VoxadaptError(f"give a mono waveform of shape (samples,), not {x.shape}")
            return x.astype(np.float32)
        return load_audio(x, self.sample_rate, channel, allow_upsample)

    def embed_many(self, items: list[str | Path | np.ndarray], channel: int | None = None,
                   allow_upsample: bool = False) -> np.ndarray:
        wavs = [self._waveform(x, channel, allow_upsample) for x in items]
        return embed_waveforms(self.model, wavs, self.sample_rate, self.cfg.extract, self.device)

    def embed(self, item: str | Path | np.ndarray, channel: int | None = None, allow_upsample: bool = False) -> np.ndarray:
        """A waveform at model.sample_rate, or a file path -> the embedding (float32)."""
        return self.embed_many([item], channel, allow_upsample)[0]

    def verify(self, a: str | Path | np.ndarray, b: str | Path | np.ndarray, p_target: float = 0.01,
               channel: int | None = None, allow_upsample: bool = False) -> Verification:
        wavs = [self._waveform(x, channel, allow_upsample) for x in (a, b)]
        emb = Embeddings(["a", "b"], embed_waveforms(self.model, wavs, self.sample_rate, self.cfg.extract, self.device))
        score = float(score_trials(self.backend, emb, [Trial("a", "b", False)], [self.method],
                                   self.manifest["asnorm_top_n"])[self.method][0])
        cal = self.calibrations[self.method]
        durations = sorted(len(w) / self.sample_rate for w in wavs)
        quality = np.log(np.array([durations])) if cal.quality else None
        llr = float(cal.llr(np.array([score]), quality)[0])
        threshold = bayes_threshold(p_target)
        return Verification(score, llr, llr >= threshold, threshold, self.method, p_target)


def load(path: str | Path, device: str = "cpu", method: str | None = None) -> SpeakerVerifier:
    return SpeakerVerifier(path, device, method)
