"""The embedded corpus: pseudo-speakers rendered by espeak-ng, generated on the machine.

Each pseudo-speaker is one consistent voice drawn from distributions that mirror how people
differ: sex-dependent pitch and pitch range, vocal-tract length (all formants scaled together,
with a little per-formant spread), speaking rate, and voice quality (breathiness, voicing
strength, consonant strength, and the Klatt glottal source for some).
Each utterance varies around its speaker: random text, rate and pitch jitter, loudness, a gentle
channel colouring (high-pass, one peaking EQ band) and a faint noise floor.
Everything is drawn from seeded generators: one seed gives byte-identical audio.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfilt, tf2sos

from voxadapt.config import DataConfig, SyntheticConfig
from voxadapt.corpus.espeak import Espeak, make_data_root
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import make_trials, write_trials
from voxadapt.fileio import atomic_path, recipe_path
from voxadapt.layout import trial_list

log = logging.getLogger(__name__)

WORDS = """
about above across after again against air all almost along also always among animal another
answer any apple area around ask away baby back ball bank bear beautiful became because become bed
been before began begin behind being below best better between big bird black blue boat body book
both bottom box boy bread bring brother brown build burn busy buy call came can car care carry
cat center certain change child children city class clean clear close cloud cold color come common
complete contain cook cool corner could country course cover cross cry cut dark day deep did
different dinner direct do doctor dog door down draw dream dress drink drive dry during each early
earth east easy eat edge egg eight end enough even evening ever every example eye face fact fall
family far farm fast father feel few field fill final find fine fire first fish five floor flower
fly follow food foot for forest form found four free friend from front full game garden gave get
girl give glass go gold good got grass great green ground group grow half hand happy hard has have
head hear heart heavy help her here high hill him his hold home horse hot hour house how hundred
idea important inch island just keep kind king kitchen knew know lake land large last late laugh
lead learn leave left less letter life light like line list listen little live long look love low
made make man many map mark market may mean measure meet men middle might mile milk mind minute miss
money month moon morning mother mountain move much music must name near need never new next night
north nothing notice now number ocean office often old once only open order other our outside over
page paper park part party pass people person picture piece place plan plant play point poor power
present problem pull push put question quick quiet rain ran reach read ready real red remember rest
river road rock room round rule run said same saw say school sea second see seem sentence set seven
shape ship short should show side simple since sing sister sit six size sleep slow small snow so
some song soon sound south space speak special spring square stand star start station stay step
still stone stop story street strong study such summer sun sure table take talk teacher tell ten
than thank that their them then there these thing think those though thought three through time
today together told took top touch town train travel tree true try turn two under until upon use
usual valley very visit voice wait walk wall want warm was watch water wave way weather week well
went west what wheel when where which while white whole why wide wild will wind window winter wish
with without woman wonder wood word work world would write year yellow yes young
""".split()

_VOICE = "en-us"  # the phoneme set; the variant file gives each pseudo-speaker its voice


@dataclass(frozen=True)
class VoiceProfile:
    """One pseudo-speaker, rendered as an espeak-ng variant file."""

    name: str
    sex: str
    pitch_low: int  # Hz
    pitch_high: int  # Hz
    formant_scale: tuple[float, ...]  # frequency factor for formants 0..8 (vocal-tract length)
    formant_height: tuple[float, ...]  # strength for formants 1..5
    rate_wpm: float
    breath: int
    voicing: int
    consonants: int
    klatt: int  # 0: espeak's own glottal source; 1..3: Klatt source variants

    def variant_file(self) -> str:
        lines = ["language variant", f"name {self.name}", f"gender {self.sex}",
                 f"pitch {self.pitch_low} {self.pitch_high}"]
        for i, scale in enumerate(self.formant_scale):
            height = self.formant_height[i - 1] if 1 <= i <= len(self.formant_height) else 1.0
            lines.append(f"formant {i} {round(100 * scale)} {round(100 * height)} 100")
        if self.breath:
            b = self.breath
            lines.append(f"breath 0 {b} {b + 1} {b + 1} {b + 1} {b + 1} {b + 1} {b}")
        # flutter and roughness keep state across calls in espeak-ng: off, for reproducible audio.
        lines += ["flutter 0", "roughness 0", f"voicing {self.voicing}",
                  f"consonants {self.consonants} {self.consonants}"]
        if self.klatt:
            lines.append(f"klatt {self.klatt}")
        return "\n".join(lines) + "\n"


def seeded_rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


def draw_voice(name: str, rng: np.random.Generator) -> VoiceProfile:
    sex = "female" if rng.random() < 0.5 else "male"
    if sex == "male":
        base = float(np.clip(rng.normal(102, 16), 70, 150))
        vtl = float(np.clip(rng.normal(0.97, 0.035), 0.86, 1.07))
    else:
        base = float(np.clip(rng.normal(195, 24), 140, 270))
        vtl = float(np.clip(rng.normal(1.12, 0.04), 1.0, 1.25))
    spread = rng.uniform(0.25, 0.75)
    formant_scale = (1.0,) + tuple(float(vtl * rng.normal(1.0, 0.03)) for _ in range(5)) + (vtl,) * 3
    return VoiceProfile(
        name=name, sex=sex, pitch_low=round(base), pitch_high=round(base * (1 + spread)),
        formant_scale=formant_scale,
        formant_height=tuple(float(np.clip(rng.normal(1.0, 0.12), 0.7, 1.3)) for _ in range(5)),
        rate_wpm=float(np.clip(rng.normal(165, 20), 120, 220)),
        breath=int(rng.choice([0, 0, 0, 1, 2, 3])),
        voicing=int(np.clip(rng.normal(100, 12), 70, 130)),
        consonants=int(np.clip(rng.normal(100, 15), 60, 140)),
        klatt=int(rng.choice([0, 0, 0, 0, 1, 2, 3])),
    )


def _trim_silence(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    frame = sr // 100
    n = len(y) // frame
    if n == 0:
        return y
    energy = np.sqrt((y[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    active = np.flatnonzero(energy > energy.max() * 10 ** (-45 / 20))
    pad = int(rng.uniform(0.08, 0.25) * sr)
    return y[max(0, active[0] * frame - pad): min(len(y), (active[-1] + 1) * frame + pad)]


def _channel(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """High-pass, one peaking-EQ band, loudness and a faint noise floor: a different mic each time."""
    y = sosfilt(butter(2, rng.uniform(40, 140), "highpass", fs=sr, output="sos"), y)
    f0, gain_db, q = np.exp(rng.uniform(np.log(300), np.log(4500))), rng.uniform(-5, 5), rng.uniform(0.7, 2.0)
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a]
    y = sosfilt(tf2sos(b, den), y)
    rms = np.sqrt(np.mean(y**2)) + 1e-12
    y = y * (10 ** (rng.uniform(-32, -18) / 20) / rms)
    y = y + rng.normal(0, 10 ** (rng.uniform(-75, -60) / 20), len(y))
    return np.clip(y, -0.99, 0.99)


def render_utterance(engine: Espeak, voice: VoiceProfile, rng: np.random.Generator, cfg: SyntheticConfig,
                     sample_rate: int) -> np.ndarray:
    target = rng.uniform(cfg.min_duration, cfg.max_duration)
    rate = voice.rate_wpm * rng.normal(1.0, 0.06)
    pitch = int(np.clip(rng.normal(50, 6), 20, 80))
    pitch_range = int(np.clip(rng.normal(50, 12), 15, 90))
    words = list(rng.choice(WORDS, size=max(3, int(target * rate / 60))))
    for _ in range(12):
        text = " ".join(words)
        if len(words) > 8:
            text = text.replace(f" {words[len(words) // 2]} ", f" {words[len(words) // 2]}, ", 1)
        y = engine.synthesize(text + ".", f"{_VOICE}+{voice.name}", int(rate), pitch, pitch_range,
                              seed=int(rng.integers(1, 2**31)))
        y = _trim_silence(y.astype(np.float64) / 32768.0, engine.sample_rate, rng)
        if len(y) / engine.sample_rate >= cfg.min_duration + 0.1:
            break
        words += list(rng.choice(WORDS, size=3))
    y = resample_poly(y, sample_rate, engine.sample_rate)
    limit = int(cfg.max_duration * sample_rate)
    if len(y) > limit:
        y = y[:limit] * np.concatenate([np.ones(limit - 320), np.linspace(1, 0, 320)])
    return _channel(y, sample_rate, rng)


@dataclass(frozen=True)
class SpeakerJob:
    speaker: str
    index: int
    voice: VoiceProfile
    out_dir: Path
    utterances: int = 0  # 0: the config's utts_per_speaker


_engine: Espeak | None = None


def _init_worker(data_root: Path) -> None:
    global _engine
    _engine = Espeak(data_root)


def _render_speaker(job: SpeakerJob, cfg: SyntheticConfig, sample_rate: int) -> list[tuple[str, str]]:
    assert _engine is not None
    out = []
    spk_dir = job.out_dir / job.speaker
    spk_dir.mkdir(parents=True, exist_ok=True)
    for u in range(job.utterances or cfg.utts_per_speaker):
        utt = f"{job.speaker}-u{u:03d}"
        path = spk_dir / f"{utt}.wav"
        if not path.is_file():  # a file left by a killed run is complete (atomic rename) and identical
            y = render_utterance(_engine, job.voice, seeded_rng(cfg.seed, job.index, 1, u), cfg, sample_rate)
            with atomic_path(path) as tmp:
                sf.write(tmp, (y * 32767).astype(np.int16), sample_rate, subtype="PCM_16", format="WAV")
        out.append((utt, recipe_path(path)))
    return out


def speaker_jobs(prefix: str, indices: range, seed: int, audio_dir: Path) -> list[SpeakerJob]:
    """Pseudo-speakers '<prefix><index>', each voice drawn from (seed, index)."""
    return [SpeakerJob(f"{prefix}{i:04d}", i, draw_voice(f"vx{prefix}{i:04d}", seeded_rng(seed, i, 0)), audio_dir)
            for i in indices]


def render(jobs: list[SpeakerJob], cfg: SyntheticConfig, sample_rate: int, nj: int) -> dict[str, list[tuple[str, str]]]:
    """Render every job's utterances (skipping files already complete); speaker -> [(utt, path)]."""
    log.info("rendering %d speakers, %d utterances with espeak-ng (%d jobs)", len(jobs),
             sum(j.utterances or cfg.utts_per_speaker for j in jobs), nj)
    return dict(zip((j.speaker for j in jobs), _render_all(jobs, cfg, sample_rate, nj)))


# espeak-ng lists at most 349 voices in a data root, its own ~245 included: larger corpora
# are rendered in groups.
VOICES_PER_ROOT = 100


def _render_all(jobs: list[SpeakerJob], cfg: SyntheticConfig, sample_rate: int, nj: int) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for first in range(0, len(jobs), VOICES_PER_ROOT):
        out += _render_group(jobs[first:first + VOICES_PER_ROOT], cfg, sample_rate, nj)
    return out


def _render_group(jobs: list[SpeakerJob], cfg: SyntheticConfig, sample_rate: int, nj: int) -> list[list[tuple[str, str]]]:
    with tempfile.TemporaryDirectory(prefix="voxadapt-espeak-") as tmp:
        root = make_data_root(Path(tmp), {j.voice.name: j.voice.variant_file() for j in jobs})
        if nj <= 1:
            _init_worker(root)
            return [_render_speaker(j, cfg, sample_rate) for j in jobs]
        with ProcessPoolExecutor(nj, initializer=_init_worker, initargs=(root,)) as pool:
            futures = [pool.submit(_render_speaker, j, cfg, sample_rate) for j in jobs]
            return [f.result() for f in futures]


def generate_corpus(data: DataConfig, data_dir: Path, audio_dir: Path, nj: int = 1) -> dict[str, DataDir]:
    """Render train/dev/test speakers into `audio_dir` and write Kaldi data dirs + trial lists."""
    cfg = data.synthetic
    sets = {"train": cfg.num_train_speakers, "dev": cfg.num_dev_speakers, "test": cfg.num_test_speakers}
    jobs: dict[str, list[SpeakerJob]] = {}
    first = 0
    for name, count in sets.items():
        jobs[name] = speaker_jobs("spk", range(first, first + count), cfg.seed, audio_dir)
        if name == "test" and cfg.test_utts_per_speaker:
            jobs[name] = [dataclasses.replace(j, utterances=cfg.test_utts_per_speaker) for j in jobs[name]]
        first += count
    rendered = render([j for js in jobs.values() for j in js], cfg, data.sample_rate, nj)
    out: dict[str, DataDir] = {}
    for name, set_jobs in jobs.items():
        if not set_jobs:
            continue
        wav = {utt: path for j in set_jobs for utt, path in rendered[j.speaker]}
        utt2spk = {utt: j.speaker for j in set_jobs for utt, _ in rendered[j.speaker]}
        d = DataDir(data_dir / name, wav, utt2spk)
        d.write()
        if name != "train":
            n = cfg.num_trials if name == "test" else cfg.dev_trials
            rng = seeded_rng(cfg.seed, 10_000, {"dev": 1, "test": 2}[name])
            write_trials(trial_list(data_dir / name), make_trials(d.spk2utt, n, cfg.target_fraction, rng))
        out[name] = d
    return out
