"""The end of stage 0 for every corpus: validate each data dir and record its durations."""

from __future__ import annotations

import logging
from pathlib import Path

from voxadapt.config import Config
from voxadapt.data.kaldi_dir import write_table
from voxadapt.data.validate import validate_data_dir

log = logging.getLogger(__name__)


def finalize_data_dirs(cfg: Config, data_dir: Path, nj: int, check_audio: bool = True) -> None:
    """Validate every set (tables, audio unless already done, trials) and write reco2dur for later stages."""
    from voxadapt.data.trials import read_trials

    for name in cfg.data.all_sets:
        d = validate_data_dir(data_dir / name, cfg.data.sample_rate, cfg.data.min_duration, check_audio=check_audio, nj=nj)
        assert d.reco2dur is not None
        write_table(d.path / "reco2dur", ((r, f"{v:.4f}") for r, v in d.reco2dur.items()))
        for trials in sorted(d.path.glob("trials*")):
            read_trials(trials, known=d.utt2spk)
        log.info("%s: %d utterances, %d speakers, %.1f h, trial lists: %s", d.path, len(d.utt2spk), len(d.spk2utt),
                 sum(d.reco2dur.values()) / 3600, ", ".join(p.name for p in sorted(d.path.glob("trials*"))) or "none")
