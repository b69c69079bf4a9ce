"""The Python API: load a packaged model, embed audio, verify two recordings.

    import voxadapt
    model = voxadapt.load("exp/mhfa_tiny/package")
    result = model.verify("a.wav", "b.wav")        # score, llr, accept at the packaged threshold
    vector = model.embed("a.wav")                  # a file (WAV, FLAC, OGG, MP3) or a Kaldi pipe 'cmd |'
    vector = model.embed(x, sample_rate=44100)     # or a (samples,) float array with its rate (resampled)
    model.verify(vector, other_vector)             # embeddings made by this model work too
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
from voxadapt.data.audio import SILENCE_STEPS, is_pipe, near_silent, read_audio
from voxadapt.data.trials import Trial
from voxadapt.embed import embed_waveforms
from voxadapt.errors import VoxadaptError, first_line
from voxadapt.layout import PackageLayout, package_dir
from voxadapt.models.loading import load_speaker_model
from voxadapt.package import read_manifest
from voxadapt.train.distributed import resolve_device

# The decision's prior when none is given: even odds, i.e. accept when the evidence favours the
# same speaker. NIST-style priors (0.01) need far stronger evidence than a small model gives.
DEFAULT_P_TARGET = 0.5


@dataclass(frozen=True)
class OptionNames:
    """How errors name the settings a caller can change: the API's arguments, or the command's options."""

    channel: str = "channel=N"
    allow_upsample: str = "allow_upsample=True"
    sample_rate: str = "sample_rate=SR"


API_OPTIONS = OptionNames()


@dataclass(frozen=True)
class Verification:
    score: float  # the back-end's raw score
    llr: float  # calibrated log-likelihood ratio
    accept: bool  # llr >= threshold
    threshold: float  # the Bayes threshold on the LLR for p_target
    method: str
    p_target: float


def load_audio(source: str | Path, sample_rate: int, channel: int | None = None, allow_upsample: bool = False,
               options: OptionNames = API_OPTIONS) -> np.ndarray:
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
            where = "" if path.is_absolute() else f" (a relative path: read from {Path.cwd()}, where this runs)"
            raise VoxadaptError(f"{path}: audio file not found{where}")
        try:
            audio, sr = sf.read(path, dtype="float32", always_2d=True)
        except Exception as err:  # noqa: BLE001 - soundfile raises several kinds for bad files
            raise VoxadaptError(f"{path}: not readable audio ({first_line(err)}); give WAV, FLAC, OGG or MP3") from None
    channels = audio.shape[1]
    if channel is None and channels > 1:
        raise VoxadaptError(f"{path}: {channels} channels; pick one with {options.channel} (0-based)")
    if channel is not None and not 0 <= channel < channels:
        raise VoxadaptError(f"{path}: no channel {channel} (it has {channels}: 0"
                            f"{f'-{channels - 1}' if channels > 1 else ''}); give a channel it has")
    return to_rate(audio[:, channel or 0], sr, sample_rate, allow_upsample, str(path), options)


def to_rate(x: np.ndarray, sr: int, sample_rate: int, allow_upsample: bool, what: str,
            options: OptionNames = API_OPTIONS) -> np.ndarray:
    """`x` at `sr` Hz resampled to `sample_rate`; a lower rate only with `allow_upsample` (its top band is empty)."""
    if sr < sample_rate and not allow_upsample:
        raise VoxadaptError(f"{what}: {sr} Hz audio, the model expects {sample_rate} Hz and nothing above "
                            f"{sr // 2} Hz is there; pass {options.allow_upsample} to resample it anyway")
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
    if near_silent(x):
        raise VoxadaptError(f"{what}: silent (no sample {SILENCE_STEPS} 16-bit steps from its mean: digital silence "
                            "or dither); give audio with speech")
    return x


class SpeakerVerifier:
    """A packaged model: `embed` audio, `verify` two recordings (or embeddings) against each other."""

    def __init__(self, path: str | Path, device: str = "cpu", method: str | None = None, batch_seconds: float = 200.0,
                 vad: bool | None = None, options: OptionNames = API_OPTIONS):
        if not batch_seconds > 0:
            raise VoxadaptError(f"batch size {batch_seconds} s: give a positive number of seconds per batch")
        self.path = package_dir(path)
        self.options = options
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

    @property
    def embedding_size(self) -> int:
        return len(self.backend.mean)

    def waveform(self, x: str | Path | np.ndarray | Sequence[float], channel: int | None = None,
                 allow_upsample: bool = False, sample_rate: int | None = None) -> np.ndarray:
        """A file, a Kaldi pipe 'cmd |', or a (samples,) array at `sample_rate` Hz -> the checked mono
        waveform at the model's rate: long enough, finite, not silent."""
        if isinstance(x, (str, Path)):
            return check_waveform(load_audio(x, self.sample_rate, channel, allow_upsample, self.options), self.sample_rate,
                                  self.min_duration, str(x))
        try:
            wav = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            raise VoxadaptError(f"cannot use a {type(x).__name__} as audio; give a file path or a (samples,) "
                                f"float array with its {self.options.sample_rate}") from None
        if sample_rate is None:  # guessing would embed a 44.1 kHz array as 16 kHz speech, slowed and deepened
            raise VoxadaptError(f"waveform: give the array's rate with {self.options.sample_rate} (e.g. "
                                f"sample_rate={self.sample_rate}); it is resampled to the model's {self.sample_rate} Hz")
        if wav.ndim == 1:
            wav = to_rate(wav, int(sample_rate), self.sample_rate, allow_upsample, "waveform", self.options)
        return check_waveform(wav, self.sample_rate, self.min_duration, "waveform")

    def embed_many(self, items: list[str | Path | np.ndarray], channel: int | None = None,
                   allow_upsample: bool = False, sample_rate: int | None = None) -> np.ndarray:
        """Embeddings (N, embedding_size) float32 of files, Kaldi pipes or arrays, embedded in batches.

        channel: the channel of multi-channel files (0-based; needed for them). allow_upsample: accept
        audio below the model's rate. sample_rate: the rate of the arrays (needed for arrays; files
        carry theirs). Any input that cannot be embedded raises VoxadaptError naming it.
        """
        if isinstance(items, (str, Path, np.ndarray)):
            raise VoxadaptError("embed_many takes a list of files or waveforms; use embed() for one")
        if len(items) == 0:
            raise VoxadaptError("nothing to embed: give at least one file or waveform")
        wavs = [self.waveform(x, channel, allow_upsample, sample_rate) for x in items]
        return embed_waveforms(self.model, wavs, self.sample_rate, self.cfg.extract, self.device)

    def embed(self, item: str | Path | np.ndarray, channel: int | None = None, allow_upsample: bool = False,
              sample_rate: int | None = None) -> np.ndarray:
        """A file path, a Kaldi pipe 'cmd |', or a (samples,) float array with its `sample_rate`
        -> the embedding (float32, embedding_size); see embed_many for the arguments."""
        return self.embed_many([item], channel, allow_upsample, sample_rate)[0]

    def _embedding(self, x: str | Path | np.ndarray | Sequence[float]) -> np.ndarray | None:
        """`x` as an embedding of this model when it is one (a 1-D array of embedding_size numbers: far
        shorter than any audio the model takes), else None."""
        if isinstance(x, (str, Path)):
            return None
        try:
            vec = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            return None
        if vec.ndim != 1 or len(vec) != self.embedding_size:
            return None
        if not np.isfinite(vec).all():
            raise VoxadaptError("embedding: has NaN or Inf values; give one made by this model's embed()")
        return vec

    def verify(self, a: str | Path | np.ndarray, b: str | Path | np.ndarray, p_target: float = DEFAULT_P_TARGET,
               channel: int | None = None, allow_upsample: bool = False, sample_rate: int | None = None,
               durations: tuple[float, float] | None = None) -> Verification:
        """Do `a` and `b` come from the same speaker? Each is a file path, a Kaldi pipe, a (samples,)
        array with its `sample_rate`, or an embedding of this model (from embed()).

        p_target: the prior of a same-speaker trial for the decision (the default accepts when the
        LLR is positive). channel, allow_upsample: as for embed_many. durations: seconds of speech
        of (a, b), needed only for embeddings when the package's calibration uses durations (audio
        gives its own). Returns the score, the calibrated LLR and the decision.
        """
        threshold = bayes_threshold(p_target)  # checks p_target before any work
        sides = [self._embedding(x) for x in (a, b)]
        wavs = {i: self.waveform(x, channel, allow_upsample, sample_rate) for i, x in enumerate((a, b)) if sides[i] is None}
        if wavs:
            made = embed_waveforms(self.model, list(wavs.values()), self.sample_rate, self.cfg.extract, self.device)
            sides = [made[list(wavs).index(i)] if i in wavs else vec for i, vec in enumerate(sides)]
        cal = self.calibrations[self.method]
        if durations is None and len(wavs) < 2 and cal.quality:
            raise VoxadaptError(f"this package's calibration ({cal.form}) needs the duration of each side: give "
                                "durations=(seconds_a, seconds_b) with embeddings")
        seconds = list(durations) if durations is not None else [len(wavs.get(i, ())) / self.sample_rate for i in (0, 1)]
        emb = Embeddings(["a", "b"], np.stack(sides))
        trials = [Trial("a", "b", False)]
        score = float(score_trials(self.backend, emb, trials, [self.method], self.manifest["asnorm_top_n"])[self.method][0])
        quality = trial_quality(cal.form, trials, dict(zip(emb.ids, seconds)), self.backend, emb,
                                self.manifest["asnorm_top_n"], "verify")
        llr = float(cal.llr(np.array([score]), quality)[0])
        return Verification(score, llr, llr >= threshold, threshold, self.method, p_target)


def load(path: str | Path, device: str = "cpu", method: str | None = None, vad: bool | None = None) -> SpeakerVerifier:
    """The packaged model at `path` (exp/<name>/package, or the experiment exp/<name> holding one)."""
    return SpeakerVerifier(path, device, method, vad=vad)
