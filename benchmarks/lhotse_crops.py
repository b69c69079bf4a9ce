#!/usr/bin/env python3
"""What reading training crops through lhotse costs: the example table's crops (a lhotse cut of the
span, its Speed transform, `load_audio`) against direct reads of the same span (soundfile range
read + scipy polyphase resampling, the recipe's path before lhotse did the audio work): crops per
second of one process, how far the samples differ, and memory per example against eager cuts.

Needs stages 0-2 done for the config (./run.sh --stop_stage 2). Prints a markdown table.
    python benchmarks/lhotse_crops.py [--config conf/mhfa_tiny.yaml] [--data data] [--n 600]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/mhfa_tiny.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--n", type=int, default=600, help="crops per row")
    args = parser.parse_args()
    import torch
    from lhotse import load_manifest_lazy

    torch.set_num_threads(1)  # one loader worker = one core
    from voxadapt.config import load_config
    from voxadapt.data.examples import ExampleTable
    from voxadapt.layout import DataLayout

    cfg = load_config(args.config)
    cuts_path = DataLayout(Path(args.data)).cuts(cfg.data.sets.train)
    speeds = cfg.augment.speeds if cfg.augment.speed_perturb else []
    sr, crop_s = cfg.data.sample_rate, cfg.loader.crop_seconds
    n = int(crop_s * sr)

    tracemalloc.start()
    table = ExampleTable.from_manifest(cuts_path, sr, speeds)
    table_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tracemalloc.start()
    cuts = load_manifest_lazy(cuts_path).to_eager()  # the alternative: lhotse cut objects, one per example
    cut_bytes = tracemalloc.get_traced_memory()[0] * (1 + len(speeds))
    tracemalloc.stop()
    del cuts
    by_speed: dict[float, list[int]] = {}
    for i, f in enumerate(table.speed):
        by_speed.setdefault(float(f), []).append(i)

    def direct_crop(i: int, rng: np.random.Generator, shift: int = 0) -> np.ndarray:
        """The same span as ExampleTable.crop, read with soundfile and resampled with scipy."""
        import soundfile as sf
        from scipy.signal import resample_poly

        f = float(table.speed[i])
        total_in = int(table.duration[i] * sr)
        want_in = int(np.ceil(n * f)) + (2 if f != 1.0 else 0)
        first = int(round(table.start[i] * sr))
        if total_in > want_in:
            first += int(rng.integers(0, total_in - want_in + 1)) + shift
        path = table.audio_sources(i)[0].source
        x = sf.read(path, start=first, frames=min(want_in, total_in), dtype="float32")[0]
        if f != 1.0:
            ratio = Fraction(1 / f).limit_denominator(100)
            x = resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)
        return x[:n] if len(x) >= n else np.resize(x, n)

    rows = []
    for speed, ids in sorted(by_speed.items()):
        if not ids:
            continue
        pick = np.random.default_rng(0).choice(ids, args.n)
        times = {}
        for name, fn in (("direct", direct_crop), ("lhotse", lambda i, r: table.crop(i, n, r))):
            fn(int(pick[0]), np.random.default_rng(1))  # warm caches (resampler filters, file handles)
            t0 = time.perf_counter()
            for k, i in enumerate(pick):
                fn(int(i), np.random.default_rng(k))
            times[name] = (time.perf_counter() - t0) / args.n
        # Inside crops of examples longer than the crop (at the edges the two resamplers' filters see
        # different padding), allowing lhotse's rounding of perturbed offsets to move the start by one
        # input sample.
        long = [int(i) for i in pick if table.duration[int(i)] * sr > (n + 4) * table.speed[int(i)]][:50]
        diffs = [min(np.abs(direct_crop(i, np.random.default_rng(k), shift) - table.crop(i, n, np.random.default_rng(k)))
                     [8:-8].max() for shift in (-1, 0, 1)) for k, i in enumerate(long)]
        rows.append((speed, 1 / times["direct"], 1 / times["lhotse"], times["lhotse"] / times["direct"], max(diffs)))

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {sys.version.split()[0]}; "
          f"{len(table)} examples of {cuts_path}; {crop_s:.1f}-s crops, {args.n} per row, one thread")
    print(f"Memory per example: table {table_bytes / len(table):.0f} B, eager lhotse cuts {cut_bytes / len(table):.0f} B "
          f"(x {cut_bytes / table_bytes:.0f})\n")
    print("| speed | direct crops/s | lhotse crops/s | lhotse time / direct time | max sample difference (peak ~0.9) |")
    print("|---|---|---|---|---|")
    for speed, a, b, ratio, diff in rows:
        print(f"| {speed} | {a:.0f} | {b:.0f} | {ratio:.2f} | {diff:.3f} |")


if __name__ == "__main__":
    main()
