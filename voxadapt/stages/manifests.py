"""Stage 1: lhotse manifests <data>/manifests/<set>/ of every data dir <data>/<set>/."""

from __future__ import annotations

import logging

from voxadapt.config import Config
from voxadapt.data.kaldi_dir import tables_digest
from voxadapt.data.manifests import make_manifests
from voxadapt.errors import DataError, located
from voxadapt.fileio import StageMarker
from voxadapt.layout import DataLayout

log = logging.getLogger(__name__)


def run(cfg: Config, data: DataLayout) -> None:
    sets = cfg.data.sets.all
    for name in sets:
        if not (data.set_dir(name) / "wav.scp").is_file():
            raise DataError(located(data.set_dir(name), None, "data dir missing", "run stage 0 first"))
    # The fingerprint covers the data-dir tables: manifests of edited data dirs are never reused.
    # A degraded set has a marker of its own: adding it later keeps the other manifests.
    degraded = cfg.data.sets.degraded
    groups = [(data.marker(1, "manifests"), data.manifests_root, [s for s in sets if s not in degraded])]
    groups += [(data.marker(1, f"manifests_{s}"), data.manifest_dir(s), [s]) for s in degraded]
    for path, outputs, names in groups:
        marker = StageMarker(path, {"sample_rate": cfg.data.sample_rate,
                                    **{s: tables_digest(data.set_dir(s)) for s in names}})
        if marker.is_done(outputs_hint=outputs):
            log.info("stage 1: manifests of %s already made; nothing to do", ", ".join(names))
            continue
        for name in names:
            log.info("stage 1: %s", make_manifests(data.set_dir(name), data.manifest_dir(name), cfg.data.sample_rate))
        marker.mark_done()
