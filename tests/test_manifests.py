"""Stage 1's manifests equal what lhotse's own Kaldi import writes, line for line."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
from helpers import write_wav
from lhotse import CutSet, SupervisionSegment, SupervisionSet
from lhotse.kaldi import load_kaldi_data_dir

from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.manifests import make_manifests
from voxadapt.data.validate import validate_data_dir
from voxadapt.layout import MANIFEST_FILES


def lhotse_route(src, tmp_path):
    """lhotse's import (recordings from wav.scp + reco2dur), supervisions per utterance, one cut each."""
    plain = tmp_path / "lhotse_in"
    plain.mkdir()
    for name in ("wav.scp", "reco2dur"):
        shutil.copyfile(src / name, plain / name)
    recordings, _, _ = load_kaldi_data_dir(plain, sampling_rate=16000)
    d = DataDir.load(src)
    sups = []
    for utt in d.utterance_ids:
        seg = d.segments[utt] if d.segments else None
        reco = seg.recording if seg else utt
        end = d.reco2dur[reco] if not seg or seg.end == -1 else min(seg.end, d.reco2dur[reco])
        start = seg.start if seg else 0.0
        sups.append(SupervisionSegment(id=utt, recording_id=reco, start=start, duration=round(end - start, 6),
                                       channel=0, speaker=d.utt2spk[utt]))
    supervisions = SupervisionSet.from_segments(sups)
    cuts = CutSet.from_manifests(recordings, supervisions).trim_to_supervisions(keep_overlapping=False)
    return [list(m.to_dicts()) for m in (recordings, supervisions, cuts)]


def lines(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("segmented", [False, True])
def test_manifests_equal_lhotse_kaldi_import(tmp_path, segmented):
    src = tmp_path / "d"
    src.mkdir()
    if segmented:
        for r, secs in (("a", 4.3674), ("b", 3.0)):
            write_wav(tmp_path / "wav" / f"{r}.wav", secs, seed=len(r))
        (src / "wav.scp").write_text(f"a {tmp_path}/wav/a.wav\nb cat {tmp_path}/wav/b.wav |\n")
        (src / "segments").write_text("a-1 a 0 1.25\na-2 a 1.3 -1\nb-1 b 0.5 2.9999\nb-2 b 2.0 3.01\n")
        (src / "utt2spk").write_text("a-1 a\na-2 a\nb-1 b\nb-2 b\n")
    else:
        for i, secs in enumerate((4.3674, 2.0, 3.0001)):
            write_wav(tmp_path / "wav" / f"s{i % 2}-u{i}.wav", secs, seed=i)
        (src / "wav.scp").write_text(f"s0-u0 {tmp_path}/wav/s0-u0.wav\ns0-u2 cat {tmp_path}/wav/s0-u2.wav |\n"
                                     f"s1-u1 {tmp_path}/wav/s1-u1.wav\n")
        (src / "utt2spk").write_text("s0-u0 s0\ns0-u2 s0\ns1-u1 s1\n")
    d = validate_data_dir(src, 16000, min_duration=0.5)
    d.write()
    make_manifests(src, tmp_path / "m", 16000)
    ours = [lines(tmp_path / "m" / name) for name in MANIFEST_FILES]
    theirs = lhotse_route(src, tmp_path)
    for name, a, b in zip(MANIFEST_FILES, ours, theirs):
        assert a == b, name
