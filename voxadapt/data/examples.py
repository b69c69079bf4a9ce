"""The training examples as compact columns, and a (speed-perturbed) random crop of one, read
through lhotse.

The table keeps what a crop needs in flat arrays (about 50 bytes per example plus each distinct
recording's audio source and length once), because millions of lhotse cut objects would not fit: 1.7 kB
each, 5.5 GB for VoxCeleb2 with speed perturbation. A crop is read by building the lhotse cut of
just that span, so lhotse does the audio work: files, commands ('... |', e.g. ffmpeg for m4a),
its Speed transform and resampling.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse import AudioSource, MonoCut, Recording, load_manifest_lazy
from lhotse.audio.backend import LibsndfileBackend, audio_backend

from voxadapt.data.packed import PackedStrings
from voxadapt.errors import DataError, first_line, located

# Stage 0 validated every recording with soundfile, so lhotse may read them with libsndfile
# directly: its default backend probes the alternatives on every read, which makes a 2-s crop
# several times slower.
SOUNDFILE = LibsndfileBackend()


def _speed(cut) -> float:  # noqa: ANN001 - a lhotse MonoCut
    for t in cut.recording.transforms or []:
        d = t if isinstance(t, dict) else t.to_dict()
        if d["name"] == "Speed":
            return float(d["kwargs"]["factor"])
        raise DataError(f"cut '{cut.id}': unsupported audio transform {d['name']}; only Speed is used in training")
    return 1.0


@dataclass
class ExampleTable:
    """One row per training utterance. Times are in the original recording's time scale."""

    sources: PackedStrings  # JSON of each distinct recording's lhotse audio sources
    source_samples: np.ndarray  # each distinct recording's length in samples (original time scale)
    source: np.ndarray  # per example: its row of `sources`
    start: np.ndarray  # seconds
    duration: np.ndarray  # seconds
    speed: np.ndarray
    label: np.ndarray  # class index
    classes: list[str]
    sample_rate: int

    @classmethod
    def from_cuts(cls, cuts: Iterable, sample_rate: int, classes: list[str] | None = None) -> ExampleTable:
        rows: dict[str, int] = {}
        lengths: list[int] = []
        source, start, dur, speed, spk = [], [], [], [], []
        for cut in cuts:
            f = _speed(cut)
            key = json.dumps([s.to_dict() for s in cut.recording.sources])
            row = rows.setdefault(key, len(rows))
            if row == len(lengths):
                lengths.append(0)
            # A perturbed copy declares its perturbed length: scaled back, it may be a sample off.
            lengths[row] = max(lengths[row], round(cut.recording.num_samples * f))
            source.append(row)
            start.append(cut.start * f)
            dur.append(cut.duration * f)
            speed.append(f)
            spk.append(cut.supervisions[0].speaker)
            if cut.sampling_rate != sample_rate:
                raise DataError(f"cut '{cut.id}' is at {cut.sampling_rate} Hz, the config says {sample_rate} Hz")
        if not source:
            raise DataError("no training examples; check stages 0-2")
        classes = classes if classes is not None else sorted(set(spk))
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(spk) - set(index))
        if unknown:
            raise DataError(f"speakers {unknown[:3]} are not among the model's {len(classes)} classes")
        return cls(PackedStrings(rows), np.array(lengths, dtype=np.int64), np.array(source, dtype=np.int64),
                   np.array(start), np.array(dur),
                   np.array(speed, dtype=np.float64), np.array([index[s] for s in spk], dtype=np.int64), classes,
                   sample_rate)

    @classmethod
    def from_manifest(cls, path: Path, sample_rate: int, classes: list[str] | None = None) -> ExampleTable:
        if not path.is_file():
            raise DataError(located(path, None, "missing", "run stages 1-2 first"))
        return cls.from_cuts(load_manifest_lazy(path), sample_rate, classes)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def audio_sources(self, i: int) -> list[AudioSource]:
        return [AudioSource.from_dict(d) for d in json.loads(self.sources[int(self.source[i])])]

    def crop(self, i: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` samples from a random position, at the example's speed; short ones repeat."""
        sr, f = self.sample_rate, float(self.speed[i])
        total_in = int(self.duration[i] * sr)
        want_in = int(np.ceil(n * f)) + (2 if f != 1.0 else 0)  # resampling may lose an edge sample
        first = int(round(self.start[i] * sr))
        if total_in > want_in:
            first += int(rng.integers(0, total_in - want_in + 1))
            span = want_in
        else:
            span = total_in
        # The recording at its real length: lhotse reads the whole file when a span is within 1 ms of it.
        total = max(int(self.source_samples[self.source[i]]), first + span)
        recording = Recording(id=f"example-{i}", sources=self.audio_sources(i), sampling_rate=sr,
                              num_samples=total, duration=total / sr)
        cut = MonoCut(id=f"example-{i}", start=first / sr, duration=span / sr, channel=0, recording=recording)
        if f != 1.0:
            cut = cut.perturb_speed(f)
        try:
            with warnings.catch_warnings(), audio_backend(SOUNDFILE):
                warnings.simplefilter("ignore")  # lhotse warns when a perturbed span rounds a sample short
                x = cut.load_audio()[0]
        except Exception as err:  # noqa: BLE001 - lhotse and its audio backends raise many kinds
            src = self.audio_sources(i)[0]
            fix = "run the command by hand to see why" if src.type == "command" else "check the file"
            where = f"'{src.source} |'" if src.type == "command" else src.source
            raise DataError(located(where, None, f"cannot read training audio ({first_line(err)})",
                                    f"{fix}; stage 0 validated it, so it changed since")) from None
        x = x.astype(np.float32, copy=False)
        return x[:n] if len(x) >= n else np.resize(x, n)
