"""lhotse manifests (recordings, supervisions with speakers, cuts) of a Kaldi data dir.

Written as gzipped JSON lines, readable lazily with `lhotse.load_manifest_lazy`, so a
million-utterance set never has to sit in memory to be read.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lhotse import CutSet, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest_lazy
from lhotse.kaldi import load_kaldi_data_dir
from lhotse.qa import validate_recordings_and_supervisions

from voxadapt.data.kaldi_dir import DataDir
from voxadapt.errors import DataError, located
from voxadapt.fileio import atomic_dir
from voxadapt.layout import MANIFEST_FILES


def make_manifests(src: Path, out: Path, sample_rate: int) -> Path:
    """Manifests of data dir `src`, written whole into `out`."""
    if not (src / "reco2dur").is_file():
        raise DataError(located(src / "reco2dur", None, "missing", "run stage 0 first (it validates the audio)"))
    if (src / "segments").is_file() and not (src / "text").is_file():
        recordings, supervisions = _segmented_speaker_dir(src, sample_rate)
    else:
        recordings, supervisions, _ = load_kaldi_data_dir(src, sampling_rate=sample_rate)
    if supervisions is None:
        raise DataError(located(src / "utt2spk", None, "missing", "a speaker data dir needs utt2spk"))
    try:
        validate_recordings_and_supervisions(recordings, supervisions)
    except AssertionError as err:
        raise DataError(located(src, None, f"lhotse rejected the data dir ({err})", "fix the data dir")) from None
    # One cut per utterance (supervision), named by the utterance id.
    cuts = CutSet.from_manifests(recordings, supervisions).trim_to_supervisions(keep_overlapping=False)
    with atomic_dir(out) as tmp:
        for manifest, name in zip((recordings, supervisions, cuts), MANIFEST_FILES):
            manifest.to_file(tmp / name)
    return out


def _segmented_speaker_dir(src: Path, sample_rate: int) -> tuple[RecordingSet, SupervisionSet]:
    """lhotse's Kaldi import insists on a `text` file when there are segments, which speaker data
    has no use for: lhotse reads the recordings (wav.scp, reco2dur), the segments come from our
    own strict parse of the data dir."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("wav.scp", "reco2dur"):
            shutil.copyfile(src / name, Path(tmp) / name)
        recordings, _, _ = load_kaldi_data_dir(tmp, sampling_rate=sample_rate)
    d = DataDir.load(src)
    assert d.segments is not None and d.reco2dur is not None
    supervisions = []
    for utt, seg in d.segments.items():
        end = d.reco2dur[seg.recording] if seg.end == -1 else min(seg.end, d.reco2dur[seg.recording])
        supervisions.append(SupervisionSegment(id=utt, recording_id=seg.recording, start=seg.start,
                                               duration=round(end - seg.start, 6), channel=0,
                                               speaker=d.utt2spk[utt]))
    return recordings, SupervisionSet.from_segments(supervisions)


def load_cuts(path: Path) -> CutSet:
    if not path.is_file():
        raise DataError(located(path, None, "missing", "run stage 1 (manifests) first"))
    return load_manifest_lazy(path)
