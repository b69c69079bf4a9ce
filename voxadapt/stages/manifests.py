"""Stage 1: lhotse manifests <data>/manifests/<set>/ of every data dir <data>/<set>/."""

from __future__ import annotations

import logging

from voxadapt.config import Config
from voxadapt.data.kaldi_dir import tables_digest
from voxadapt.data.manifests import make_manifests
from voxadapt.errors import DataError, located
from voxadapt.fileio import StageMarker
from voxadapt.layout import DataLayout, ExpLayout

log = logging.getLogger(__name__)


def run(cfg: Config, data: DataLayout, exp: ExpLayout | None = None) -> None:
    sets = cfg.data.sets.all
    for name in sets:
        if not (data.set_dir(name) / "wav.scp").is_file():
            raise DataError(located(data.set_dir(name), None, "data dir missing", "run stage 0 first"))
    # The fingerprint covers the data-dir tables: manifests of edited data dirs are never reused.
    marker = StageMarker(data.marker(1, "manifests"),
                         {"sample_rate": cfg.data.sample_rate, **{s: tables_digest(data.set_dir(s)) for s in sets}})
    if marker.is_done(outputs_hint=data.manifests_root):
        log.info("stage 1: manifests already made; nothing to do")
        return
    for name in sets:
        log.info("stage 1: %s", make_manifests(data.set_dir(name), data.manifest_dir(name), cfg.data.sample_rate))
    marker.mark_done()
