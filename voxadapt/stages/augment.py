"""Stage 2: augmentation resources <data>/manifests/augment/<kind>.jsonl.gz (noise, music,
speech, rir) and, with speed perturbation, the training cuts <data>/manifests/<train>_sp/."""

from __future__ import annotations

import dataclasses
import logging

from lhotse import load_manifest_lazy

from voxadapt.augment.resources import build_resources, speed_perturbed_cuts
from voxadapt.config import Config
from voxadapt.data.manifests import load_cuts
from voxadapt.fileio import StageMarker, atomic_dir, file_digest
from voxadapt.layout import AUGMENT_KINDS, CUTS, DataLayout, ExpLayout

log = logging.getLogger(__name__)


def run(cfg: Config, data: DataLayout, exp: ExpLayout | None = None) -> None:
    train = cfg.data.sets.train
    train_cuts = data.cuts(train)
    cuts = load_cuts(train_cuts)
    fingerprint = {"augment": dataclasses.asdict(cfg.augment), "sample_rate": cfg.data.sample_rate,
                   "train_cuts": file_digest(train_cuts)}
    marker = StageMarker(data.marker(2, "augment"), fingerprint)
    if marker.is_done(outputs_hint=data.augment_dir):
        log.info("stage 2: augmentation resources already made; nothing to do")
        return
    a = cfg.augment
    sets = build_resources(a, data.generated_augment_audio, cfg.data.sample_rate, (c.recording for c in cuts))
    with atomic_dir(data.augment_dir) as tmp:
        for kind in AUGMENT_KINDS:
            sets[kind].to_file(tmp / data.augment_manifest(kind).name)
    for kind in AUGMENT_KINDS:
        log.info("stage 2: %d %s recordings (%.1f min)", len(sets[kind]), kind,
                 sum(r.duration for r in sets[kind]) / 60)
    if a.speed_perturb:
        out = data.training_cuts(train, speed_perturb=True)
        with atomic_dir(out.parent) as tmp:
            speed_perturbed_cuts(cuts.to_eager(), a.speeds).to_file(tmp / CUTS)
        speakers = {c.supervisions[0].speaker for c in load_manifest_lazy(out)}
        log.info("stage 2: speed perturbation %s: %d training classes (%d speakers x %d)",
                 a.speeds, len(speakers), len(speakers) // (1 + len(a.speeds)), 1 + len(a.speeds))
    marker.mark_done()
