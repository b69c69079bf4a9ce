"""Scoring a trial list: the one path from x-vectors, a back-end, the methods, an enrolment side and
a calibration to scores, calibrated LLRs and metrics. Stage 7, the evaluation of a model on a
user's data dir, `voxadapt score`, pyscripts/score_trials.py and the MFCC reference all score
through `score_list`; they differ only in where the inputs come from and what they write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxadapt.backend.calibration import Calibration
from voxadapt.backend.enrollment import EnrolmentSide
from voxadapt.backend.quality import trial_quality
from voxadapt.backend.scoring import Backend, Embeddings, score_trials
from voxadapt.data.trials import Trial, read_trials


@dataclass
class ScoredList:
    trials: list[Trial]
    labels: np.ndarray  # bool, per trial
    scores: dict[str, np.ndarray]  # per method, in trial order
    llrs: dict[str, np.ndarray | None]  # calibrated; None where no calibration, or it needs durations not given
    metrics: dict[str, dict] = field(default_factory=dict)  # per method; empty unless the list has both kinds of trial


def score_list(trials_path: str | Path, test: Embeddings, backend: Backend, methods: Sequence[str], top_n: int,
               enrolment: EnrolmentSide | None = None, calibrations: dict[str, Calibration] | None = None,
               durations: dict[str, float] | None = None, durations_source: str | Path | None = None,
               speaker_of: dict[str, str] | None = None, p_targets: Sequence[float] = (),
               condition_of: dict[str, str] | None = None) -> ScoredList:
    """Score `trials_path` with every method of `methods`.

    enrolment: the first column's side (default: the utterances of `test`). calibrations: per method,
    to LLRs; a calibration with quality measures needs `durations` (seconds per utterance, read from
    `durations_source`, which errors name), else that method's LLRs are None. speaker_of: each
    utterance's speaker, for the EER's speaker-bootstrap interval. The metrics use `p_targets`.
    condition_of: each utterance's condition (a degraded set's utt2condition), for EERs by condition.
    """
    enrolment = enrolment or EnrolmentSide()
    trials = read_trials(trials_path)
    scores = score_trials(backend, test, trials, list(methods), top_n, trials_path, enrolment.embeddings)
    llrs: dict[str, np.ndarray | None] = dict.fromkeys(methods)
    quality: dict[str, np.ndarray | None] = {}
    for m in methods:
        cal = (calibrations or {}).get(m)
        if cal is None or (cal.quality and durations is None):
            continue
        if cal.form not in quality:
            quality[cal.form] = trial_quality(cal.form, trials, enrolment.with_model_durations(durations or {}), backend,
                                              test, top_n, durations_source or trials_path, enrolment.embeddings)
        llrs[m] = cal.llr(scores[m], quality[cal.form])
    labels = np.array([t.target for t in trials])
    scored = ScoredList(trials, labels, scores, llrs)
    if labels.any() and not labels.all():
        from voxadapt.report.results import condition_groups, evaluate, evaluate_groups

        speakers = None
        if speaker_of is not None:
            speaker_of = enrolment.with_model_speakers(speaker_of)
            speakers = (np.array([speaker_of[t.enroll] for t in trials]), np.array([speaker_of[t.test] for t in trials]))
        scored.metrics = {m: evaluate(scores[m], labels, list(p_targets), llrs[m], speakers) for m in methods}
        if condition_of is not None:
            groups = condition_groups(trials, condition_of)
            for m in methods:
                scored.metrics[m]["by_condition"] = evaluate_groups(scores[m], labels, groups, speakers)
    return scored


def with_cohort(backend: Backend, cohort_scp: str | Path | None) -> Backend:
    """`backend` with its AS-norm cohort replaced by the x-vectors of `cohort_scp` when given (e.g.
    unlabelled audio of the evaluation domain instead of the training speakers)."""
    if not cohort_scp:
        return backend
    return Backend(backend.mean, backend.lda, backend.plda, Embeddings.from_scp(cohort_scp).matrix)
