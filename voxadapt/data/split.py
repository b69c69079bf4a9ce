"""Split a data dir into N parts for parallel jobs (Kaldi's split_data.sh, balanced by duration).

Parts are contiguous runs of utterances in sorted order with about equal total duration, written
to layout.split_dir (<data>/split<N>dur/<n>/, 1-based as Kaldi's JOB numbers). A finished split
is reused as long as the data dir's tables are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxadapt.data.kaldi_dir import DataDir, tables_digest
from voxadapt.errors import DataError, located
from voxadapt.fileio import StageMarker, atomic_dir
from voxadapt.layout import dir_marker, split_dir


def split_data_dir(path: str | Path, nj: int) -> Path:
    d = DataDir.load(path)
    utts = d.utterance_ids
    if nj < 1 or nj > len(utts):
        raise DataError(located(d.path, None, f"cannot split {len(utts)} utterances into {nj} jobs",
                                f"use --nj between 1 and {len(utts)}"))
    out = split_dir(d.path, nj)
    marker = StageMarker(dir_marker(out), {"tables": tables_digest(d.path), "nj": nj})
    if out.is_dir() and marker.is_done():
        return out
    dur = d.utt2dur()
    cum = np.cumsum([dur[u] for u in utts])
    # Boundaries where the running duration crosses k/nj of the total; at least one utterance each.
    cuts = [0] + [int(np.searchsorted(cum, cum[-1] * k / nj)) for k in range(1, nj)] + [len(utts)]
    for k in range(1, nj + 1):
        cuts[k] = min(max(cuts[k], cuts[k - 1] + 1), len(utts) - (nj - k))
    with atomic_dir(out) as tmp:
        for k in range(nj):
            part = utts[cuts[k]:cuts[k + 1]]
            recos = {d.recording_of(u) for u in part}
            sub = DataDir(tmp / str(k + 1), {r: d.wav_scp[r] for r in recos}, {u: d.utt2spk[u] for u in part},
                          {u: d.segments[u] for u in part} if d.segments is not None else None,
                          {r: d.reco2dur[r] for r in recos} if d.reco2dur is not None else None)
            sub.write()
        StageMarker(dir_marker(tmp), marker.fingerprint).mark_done()
    return out
