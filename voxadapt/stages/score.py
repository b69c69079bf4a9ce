"""Stage 7: every trial list of the test sets (<data>/<test>/trials*) scored with cosine / AS-norm
/ S-norm / PLDA from <exp>/embeddings/<test>/ and <exp>/backend/: calibrated LLRs, DET curves and
histograms in <exp>/scores/<list>/, EER, DCFs and Cllr in <exp>/results.json and RESULTS.md. A test
set's enroll.map adds models, each enrolled with all its utterances, that its lists may name."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from voxadapt.backend.calibration import Calibration, load_calibrations
from voxadapt.backend.enrollment import model_durations, speaker_models, utterances_and_models
from voxadapt.backend.quality import trial_quality
from voxadapt.backend.scoring import Backend, Embeddings, score_trials, write_scores
from voxadapt.config import Config, ScoringConfig
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.split import utterance_durations
from voxadapt.data.trials import read_enroll_map, read_trials
from voxadapt.errors import VoxadaptError
from voxadapt.fileio import StageMarker, atomic_dir, file_digest
from voxadapt.layout import DataLayout, ExpLayout, enroll_map, trial_lists

log = logging.getLogger(__name__)


def scoring_settings(sc: ScoringConfig, stage: int) -> dict:
    """The scoring keys a stage's outputs depend on. The cohort choice matters to stage 7 only, and
    only when set: experiments made before the key existed keep their markers."""
    settings = dataclasses.asdict(sc)
    if stage == 6 or not sc.asnorm_cohort:
        del settings["asnorm_cohort"]
    return settings


def score_list(out_dir: Path, title: str, trials_path: Path, emb: Embeddings, durations: dict[str, float],
               backend: Backend, calibrations: dict[str, Calibration], sc: ScoringConfig, speaker_of: dict[str, str],
               enroll: Embeddings | None = None) -> dict[str, dict]:
    """Score one trial list with every configured method into `out_dir` (scores, calibrated LLRs, DET
    and histogram plots), written as a whole directory; returns EER (with its speaker-bootstrap
    interval: `speaker_of` names each utterance's and model's speaker), DCFs and Cllr per method.
    `enroll`: the first column's side, utterances and speaker models (default: the utterances of `emb`)."""
    from voxadapt.metrics import roc
    from voxadapt.report.plots import det_figure, histogram_figure, save_figure
    from voxadapt.report.results import evaluate

    trials = read_trials(trials_path)
    labels = np.array([t.target for t in trials])
    speakers = (np.array([speaker_of[t.enroll] for t in trials]), np.array([speaker_of[t.test] for t in trials]))
    scores = score_trials(backend, emb, trials, sc.methods, sc.asnorm_top_n, trials_path, enroll)
    quality = {form: trial_quality(form, trials, durations, backend, emb, sc.asnorm_top_n, trials_path, enroll)
               for form in {calibrations[m].form for m in sc.methods}}
    results: dict[str, dict] = {}
    # The list's directory appears whole or not at all: a kill leaves no half-scored list.
    with atomic_dir(out_dir) as out:
        for m in sc.methods:
            llr = calibrations[m].llr(scores[m], quality[calibrations[m].form])
            write_scores(out / f"{m}.score", trials, scores[m])
            write_scores(out / f"{m}.llr", trials, llr)
            results[m] = evaluate(scores[m], labels, sc.p_targets, llr, speakers)
        curves = {}
        for m in sc.methods:
            r = roc(scores[m], labels)
            curves[f"{m} (EER {100 * results[m]['eer']:.2f}%)"] = (r.p_fa, r.p_miss)
        save_figure(det_figure(curves, title), out / "det.png")
        save_figure(histogram_figure({m: (scores[m], labels) for m in sc.methods}, title), out / "histogram.png")
    return results


def load_scoring_backend(backend_dir: Path, sc: ScoringConfig) -> Backend:
    """Stage 6's back-end, with the AS-norm cohort replaced by `scoring.asnorm_cohort` when given
    (e.g. x-vectors of unlabelled audio from the evaluation domain)."""
    backend = Backend.load(backend_dir)
    if sc.asnorm_cohort:
        backend.cohort = Embeddings.from_scp(sc.asnorm_cohort).matrix
    return backend


def run(cfg: Config, data: DataLayout, exp: ExpLayout) -> None:
    from voxadapt.report.results import write_results

    sc, tests = cfg.scoring, cfg.data.sets.scored
    lists = {name: (s, f) for s in tests for name, f in trial_lists(data.set_dir(s)).items()}
    if not lists:
        raise VoxadaptError(f"no trial lists in {data.root}/{{{','.join(tests)}}}/trials*; run stage 0")
    calibration = exp.calibration
    inputs = {"backend": file_digest(calibration) if calibration.is_file() else "", "scoring": scoring_settings(sc, stage=7),
              "cohort": file_digest(sc.asnorm_cohort) if sc.asnorm_cohort and Path(sc.asnorm_cohort).is_file() else ""}
    for name, (s, f) in lists.items():
        xv, models = exp.xvector_scp(s), enroll_map(data.set_dir(s))
        inputs[name] = [file_digest(f), file_digest(xv) if xv.is_file() else ""]
        if models.is_file():  # only then: markers of sets without a map stay valid
            inputs[name].append(file_digest(models))
    marker = StageMarker(exp.marker(7, "score"), inputs)
    # A trial list added since (e.g. the degraded set) is scored with the others, not refused.
    if marker.is_done(outputs_hint=exp.scores_dir, additions=True) and exp.results_md.is_file():
        log.info("stage 7: already scored; nothing to do")
        print(exp.results_md.read_text())
        return
    backend = load_scoring_backend(exp.backend, sc)
    if "asnorm" in sc.methods and backend.cohort is not None and sc.asnorm_top_n >= len(backend.cohort):
        log.warning("scoring.asnorm_top_n %d is not below the cohort's %d x-vectors: AS-norm is S-norm here; "
                    "a tenth to a fifth of the cohort is what works (RESULTS.md)", sc.asnorm_top_n, len(backend.cohort))
    calibrations = load_calibrations(calibration)
    results: dict[str, dict] = {}
    for name, (s, f) in lists.items():
        emb = Embeddings.from_scp(exp.xvector_scp(s))
        d = DataDir.load(data.set_dir(s))
        durations, speaker_of = utterance_durations(d), dict(d.utt2spk)
        enroll, models = None, enroll_map(data.set_dir(s))
        if models.is_file():
            model_utts = read_enroll_map(models)
            enroll = utterances_and_models(emb, speaker_models(emb, model_utts, models), models)
            durations = model_durations(durations, model_utts)
            speaker_of |= {m: d.utt2spk[utts[0]] for m, utts in model_utts.items()}
        results[name] = score_list(exp.scores(name), f"{cfg.name}: {name}", f, emb, durations, backend,
                                   calibrations, sc, speaker_of, enroll)
    table = write_results(exp.results_json, exp.results_md, cfg.name, results, sc.p_targets)
    marker.mark_done()
    print(f"\nResults of {cfg.name} ({exp.results_md}):\n\n{table}")
