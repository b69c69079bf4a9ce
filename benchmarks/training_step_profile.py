#!/usr/bin/env python3
"""Where a training step's CPU time goes, for a config on its prepared data (stages 0-2 done):
making the batch (crops read, speed-perturbed, augmented: the loader's work, in a worker process
during training) and the step itself (forward, backward with L2-SP, the AdamW update), each timed
alone in this process, and the share of each in their sum. The loader's worker runs beside the
step on the same cores, so its time is not hidden on a small CPU.

    python benchmarks/training_step_profile.py [--config conf/mhfa_tiny.yaml] [--data data] [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/mhfa_tiny.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from voxadapt.augment.online import Augmenter
    from voxadapt.config import load_config
    from voxadapt.data.dataset import CropBatchDataset
    from voxadapt.data.examples import ExampleTable
    from voxadapt.data.sampler import SpeakerBatchSampler
    from voxadapt.layout import AUGMENT_KINDS, DataLayout
    from voxadapt.models.backbone import backbone_from_config
    from voxadapt.models.speaker import build_model
    from voxadapt.train.optim import make_optimizer, param_groups, set_trainable
    from voxadapt.train.regularize import L2SP

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    phase, data = cfg.train.phases[0], DataLayout(Path(args.data))
    speeds = cfg.augment.speeds if cfg.augment.speed_perturb else []
    table = ExampleTable.from_manifest(data.cuts(cfg.data.sets.train), cfg.data.sample_rate, speeds)
    resources = {k: data.augment_manifest(k) for k in AUGMENT_KINDS}
    batch = phase.batch_size or cfg.loader.batch_size
    sampler = SpeakerBatchSampler(table.label, batch, cfg.seed, cfg.loader.sampler, 1, 0, cfg.loader.batches_per_epoch)
    specs = [s for s, _ in zip(sampler, range(args.steps + 1))]
    crop = phase.crop_seconds or cfg.loader.crop_seconds
    times: dict[str, list[float]] = {}

    def timed(name: str, fn):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - start)
        return out

    plain = CropBatchDataset(table, crop, None)
    augmented = CropBatchDataset(table, crop, Augmenter(cfg.augment, resources, cfg.data.sample_rate))
    batches = [timed("batch: crops read and speed-perturbed", lambda s=s: plain[s]) for s in specs]
    for s in specs:
        timed(f"batch: the same, augmented (probability {cfg.augment.probability})", lambda s=s: augmented[s])

    model, head = build_model(cfg, table.num_classes)
    set_trainable(model, head, phase.trainable_layers, phase.cnn_grad_scale, phase.train_embedding)
    model.train()
    optimizer = make_optimizer(param_groups(model, head, phase), phase)
    l2sp = None
    if phase.l2sp != "none":
        reference = backbone_from_config(cfg.model.backbone, cfg.seed).state_dict()
        params = {k: p for k, p in model.backbone.model.named_parameters() if p.requires_grad and k in reference}
        l2sp = L2SP(params, reference, phase.l2sp, phase.l2sp_weight)
    for i, b in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        name = (lambda part: f"step: {part}") if i else (lambda part: f"warm-up {part}")
        loss = timed(name("forward (backbone, pooling, AAM)"), lambda b=b: head(model(b["wav"]), b["label"], phase.margin)[0])
        if l2sp is not None:
            loss = timed(name("L2-SP penalty"), lambda ce=loss: l2sp.loss(ce))
        timed(name("backward"), loss.backward)
        timed(name("AdamW update"), optimizer.step)
    rows = {k: float(np.median(v[1:] if k.startswith("batch") else v)) for k, v in times.items() if not k.startswith("warm-up")}
    total = sum(v for k, v in rows.items() if "augmented" not in k) + rows[next(k for k in rows if "augmented" in k)] \
        - rows["batch: crops read and speed-perturbed"]
    print(f"{args.config} on {args.data}: {table.num_classes} classes, batch {batch} x {crop} s; {platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} threads; median of {args.steps} steps\n")
    print("| part | seconds per step | share of a step with augmentation |\n|---|---|---|")
    for k, v in rows.items():
        share = "-" if k == "batch: crops read and speed-perturbed" else f"{100 * v / total:.0f} %"
        print(f"| {k} | {v:.3f} | {share} |")
    print(f"| **sum (augmented batch + step)** | {total:.3f} | 100 % |")


if __name__ == "__main__":
    main()
