"""Stage 6: the back-end <exp>/backend/ (mean.vec, lda.mat, plda, cohort.ark in Kaldi formats,
calibration.json) from the training x-vectors <exp>/embeddings/<train>/, calibrated on the
calibration set's trials or on held-out training speakers."""

from __future__ import annotations

import json
import logging

import numpy as np

from voxadapt.backend.calibration import Calibration, save_calibrations
from voxadapt.backend.quality import trial_quality
from voxadapt.backend.scoring import Embeddings, score_trials
from voxadapt.backend.training import calibration_trials, split_calibration_speakers, train_backend
from voxadapt.config import Config
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import read_trials, write_trials
from voxadapt.errors import VoxadaptError
from voxadapt.fileio import StageMarker, atomic_dir, file_digest
from voxadapt.layout import BackendLayout, DataLayout, ExpLayout, trial_list

log = logging.getLogger(__name__)


def run(cfg: Config, data: DataLayout, exp: ExpLayout, binary: bool = True) -> None:
    """`binary` False: mean.vec, lda.mat and plda in Kaldi's text forms (as Kaldi tools' --binary=false)."""
    sc = cfg.scoring
    train = cfg.data.sets.train
    scp = exp.xvector_scp(train)
    out = exp.backend
    cal_scp = exp.xvector_scp(sc.calibration_set) if sc.calibration_set else None
    for needed in (scp, cal_scp):
        if needed is not None and not needed.is_file():
            raise VoxadaptError(f"{needed}: missing; run stage 5 (extract) first")
    marker = StageMarker(exp.marker(6, "backend"),
                         {"scoring": sc.fingerprint(stage=6), "xvectors": file_digest(scp),
                          "calibration_xvectors": file_digest(cal_scp) if cal_scp else "", "binary": binary})
    if marker.is_done(outputs_hint=out):
        log.info("stage 6: back-end already trained (%s); nothing to do", out)
        return
    d = DataDir.load(data.set_dir(train))
    emb = Embeddings.from_scp(scp)
    if sc.calibration_set:
        held: set[str] = set()
        cal_dir = DataDir.load(data.set_dir(sc.calibration_set))
        cal_emb = Embeddings.from_scp(cal_scp)
        cal_trials = read_trials(trial_list(data.set_dir(sc.calibration_set)), known=cal_emb.index)
        where = f"the {len(cal_dir.spk2utt)} speakers of {sc.calibration_set}"
    else:
        held = split_calibration_speakers(list(d.spk2utt), sc.calibration_fraction, sc.seed)
        cal_dir, cal_emb = d, emb
        cal_trials = calibration_trials(d, emb, held, sc)
        where = f"{len(held)} held-out training speakers"
    fit_ids = [u for u in emb.ids if d.utt2spk[u] not in held]
    backend, history = train_backend(emb.subset(fit_ids), d.utt2spk, sc)
    labels = np.array([t.target for t in cal_trials])
    scores = score_trials(backend, cal_emb, cal_trials, sc.methods, sc.asnorm_top_n, "calibration trials")
    form = sc.calibration_form
    quality = trial_quality(form, cal_trials, cal_dir.utt2dur() if form != "linear" else {}, backend, cal_emb,
                            sc.asnorm_top_n, "calibration trials")
    calibrations = {m: Calibration.fit(scores[m], labels, quality, form) for m in sc.methods}
    with atomic_dir(out) as tmp:
        backend.save(tmp, binary)
        write_trials(tmp / "calibration_trials", cal_trials)
        save_calibrations(tmp / exp.calibration.name, calibrations, sc.p_targets)
        BackendLayout(tmp).plda_em.write_text(json.dumps({"loglik_per_example": history}, indent=1) + "\n")
    marker.mark_done()
    log.info("stage 6: back-end from %d speakers (%d x-vectors), LDA %d -> %d, PLDA log-likelihood %.2f -> %.2f; "
             "calibrated on %d trials of %s -> %s", len(d.spk2utt) - len(held), len(fit_ids),
             emb.matrix.shape[1], backend.lda.shape[0], history[0], history[-1], len(cal_trials), where, out)
