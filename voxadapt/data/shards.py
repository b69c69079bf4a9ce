"""Training audio in lhotse Shar shards, for clusters whose file systems are slow per file.

Stage 2 writes the training utterances, shuffled (so each shard mixes speakers), decoded once
(VoxCeleb2's AAC included) and stored as FLAC in tar files of `shard_size` utterances, with
lhotse's cut manifests beside them, in `shar/`: a lhotse Shar set (`CutSet.from_shar` reads it).
`index.tsv`, next to it (lhotse takes every file in a Shar directory for a field), records each
FLAC member's byte offset, so the training loader reads a member
with one seek and one read; the sampler walks the shards a window at a time (data/sampler.py),
so each shard is read once per epoch, from a few shards at a time.
"""

from __future__ import annotations

import gzip
import logging
import tarfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import chain
from pathlib import Path

import numpy as np
from lhotse import MonoCut, fastcopy, load_manifest_lazy
from lhotse.audio.backend import LibsndfileBackend, audio_backend
from lhotse.shar.utils import to_shar_placeholder
from lhotse.shar.writers import AudioTarWriter, JsonlShardWriter

from voxadapt.errors import DataError, first_line, located
from voxadapt.fileio import atomic_dir

log = logging.getLogger(__name__)

SHAR = "shar"  # the lhotse Shar set
INDEX = "index.tsv"  # <cut id> <shard> <byte offset> <bytes> of every FLAC member
AUDIO_PATTERN = f"{SHAR}/recording.%06d.tar"
CUTS_PATTERN = f"{SHAR}/cuts.%06d.jsonl.gz"


def _write_part(item: tuple[str, str, int, int]) -> str | None:
    """Write the cuts of one job's manifest as shards numbered from `first`; an error text or None."""
    cuts_path, out, first, shard_size = item
    audio = AudioTarWriter(f"{out}/{AUDIO_PATTERN}", shard_size, "flac", shard_offset=first)
    cuts = JsonlShardWriter(f"{out}/{CUTS_PATTERN}", shard_size, shard_offset=first)
    with audio_backend(LibsndfileBackend()), audio, cuts:
        for cut in load_manifest_lazy(cuts_path):
            try:
                samples = cut.load_audio()
            except Exception as err:  # noqa: BLE001 - lhotse and its backends raise many kinds
                return f"utterance '{cut.id}': cannot read its audio ({first_line(err)})"
            placeholder = to_shar_placeholder(cut.recording, cut)
            audio.write(cut.id, samples, cut.sampling_rate, manifest=placeholder, original_format="flac")
            cuts.write(fastcopy(cut, recording=placeholder))
    return None


def write_shards(cuts_path: Path, out: Path, shard_size: int, seed: int, nj: int) -> int:
    """The cuts of `cuts_path` (one per utterance), shuffled with `seed`, as shards in `out`
    (written whole, by `nj` processes). Returns the number of shards."""
    with gzip.open(cuts_path, "rt") as f:
        lines = f.read().splitlines()  # raw JSON: shuffling needs no cut objects
    order = np.random.default_rng(seed).permutation(len(lines))
    shards = -(-len(lines) // shard_size)
    per_job = -(-shards // max(1, nj))
    with atomic_dir(out) as tmp:
        (tmp / SHAR).mkdir()
        parts = []
        for job, first in enumerate(range(0, shards, per_job)):
            part = tmp / f"part{job}.jsonl.gz"
            with gzip.open(part, "wt") as f:
                for i in order[first * shard_size:(first + per_job) * shard_size]:
                    f.write(lines[i] + "\n")
            parts.append((str(part), str(tmp), first, shard_size))
        del lines
        with ProcessPoolExecutor(len(parts)) as pool:
            errors = [e for e in pool.map(_write_part, parts) if e]
        if errors:
            raise DataError(f"{cuts_path}: {errors[0]}; fix the data dir and re-run stage 2")
        for part, *_ in parts:
            Path(part).unlink()
        with open(tmp / INDEX, "w") as index:
            for shard in range(shards):
                with tarfile.open(tmp / (AUDIO_PATTERN % shard)) as tar:
                    for m in tar:
                        if m.name.endswith(".flac"):
                            index.write(f"{m.name[:-len('.flac')]}\t{shard}\t{m.offset_data}\t{m.size}\n")
    return shards


def read_index(shard_dir: Path) -> dict[str, tuple[int, int, int]]:
    """cut id -> (shard, offset, size)."""
    path = shard_dir / INDEX
    if not path.is_file():
        raise DataError(located(path, None, "missing", "run stage 2 with loader.shards: true"))
    out = {}
    with open(path) as f:
        for line in f:
            cut, shard, offset, size = line.rstrip("\n").split("\t")
            out[cut] = (int(shard), int(offset), int(size))
    return out


def shard_cuts(shard_dir: Path) -> Iterator[MonoCut]:
    """The cuts of every shard, in shard order, read lazily through lhotse."""
    files = sorted((shard_dir / SHAR).glob("cuts.*.jsonl.gz"))
    if not files:
        raise DataError(located(shard_dir, None, "no shards", "run stage 2 with loader.shards: true"))
    return chain.from_iterable(load_manifest_lazy(path) for path in files)


def read_member(tar: str, offset: int, size: int) -> bytes:
    with open(tar, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise DataError(located(tar, None, f"shard ends early ({len(data)} of {size} bytes at offset {offset})",
                                "the shards changed since stage 2: re-run stage 2"))
    return data
