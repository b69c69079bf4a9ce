"""local/evaluate.sh: a trained experiment or a package on any Kaldi data dir and trial list.

The steps of stages 0, 5 and 7 pointed at the user's data: the data dir is validated where it
is, audio included, and a checked copy with durations and the trial list is written to
<out>/data/; stage 5's jobs extract x-vectors from it into <out>/embeddings/; scoring uses the
model's own back-end and calibration into <out>/scores/<name>/, RESULTS.md. The recipe's data
dirs are never read or written.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from voxadapt.backend.calibration import load_calibrations
from voxadapt.backend.scoring import Backend, Embeddings
from voxadapt.backend.trial_list import score_list, with_cohort
from voxadapt.config import load_config
from voxadapt.data.kaldi_dir import DataDir, tables_digest
from voxadapt.data.trials import read_trials, write_trials
from voxadapt.data.validate import validate_data_dir
from voxadapt.fileio import StageMarker, atomic_dir, file_digest
from voxadapt.layout import EvalLayout, ModelSource, dir_marker, trial_list

log = logging.getLogger(__name__)


def prepare_eval_data(data_dir: Path, trials: Path, out: Path, source: ModelSource, nj: int) -> None:
    """Validate the user's data dir and trial list, and write the checked copy to `out`."""
    cfg = load_config(source.config)
    fingerprint = {"tables": tables_digest(data_dir) if data_dir.is_dir() else "",
                   "trials": file_digest(trials) if trials.is_file() else "",
                   "sample_rate": cfg.data.sample_rate, "min_duration": cfg.data.min_duration}
    marker = StageMarker(dir_marker(out), fingerprint)
    if marker.is_done(outputs_hint=out):
        log.info("%s: already prepared; nothing to do", out)
        return
    # The trial list against the tables first: a wrong list is said before the audio is decoded.
    read_trials(trials, known=DataDir.load(data_dir).utt2spk)
    train_dir = cfg.data.kaldi.train_dir if cfg.data.corpus == "kaldi" else ""
    if train_dir and Path(train_dir).resolve() == data_dir.resolve():
        log.warning("%s is the data dir this model was trained on: its EER says nothing about unseen speakers",
                    data_dir)
    d = validate_data_dir(data_dir, cfg.data.sample_rate, cfg.data.min_duration, audio=cfg.data.validation, nj=nj,
                          sample=cfg.data.validation_sample)
    checked = read_trials(trials, known=d.utt2spk)
    with atomic_dir(out) as tmp:
        d.write(tmp)  # sorted tables, spk2utt, reco2dur from the validation
        write_trials(trial_list(tmp), checked)
        StageMarker(dir_marker(tmp), marker.fingerprint).mark_done()
    log.info("%s: %d utterances, %d speakers, %d trials", out, len(d.utt2spk), len(d.spk2utt), len(checked))


def score_eval(source: ModelSource, out: EvalLayout, name: str, cohort_scp: str = "") -> str:
    """Score the checked trial list with the model's back-end into scores/<name>/, results.json and
    RESULTS.md; returns the results table."""
    from voxadapt.report.results import write_list_dir, write_results

    cfg = load_config(source.config)
    sc = dataclasses.replace(cfg.scoring, asnorm_cohort=cohort_scp or cfg.scoring.asnorm_cohort)
    calibrations = load_calibrations(source.calibration)
    sc.methods = [m for m in sc.methods if m in calibrations]
    backend = with_cohort(Backend.load(source.backend), sc.asnorm_cohort)
    if "asnorm" in sc.methods:  # scoring is redone at every run: say which cohort these scores used
        log.info("AS-norm cohort: %s", sc.asnorm_cohort or "the model's training-speaker means")
    if out.scores(name).is_dir():
        log.info("%s: scored before; its scores are replaced", out.scores(name))
    emb = Embeddings.from_scp(out.xvector_scp)
    d = DataDir.load(out.data_dir)
    scored = score_list(out.trials, emb, backend, sc.methods, sc.asnorm_top_n, calibrations=calibrations,
                        durations=d.utt2dur(), speaker_of=d.utt2spk, p_targets=sc.p_targets)
    write_list_dir(out.scores(name), f"{cfg.name}: {name}", scored)
    results = {name: scored.metrics}
    return write_results(out.results_json, out.results_md, cfg.name, results, sc.p_targets)
