"""The training examples as compact columns (utterances x speeds), and a (speed-perturbed)
random crop of one, read through lhotse.

The table keeps what a crop needs in flat arrays (about 50 bytes per example plus each distinct
recording's audio source and length once), because millions of lhotse cut objects would not
fit: 1.7 kB each, 5.5 GB for VoxCeleb2 with speed perturbation; the speed-perturbed copies are
rows, not cuts. A crop is read by building the lhotse cut of just that span, so lhotse does the
audio work: files, commands ('... |', e.g. ffmpeg for m4a), its Speed transform and resampling.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse import AudioSource, MonoCut, Recording
from lhotse.audio.backend import LibsndfileBackend, audio_backend

from voxadapt.data.manifests import load_cuts
from voxadapt.data.packed import PackedStrings
from voxadapt.data.shards import AUDIO_PATTERN, INDEX, read_index, read_member, shard_cuts
from voxadapt.errors import DataError, first_line, located

# Stage 0 validated every recording with soundfile, so lhotse may read them with libsndfile
# directly: its default backend probes the alternatives on every read, which makes a 2-s crop
# several times slower.
SOUNDFILE = LibsndfileBackend()


def _sources_json(sources: list[AudioSource]) -> str:
    """A recording's audio sources as lhotse serialises them (`to_dict`, whose generic walk over the
    dataclass would be a third of the table's reading time at a million cuts)."""
    return json.dumps([{"type": s.type, "channels": s.channels, "source": s.source} if s.video is None else s.to_dict()
                       for s in sources])


@dataclass
class ExampleTable:
    """One row per training example: each utterance once per speed (1.0 first, then each factor
    of augment.speeds as a new speaker 'sp<factor>-<speaker>'). Times are in the original
    recording's time scale."""

    sources: PackedStrings  # JSON of each distinct recording's lhotse audio sources (or shard member)
    source_samples: np.ndarray  # each distinct recording's length in samples (original time scale)
    source: np.ndarray  # per example: its row of `sources`
    start: np.ndarray  # seconds
    duration: np.ndarray  # seconds
    speed: np.ndarray
    label: np.ndarray  # class index
    classes: list[str]
    sample_rate: int
    shard: np.ndarray | None = None  # per example: its shard, when the audio is in shards (data/shards.py)

    @classmethod
    def from_cuts(cls, cuts: Iterable[MonoCut], sample_rate: int, speeds: Sequence[float] = (),
                  classes: list[str] | None = None) -> ExampleTable:
        """From lhotse cuts, one per utterance (read one at a time: a million would not fit)."""
        rows: dict[str, int] = {}
        lengths: list[int] = []
        source, start, dur, spk = [], [], [], []
        for cut in cuts:
            rec = cut.recording
            if rec.transforms:
                raise DataError(f"cut '{cut.id}': audio transforms are not supported in training cuts "
                                "(speed perturbation is made from augment.speeds)")
            if rec.sampling_rate != sample_rate:
                raise DataError(f"cut '{cut.id}' is at {rec.sampling_rate} Hz, the config says {sample_rate} Hz")
            row = rows.setdefault(_sources_json(rec.sources), len(rows))
            if row == len(lengths):
                lengths.append(rec.num_samples)
            source.append(row)
            start.append(cut.start)
            dur.append(cut.duration)
            spk.append(cut.supervisions[0].speaker)
        return cls._with_speeds(PackedStrings(rows), np.array(lengths, dtype=np.int64), np.array(source, dtype=np.int64),
                                np.array(start), np.array(dur), spk, speeds, classes, sample_rate, None)

    @classmethod
    def from_manifest(cls, path: Path, sample_rate: int, speeds: Sequence[float] = (),
                      classes: list[str] | None = None) -> ExampleTable:
        """From stage 1's cuts, read lazily through lhotse."""
        return cls.from_cuts(load_cuts(path), sample_rate, speeds, classes)

    @classmethod
    def from_shards(cls, shard_dir: Path, sample_rate: int, speeds: Sequence[float] = (),
                    classes: list[str] | None = None) -> ExampleTable:
        """From stage 2's shards: each utterance's audio is its FLAC member of a shard."""
        index = read_index(shard_dir)
        sources, lengths, shard, dur, spk = [], [], [], [], []
        for c in shard_cuts(shard_dir):
            if c.id not in index:
                raise DataError(located(shard_dir / INDEX, None, f"no entry for utterance '{c.id}'",
                                        "the shards are incomplete: re-run stage 2"))
            if c.recording.sampling_rate != sample_rate:
                raise DataError(f"{shard_dir}: utterance '{c.id}' is at {c.recording.sampling_rate} Hz, "
                                f"the config says {sample_rate} Hz")
            k, offset, size = index[c.id]
            sources.append(json.dumps({"shard": str(shard_dir / (AUDIO_PATTERN % k)), "offset": offset, "size": size}))
            lengths.append(c.recording.num_samples)
            shard.append(k)
            dur.append(c.duration)
            spk.append(c.supervisions[0].speaker)
        n = len(sources)
        return cls._with_speeds(PackedStrings(sources), np.array(lengths, dtype=np.int64), np.arange(n),
                                np.zeros(n), np.array(dur), spk, speeds, classes, sample_rate,
                                np.array(shard, dtype=np.int64))

    @classmethod
    def _with_speeds(cls, sources: PackedStrings, lengths: np.ndarray, source: np.ndarray, start: np.ndarray,
                     dur: np.ndarray, speakers: list[str], speeds: Sequence[float], classes: list[str] | None,
                     sample_rate: int, shard: np.ndarray | None) -> ExampleTable:
        if not len(source):
            raise DataError("no training examples; check stages 0-2")
        factors = [1.0, *speeds]
        names = sorted(set(speakers))
        per_speed = [names if f == 1.0 else [f"sp{f}-{s}" for s in names] for f in factors]
        classes = classes if classes is not None else sorted(c for group in per_speed for c in group)
        pos = {c: i for i, c in enumerate(classes)}
        unknown = sorted({c for group in per_speed for c in group} - set(pos))
        if unknown:
            raise DataError(f"speakers {unknown[:3]} are not among the model's {len(classes)} classes")
        spk_index = np.searchsorted(np.array(names), np.array(speakers))
        label = np.concatenate([np.array([pos[c] for c in group], dtype=np.int64)[spk_index] for group in per_speed])
        k = len(factors)
        return cls(sources, lengths, np.tile(source, k), np.tile(start, k), np.tile(dur, k),
                   np.repeat(np.array(factors, dtype=np.float64), len(source)), label, classes, sample_rate,
                   None if shard is None else np.tile(shard, k))

    def __len__(self) -> int:
        return len(self.label)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def audio_sources(self, i: int) -> list[AudioSource]:
        entry = json.loads(self.sources[int(self.source[i])])
        if isinstance(entry, dict):  # a FLAC member of a shard
            return [AudioSource("memory", [0], read_member(entry["shard"], entry["offset"], entry["size"]))]
        return [AudioSource.from_dict(d) for d in entry]

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
