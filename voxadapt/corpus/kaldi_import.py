"""Bring the user's own Kaldi data dirs into the recipe as data/train and data/test."""

from __future__ import annotations

from pathlib import Path

from voxadapt.config import DataConfig
from voxadapt.data.kaldi_dir import write_table
from voxadapt.data.trials import read_enroll_map, read_trials, write_trials
from voxadapt.data.validate import validate_data_dir
from voxadapt.errors import DataError
from voxadapt.fileio import atomic_dir
from voxadapt.layout import enroll_map, trial_list


def import_kaldi_dirs(data: DataConfig, train_dir: Path, test_dir: Path, nj: int) -> None:
    """Validate the user's dirs in place (tables and audio), then copy them to `train_dir` and
    `test_dir`: every error names the user's own file and line, and a failed import leaves nothing."""
    cfg = data.kaldi
    if not (cfg.train_dir and cfg.test_dir and cfg.trials):
        raise DataError("--corpus kaldi needs --train_dir DIR --test_dir DIR --trials FILE")
    train, test = (validate_data_dir(d, data.sample_rate, data.min_duration, audio=data.validation, nj=nj,
                                     sample=data.validation_sample)
                   for d in (cfg.train_dir, cfg.test_dir))
    models_file = enroll_map(Path(cfg.test_dir))
    models = read_enroll_map(models_file, known=test.utt2spk) if models_file.is_file() else {}
    trials = read_trials(cfg.trials, known=set(test.utt2spk) | set(models))
    for src, dst in ((train, train_dir), (test, test_dir)):
        with atomic_dir(dst) as out:
            src.write(out)  # sorted tables, spk2utt regenerated, reco2dur from the validation
            if dst == test_dir:
                write_trials(trial_list(out), trials)
                if models:  # the models the trials may name
                    write_table(enroll_map(out), ((m, " ".join(utts)) for m, utts in models.items()))
