"""Bring the user's own Kaldi data dirs into the recipe as data/train and data/test."""

from __future__ import annotations

import shutil
from pathlib import Path

from voxadapt.config import KaldiImportConfig
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import read_trials, write_trials
from voxadapt.errors import DataError

TABLES = ("wav.scp", "utt2spk", "spk2utt", "segments")


def import_kaldi_dirs(cfg: KaldiImportConfig, data_dir: Path) -> None:
    if not (cfg.train_dir and cfg.test_dir and cfg.trials):
        raise DataError("--corpus kaldi needs --train_dir DIR --test_dir DIR --trials FILE")
    # Read (strictly) before copying: errors then name the user's own files and lines.
    train, test = DataDir.load(cfg.train_dir), DataDir.load(cfg.test_dir)
    trials = read_trials(cfg.trials, known=test.utt2spk)
    for src, name in ((train, "train"), (test, "test")):
        out = data_dir / name
        out.mkdir(parents=True, exist_ok=True)
        for table in TABLES:
            if (src.path / table).is_file():
                shutil.copyfile(src.path / table, out / table)
        src.write(out)  # regenerates spk2utt if the user's dir had none
    write_trials(data_dir / "test" / "trials", trials)
