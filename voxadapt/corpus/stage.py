"""Stage 0 driver: build the data dirs of the configured corpus, validate them, mark done."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from voxadapt.config import Config
from voxadapt.corpus.finalize import finalize_data_dirs
from voxadapt.fileio import StageMarker

log = logging.getLogger(__name__)


def data_fingerprint(cfg: Config) -> dict:
    d = cfg.data
    return {"corpus": d.corpus, "sample_rate": d.sample_rate, "min_duration": d.min_duration,
            d.corpus: dataclasses.asdict(getattr(d, d.corpus))}


def prepare_data_stage(cfg: Config, data: str | Path, nj: int) -> int:
    data_dir = Path(data)
    marker = StageMarker(data_dir / ".done" / "stage0_data.json", data_fingerprint(cfg))
    if marker.is_done(outputs_hint=data_dir):
        log.info("stage 0: %s already prepared (%s); nothing to do", data_dir, cfg.data.corpus)
        return 0
    if cfg.data.corpus == "synthetic":
        from voxadapt.corpus.synthetic import generate_corpus

        generate_corpus(cfg.data, data_dir, data_dir / "audio" / "synthetic", nj)
    elif cfg.data.corpus == "voxceleb":
        from voxadapt.corpus.voxceleb import prepare_voxceleb

        prepare_voxceleb(cfg.data.voxceleb, data_dir, nj)
    else:
        from voxadapt.corpus.kaldi_import import import_kaldi_dirs

        import_kaldi_dirs(cfg.data.kaldi, data_dir, cfg.data.sample_rate, cfg.data.min_duration, nj)
    # The user's Kaldi dirs were decoded in place by the import; the others are decoded here.
    finalize_data_dirs(cfg, data_dir, nj, check_audio=cfg.data.corpus != "kaldi")
    marker.mark_done()
    log.info("stage 0: data dirs ready under %s", data_dir)
    return 0
