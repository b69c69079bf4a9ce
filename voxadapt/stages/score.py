"""Stage 7: every trial list of the test sets (<data>/<test>/trials*) scored with cosine / AS-norm
/ S-norm / PLDA from <exp>/embeddings/<test>/ and <exp>/backend/: calibrated LLRs, DET curves and
histograms in <exp>/scores/<list>/, EER, DCFs and Cllr in <exp>/results.json and RESULTS.md (a
degraded set's lists also by condition). A test set's enroll.map adds models, each enrolled with
all its utterances, that its lists may name."""

from __future__ import annotations

import logging
from pathlib import Path

from voxadapt.backend.calibration import load_calibrations
from voxadapt.backend.enrollment import enrolment_side
from voxadapt.backend.scoring import Backend, Embeddings
from voxadapt.backend.trial_list import score_list, with_cohort
from voxadapt.config import Config
from voxadapt.corpus.degrade import conditions
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.errors import VoxadaptError
from voxadapt.fileio import StageMarker, file_digest
from voxadapt.layout import DataLayout, DegradedSetLayout, ExpLayout, enroll_map, trial_lists

log = logging.getLogger(__name__)


def run(cfg: Config, data: DataLayout, exp: ExpLayout) -> None:
    from voxadapt.report.results import write_list_dir, write_results

    sc, tests = cfg.scoring, cfg.data.sets.scored
    lists = {name: (s, f) for s in tests for name, f in trial_lists(data.set_dir(s)).items()}
    if not lists:
        raise VoxadaptError(f"no trial lists in {data.root}/{{{','.join(tests)}}}/trials*; run stage 0")
    calibration = exp.calibration
    inputs = {"backend": file_digest(calibration) if calibration.is_file() else "", "scoring": sc.fingerprint(stage=7),
              "cohort": file_digest(sc.asnorm_cohort) if sc.asnorm_cohort and Path(sc.asnorm_cohort).is_file() else ""}
    for name, (s, f) in lists.items():
        xv, models = exp.xvector_scp(s), enroll_map(data.set_dir(s))
        inputs[name] = [file_digest(f), file_digest(xv) if xv.is_file() else ""]
        if models.is_file():  # a set without a map has no such input (not a rule for old markers)
            inputs[name].append(file_digest(models))
        if DegradedSetLayout(data.set_dir(s)).utt2condition.is_file():  # its own key: lists scored before it existed are redone
            inputs[f"{name} conditions"] = file_digest(DegradedSetLayout(data.set_dir(s)).utt2condition)
    marker = StageMarker(exp.marker(7, "score"), inputs)
    # A trial list added since (e.g. the degraded set) is scored with the others, not refused.
    if marker.is_done(outputs_hint=exp.scores_dir, additions=True) and exp.results_md.is_file():
        log.info("stage 7: already scored; nothing to do")
        print(exp.results_md.read_text())
        return
    backend = with_cohort(Backend.load(exp.backend), sc.asnorm_cohort)
    if "asnorm" in sc.methods and backend.cohort is not None and sc.asnorm_top_n >= len(backend.cohort):
        log.warning("scoring.asnorm_top_n %d is not below the cohort's %d x-vectors: AS-norm is S-norm here; "
                    "a tenth to a fifth of the cohort is what works (RESULTS.md)", sc.asnorm_top_n, len(backend.cohort))
    calibrations = load_calibrations(calibration)
    results: dict[str, dict] = {}
    for name, (s, f) in lists.items():
        emb = Embeddings.from_scp(exp.xvector_scp(s))
        d = DataDir.load(data.set_dir(s))
        models = enroll_map(data.set_dir(s))
        enrolment = enrolment_side(emb, enroll_map=models, with_utterances=True) if models.is_file() else None
        scored = score_list(f, emb, backend, sc.methods, sc.asnorm_top_n, enrolment, calibrations,
                            d.utt2dur(), speaker_of=d.utt2spk, p_targets=sc.p_targets,
                            condition_of=conditions(data.set_dir(s)))
        write_list_dir(exp.scores(name), f"{cfg.name}: {name}", scored)
        results[name] = scored.metrics
    table = write_results(exp.results_json, exp.results_md, cfg.name, results, sc.p_targets)
    marker.mark_done()
    print(f"\nResults of {cfg.name} ({exp.results_md}):\n\n{table}")
