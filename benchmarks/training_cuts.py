#!/usr/bin/env python3
"""What building the training example table from stage 1's cuts costs at VoxCeleb2's scale: a
generated manifest of --n cuts in stage 1's shape (one ffmpeg pipe per utterance, 200 utterances
per speaker), read by `ExampleTable.from_manifest` (with speed perturbation), against the floor of
any reader (gunzip and json.loads of every line), and with --against another checkout's reader,
interleaved in one process. Seconds, the ratio to the floor, and seconds per million cuts.
    python benchmarks/training_cuts.py [--n 1000000] [--repeats 3] [--against /path/to/main]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path


def write_manifest(path: Path, n: int) -> None:
    with gzip.open(path, "wt", compresslevel=1) as f:
        for i in range(n):
            spk, video = f"id{i // 200:05d}", f"v{i // 20:06d}"
            utt = f"{spk}-{video}-{i % 20:05d}"
            samples = 128000 + i % 1000
            rec = {"id": utt, "sources": [{"type": "command", "channels": [0], "source":
                                           f"ffmpeg -nostdin -v error -i /vox2/dev/aac/{spk}/{video}/{i % 20:05d}.m4a "
                                           "-ac 1 -ar 16000 -f wav -"}],
                   "sampling_rate": 16000, "num_samples": samples, "duration": samples / 16000, "channel_ids": [0]}
            sup = {"id": utt, "recording_id": utt, "start": 0.0, "duration": samples / 16000, "channel": 0, "speaker": spk}
            f.write(json.dumps({"id": utt, "start": 0.0, "duration": samples / 16000, "channel": 0,
                                "supervisions": [sup], "recording": rec, "type": "MonoCut"}) + "\n")


def reader_of(checkout: Path) -> Callable[[Path], object]:
    """`ExampleTable.from_manifest` of another checkout (its voxadapt/data/examples.py, the rest from this one)."""
    spec = importlib.util.spec_from_file_location("other_examples", checkout / "voxadapt" / "data" / "examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return lambda path: module.ExampleTable.from_manifest(path, 16000, [0.9, 1.1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each reader; the fastest counts")
    parser.add_argument("--against", type=Path, help="another checkout whose reader to time alongside (e.g. main's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/training_cuts"))
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from voxadapt.data.examples import ExampleTable

    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"cuts{args.n}.jsonl.gz"
    if not path.is_file():
        write_manifest(path, args.n)

    def floor(path: Path) -> None:
        with gzip.open(path, "rt") as f:
            for line in f:
                json.loads(line)

    readers = {"gunzip + json.loads (floor)": floor,
               "ExampleTable.from_manifest (this checkout)": lambda p: ExampleTable.from_manifest(p, 16000, [0.9, 1.1])}
    if args.against:
        readers[f"ExampleTable.from_manifest ({args.against})"] = reader_of(args.against)
    times: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, read in readers.items():
            start = time.perf_counter()
            read(path)
            times[name] = min(times.get(name, float("inf")), time.perf_counter() - start)
    floor_s = times["gunzip + json.loads (floor)"]
    print(f"{args.n} cuts (x3 speeds); {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {sys.version.split()[0]}; fastest of {args.repeats}")
    print("| reading | s | x floor | s per million cuts |\n|---|---|---|---|")
    for name, s in times.items():
        print(f"| {name} | {s:.1f} | {s / floor_s:.2f} | {s * 1e6 / args.n:.0f} |")


if __name__ == "__main__":
    main()
