#!/usr/bin/env python3
"""Throughput of the training data path: seconds of augmented audio (crops of loader.crop_seconds)
one process, per augmentation kind (the channel kinds too, whatever their weight) and for the
configured mix, with where the time goes.

Needs stages 0-2 done for the config (./run.sh --stop_stage 2). Prints a markdown table.
    python benchmarks/augmentation.py [--config conf/mhfa_tiny.yaml] [--data data] [--n 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/mhfa_tiny.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--n", type=int, default=300, help="examples per row")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # one loader worker = one core
    from voxadapt.augment.online import Augmenter
    from voxadapt.config import load_config
    from voxadapt.data.examples import ExampleTable
    from voxadapt.layout import AUGMENT_KINDS, DataLayout

    cfg = load_config(args.config)
    data = Path(args.data)
    layout = DataLayout(Path(data))
    table = ExampleTable.from_manifest(layout.cuts(cfg.data.sets.train), cfg.data.sample_rate,
                                       cfg.augment.speeds if cfg.augment.speed_perturb else [])
    aug = Augmenter(cfg.augment, {k: layout.augment_manifest(k) for k in AUGMENT_KINDS}, cfg.data.sample_rate)
    n = int(cfg.loader.crop_seconds * cfg.data.sample_rate)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(table), args.n)

    def timed(fn) -> float:
        start = time.perf_counter()
        for i in idx:
            fn(int(i))
        return (time.perf_counter() - start) / len(idx)

    # Components: the crop (lhotse: read + speed perturbation), then each kind of augmentation.
    crop = timed(lambda i: table.crop(i, n, np.random.default_rng(i)))
    clips = {int(i): table.crop(int(i), n, np.random.default_rng(int(i))) for i in idx}
    rows = []
    for kind in ("none", "reverb", "noise", "music", "babble", "telephone", "codec", None):
        t_aug = timed(lambda i, k=kind: aug(clips[i], np.random.default_rng(i), k))
        total = crop + t_aug
        rows.append((kind or f"default mix (augment.probability {cfg.augment.probability})", total, t_aug))
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads 1; "
          f"{len(idx)} examples of {cfg.loader.crop_seconds:g} s; speed perturbation "
          f"{'on' if cfg.augment.speed_perturb else 'off'}\n")
    print("| kind | ms per example | audio s / s / core | crop (read + speed) | augmentation |")
    print("|---|---|---|---|---|")
    for name, total, t_aug in rows:
        print(f"| {name} | {total * 1e3:.2f} | {cfg.loader.crop_seconds / total:.0f} | {crop / total:.0%} | "
              f"{t_aug / total:.0%} |")


if __name__ == "__main__":
    main()
