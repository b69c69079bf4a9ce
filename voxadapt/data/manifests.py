"""Stage 1: lhotse manifests (recordings, supervisions with speakers, cuts) per data dir.

Written as gzipped JSON lines under data/manifests/<set>/, readable lazily with
`lhotse.load_manifest_lazy`, so a million-utterance set never has to sit in memory to be read.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from lhotse import CutSet, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest_lazy
from lhotse.kaldi import load_kaldi_data_dir
from lhotse.qa import validate_recordings_and_supervisions

from voxadapt.config import Config
from voxadapt.data.kaldi_dir import DataDir, tables_digest
from voxadapt.errors import DataError, located
from voxadapt.fileio import StageMarker, atomic_dir

log = logging.getLogger(__name__)

FILES = ("recordings.jsonl.gz", "supervisions.jsonl.gz", "cuts.jsonl.gz")


def manifest_dir(data_dir: Path, set_name: str) -> Path:
    return data_dir / "manifests" / set_name


def make_manifests(data_dir: Path, set_name: str, sample_rate: int) -> Path:
    src = data_dir / set_name
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
    out = manifest_dir(data_dir, set_name)
    with atomic_dir(out) as tmp:
        recordings.to_file(tmp / FILES[0])
        supervisions.to_file(tmp / FILES[1])
        cuts.to_file(tmp / FILES[2])
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


def load_cuts(data_dir: Path, set_name: str) -> CutSet:
    path = manifest_dir(data_dir, set_name) / FILES[2]
    if not path.is_file():
        raise DataError(located(path, None, "missing", "run stage 1 (manifests) first"))
    return load_manifest_lazy(path)


def manifests_stage(cfg: Config, data: str | Path) -> int:
    data_dir = Path(data)
    sets = cfg.data.all_sets
    for name in sets:
        if not (data_dir / name / "wav.scp").is_file():
            raise DataError(located(data_dir / name, None, "data dir missing", "run stage 0 first"))
    # The fingerprint covers the data-dir tables: manifests of edited data dirs are never reused.
    marker = StageMarker(data_dir / ".done" / "stage1_manifests.json",
                         {"sample_rate": cfg.data.sample_rate, **{s: tables_digest(data_dir / s) for s in sets}})
    if marker.is_done(outputs_hint=data_dir / "manifests"):
        log.info("stage 1: manifests already made; nothing to do")
        return 0
    for name in sets:
        log.info("stage 1: %s", make_manifests(data_dir, name, cfg.data.sample_rate))
    marker.mark_done()
    return 0
