"""The training examples as compact columns, and reading a (speed-perturbed) random crop of one."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np
from lhotse import load_manifest_lazy
from scipy.signal import resample_poly

from voxadapt.data.audio import read_samples, rxfilename
from voxadapt.data.packed import PackedStrings
from voxadapt.errors import DataError, located


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

    sources: PackedStrings
    start: np.ndarray  # seconds
    duration: np.ndarray  # seconds
    speed: np.ndarray
    label: np.ndarray  # class index
    classes: list[str]
    sample_rate: int

    @classmethod
    def from_cuts(cls, cuts: Iterable, sample_rate: int, classes: list[str] | None = None) -> "ExampleTable":
        rx, start, dur, speed, spk = [], [], [], [], []
        for cut in cuts:
            f = _speed(cut)
            rx.append(rxfilename(cut.recording))
            start.append(cut.start * f)
            dur.append(cut.duration * f)
            speed.append(f)
            spk.append(cut.supervisions[0].speaker)
            if cut.sampling_rate != sample_rate:
                raise DataError(f"cut '{cut.id}' is at {cut.sampling_rate} Hz, the config says {sample_rate} Hz")
        if not rx:
            raise DataError("no training examples; check stages 0-2")
        classes = classes if classes is not None else sorted(set(spk))
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(spk) - set(index))
        if unknown:
            raise DataError(f"speakers {unknown[:3]} are not among the model's {len(classes)} classes")
        return cls(PackedStrings(rx), np.array(start), np.array(dur), np.array(speed, dtype=np.float64),
                   np.array([index[s] for s in spk], dtype=np.int64), classes, sample_rate)

    @classmethod
    def from_manifest(cls, path: Path, sample_rate: int, classes: list[str] | None = None) -> "ExampleTable":
        if not path.is_file():
            raise DataError(located(path, None, "missing", "run stages 1-2 first"))
        return cls.from_cuts(load_manifest_lazy(path), sample_rate, classes)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def crop(self, i: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` samples from a random position, at the example's speed; short ones repeat."""
        sr, f = self.sample_rate, float(self.speed[i])
        total_in = int(self.duration[i] * sr)
        want_in = int(np.ceil(n * f)) + (2 if f != 1.0 else 0)
        first = int(round(self.start[i] * sr))
        if total_in > want_in:
            first += int(rng.integers(0, total_in - want_in + 1))
            x = read_samples(self.sources[i], first, want_in)
        else:
            x = read_samples(self.sources[i], first, total_in)
        if f != 1.0:
            ratio = Fraction(1 / f).limit_denominator(100)  # e.g. speed 1.1 -> 10/11
            x = resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)
        return x[:n] if len(x) >= n else np.resize(x, n)
