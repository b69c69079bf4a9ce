#!/usr/bin/env python3
"""Training-crop throughput of one loader worker: per-file reads (VoxCeleb2 m4a through ffmpeg
pipes; the same utterances decoded once into one FLAC file each, as --vox2_convert_dir makes)
against stage 2's shards (the same FLAC data as members read by offset, in the sampler's
shard-window order), with the page cache dropped before each row when the benchmark may (root on
Linux), so every byte comes from the disk.

Reads the data of a VoxCeleb-shaped tree prepared by benchmarks/voxceleb_scale.py (stages 0-1);
writes shards of `--shard-utts` VoxCeleb2 utterances once under `--work`. Prints a markdown table
with the workers one GPU needs at `--gpu-rate` seconds of audio per second (the MHFA authors'
WavLM Base+ training: about 110 three-second crops per second per GPU).
    python benchmarks/loader_throughput.py --data /scratch/vox1pct/data --work /scratch/loader [--n 300]
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def rate(table, order: np.ndarray, crop: int, n: int) -> tuple[float, bool]:
    """Crops per second of one process over the first `n` examples of `order`, cold cache."""
    dropped = drop_caches()
    start = time.perf_counter()
    for k, i in enumerate(order[:n]):
        table.crop(int(i), crop, np.random.default_rng(k))
    return n / (time.perf_counter() - start), dropped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="data root of a voxceleb_scale.py run (stage 1 done)")
    ap.add_argument("--work", type=Path, required=True, help="where the shards are written (once)")
    ap.add_argument("--n", type=int, default=300, help="crops per row")
    ap.add_argument("--crop-seconds", type=float, default=3.0)
    ap.add_argument("--shard-utts", type=int, default=3000)
    ap.add_argument("--gpu-rate", type=float, default=330.0, help="seconds of audio one GPU consumes per second")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from lhotse import AudioSource, fastcopy

    from voxadapt.data.examples import ExampleTable
    from voxadapt.data.sampler import SpeakerBatchSampler
    from voxadapt.data.shards import shard_cuts, write_shards
    from voxadapt.layout import DataLayout

    layout, sr = DataLayout(args.data), 16000
    crop = int(args.crop_seconds * sr)
    shards = args.work / "shards"
    if not shards.is_dir():
        args.work.mkdir(parents=True, exist_ok=True)
        subset = args.work / "cuts.jsonl.gz"
        with gzip.open(layout.cuts("vox2_dev"), "rt") as src, gzip.open(subset, "wt") as dst:
            for _, line in zip(range(args.shard_utts), src):
                dst.write(line)
        start = time.perf_counter()
        write_shards(subset, shards, 1000, seed=0, nj=os.cpu_count() or 1)
        print(f"shards of {args.shard_utts} m4a utterances written in {time.perf_counter() - start:.0f} s "
              f"({args.shard_utts / (time.perf_counter() - start):.0f} utterances/s, {os.cpu_count()} processes)")
    flac = args.work / "flac"
    if not flac.is_dir():  # the shards' members as files: per-file reads of the same bytes
        flac.mkdir()
        for tar_path in sorted(shards.glob("shar/recording.*.tar")):
            with tarfile.open(tar_path) as tar:
                for m in tar:
                    if m.name.endswith(".flac"):
                        (flac / m.name).write_bytes(tar.extractfile(m).read())
    files = [fastcopy(c, recording=fastcopy(c.recording, sources=[AudioSource("file", [0], str(flac / f"{c.id}.flac"))]))
             for c in shard_cuts(shards)]
    rows = []
    for name, table in (("per-file m4a (ffmpeg pipe)", ExampleTable.from_manifest(layout.cuts("vox2_dev"), sr)),
                        ("per-file FLAC (--vox2_convert_dir)", ExampleTable.from_cuts(files, sr)),
                        ("shards (FLAC members)", ExampleTable.from_shards(shards, sr))):
        if table.shard is None:
            order = np.random.default_rng(0).permutation(len(table))
        else:  # what training reads: the sampler's shard-window order
            sampler = SpeakerBatchSampler(table.label, 1, seed=0, shards=table.shard)
            order = np.array([spec.examples[0] for spec, _ in zip(sampler, range(args.n))])
        per_s, cold = rate(table, order, crop, args.n)
        mean_file = float(np.mean(table.duration))
        rows.append((name, per_s, per_s * args.crop_seconds, cold, mean_file))
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; one process, one thread; "
          f"{args.crop_seconds:g}-s crops, {args.n} per row; {time.strftime('%Y-%m-%d')}\n")
    print("| read path | mean utterance | crops/s per worker | audio s/s per worker | page cache | "
          f"workers per GPU at {args.gpu_rate:g} s/s |")
    print("|---|---|---|---|---|---|")
    for name, per_s, audio, cold, mean_file in rows:
        print(f"| {name} | {mean_file:.1f} s | {per_s:.0f} | {audio:.0f} | {'dropped' if cold else 'warm'} | "
              f"{math.ceil(args.gpu_rate / audio)} |")


if __name__ == "__main__":
    main()
