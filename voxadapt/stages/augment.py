"""Stage 2: augmentation resources <data>/manifests/augment/<kind>.jsonl.gz (noise, music,
speech, rir) and, with loader.shards, the training audio as shards <data>/shards/<train>/.
Speed perturbation needs no files: training makes each speed's copy of the examples
(data/examples.py)."""

from __future__ import annotations

import dataclasses
import logging

from voxadapt.augment.resources import babble_recordings, build_resources
from voxadapt.config import Config
from voxadapt.data.shards import write_shards
from voxadapt.errors import DataError, located
from voxadapt.fileio import StageMarker, atomic_dir, file_digest
from voxadapt.layout import AUGMENT_KINDS, MANIFEST_FILES, DataLayout

log = logging.getLogger(__name__)


def run(cfg: Config, data: DataLayout, nj: int = 1) -> None:
    train = cfg.data.sets.train
    train_cuts = data.cuts(train)
    recordings = data.manifest_dir(train) / MANIFEST_FILES[0]
    for needed in (train_cuts, recordings):
        if not needed.is_file():
            raise DataError(located(needed, None, "missing", "run stage 1 (manifests) first"))
    fingerprint = {"augment": dataclasses.asdict(cfg.augment), "sample_rate": cfg.data.sample_rate,
                   "train_cuts": file_digest(train_cuts)}
    if cfg.loader.shards:  # only then: stage 2 of a config without shards matches its earlier markers
        fingerprint["shards"] = [cfg.loader.shard_size, cfg.seed]
    marker = StageMarker(data.marker(2, "augment"), fingerprint)
    if marker.is_done(outputs_hint=data.augment_dir):
        log.info("stage 2: augmentation resources already made; nothing to do")
        return
    a = cfg.augment
    sets = build_resources(a, data.generated_augment_audio, cfg.data.sample_rate, babble_recordings(recordings, a.seed))
    with atomic_dir(data.augment_dir) as tmp:
        for kind in AUGMENT_KINDS:
            sets[kind].to_file(tmp / data.augment_manifest(kind).name)
    for kind in AUGMENT_KINDS:
        log.info("stage 2: %d %s recordings (%.1f min)", len(sets[kind]), kind,
                 sum(r.duration for r in sets[kind]) / 60)
    if cfg.loader.shards:
        n = write_shards(train_cuts, data.shards(train), cfg.loader.shard_size, cfg.seed, nj)
        log.info("stage 2: %d shards of up to %d utterances in %s", n, cfg.loader.shard_size, data.shards(train))
    marker.mark_done()
