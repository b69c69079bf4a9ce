"""Stages 6 (back-end training + calibration) and 7 (scoring, metrics, reports)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from voxadapt.backend.calibration import Calibration, load_calibrations, quality_measures, save_calibrations
from voxadapt.backend.lda import CHUNK_ROWS, ClassStats, apply_affine, class_stats, lda_from_stats, length_norm
from voxadapt.backend.plda import Plda
from voxadapt.backend.scoring import Backend, Embeddings, score_trials, write_scores
from voxadapt.config import Config, ScoringConfig
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.split import utterance_durations
from voxadapt.data.trials import make_trials, read_trials, write_trials
from voxadapt.errors import VoxadaptError
from voxadapt.fileio import StageMarker, atomic_dir, file_digest

log = logging.getLogger(__name__)


def train_backend(emb: Embeddings, utt2spk: dict[str, str], cfg: ScoringConfig) -> tuple[Backend, list[float]]:
    """Mean, LDA, length norm, PLDA (EM) and the AS-norm cohort from labelled x-vectors."""
    missing = [u for u in emb.ids if u not in utt2spk]
    if missing:
        raise VoxadaptError(f"no speaker for {len(missing)} x-vector(s), e.g. '{missing[0]}'; give the matching utt2spk")
    labels = np.array([utt2spk[u] for u in emb.ids])
    x = emb.matrix  # float32; every pass below is chunked so a million x-vectors fit in a few GB
    stats = class_stats(x, labels)
    mean = stats.mean
    # LDA of the mean-subtracted data (Kaldi's order): the same scatter, shifted class means.
    lda = lda_from_stats(ClassStats(stats.counts, stats.means - mean, stats.scatter), cfg.lda_dim)
    projected = np.empty((len(x), lda.shape[0]), dtype=np.float32)
    for s in range(0, len(x), CHUNK_ROWS):
        projected[s:s + CHUNK_ROWS] = length_norm(apply_affine(lda, x[s:s + CHUNK_ROWS] - mean))
    plda, history = Plda.train(projected, labels, cfg.plda_iters)
    return Backend(mean, lda, plda, stats.means), history  # the cohort: training speaker means


def split_calibration_speakers(speakers: list[str], fraction: float, seed: int) -> set[str]:
    n = min(max(2, round(len(speakers) * fraction)), len(speakers) // 2)
    rng = np.random.default_rng(seed)
    return set(rng.choice(sorted(speakers), n, replace=False).tolist())


def calibration_trials(d: DataDir, emb: Embeddings, held: set[str], cfg: ScoringConfig) -> list:
    """Trials among the held-out training speakers: all target pairs up to half the list."""
    spk2utt = {s: [u for u in us if u in emb.index] for s, us in d.spk2utt.items() if s in held}
    n_tar = sum(len(u) * (len(u) - 1) // 2 for u in spk2utt.values())
    n_utt = sum(len(u) for u in spk2utt.values())
    n_non = (n_utt**2 - sum(len(u) ** 2 for u in spk2utt.values())) // 2
    n = min(cfg.calibration_trials, 2 * n_tar, n_tar + n_non)
    return make_trials(spk2utt, n, 0.5, np.random.default_rng(cfg.seed))


def backend_stage(cfg: Config, data: str | Path, exp: str | Path) -> int:
    exp_dir, sc, data_dir = Path(exp) / cfg.name, cfg.scoring, Path(data)
    train = cfg.data.train_set
    scp = exp_dir / "embeddings" / train / "xvector.scp"
    out = exp_dir / "backend"
    cal_scp = exp_dir / "embeddings" / sc.calibration_set / "xvector.scp" if sc.calibration_set else None
    for needed in (scp, cal_scp):
        if needed is not None and not needed.is_file():
            raise VoxadaptError(f"{needed}: missing; run stage 5 (extract) first")
    marker = StageMarker(exp_dir / ".done" / "stage6_backend.json",
                         {"scoring": scoring_settings(sc, stage=6), "xvectors": file_digest(scp),
                          "calibration_xvectors": file_digest(cal_scp) if cal_scp else ""})
    if marker.is_done(outputs_hint=out):
        log.info("stage 6: back-end already trained (%s); nothing to do", out)
        return 0
    d = DataDir.load(data_dir / train)
    emb = Embeddings.from_scp(scp)
    if sc.calibration_set:
        held: set[str] = set()
        cal_dir = DataDir.load(data_dir / sc.calibration_set)
        cal_emb = Embeddings.from_scp(cal_scp)
        cal_trials = read_trials(data_dir / sc.calibration_set / "trials", known=cal_emb.index)
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
    quality = quality_measures(cal_trials, utterance_durations(cal_dir)) if sc.calibration_quality else None
    calibrations = {m: Calibration.fit(scores[m], labels, quality) for m in sc.methods}
    with atomic_dir(out) as tmp:
        backend.save(tmp)
        write_trials(tmp / "calibration_trials", cal_trials)
        save_calibrations(tmp / "calibration.json", calibrations, sc.p_targets)
        (tmp / "plda_em.json").write_text(json.dumps({"loglik_per_example": history}, indent=1) + "\n")
    marker.mark_done()
    log.info("stage 6: back-end from %d speakers (%d x-vectors), LDA %d -> %d, PLDA log-likelihood %.2f -> %.2f; "
             "calibrated on %d trials of %s -> %s", len(d.spk2utt) - len(held), len(fit_ids),
             emb.matrix.shape[1], backend.lda.shape[0], history[0], history[-1], len(cal_trials), where, out)
    return 0


def trial_lists(data_dir: Path, sets: list[str]) -> dict[str, tuple[str, Path]]:
    """{name: (set, path)} for data/<set>/trials (name <set>) and data/<set>/trials_<x> (<set>_<x>)."""
    out = {}
    for s in sets:
        for f in sorted((data_dir / s).glob("trials*")):
            if f.name == "trials" or f.name.startswith("trials_"):
                out[s + f.name[len("trials"):]] = (s, f)
    return out


def scoring_settings(sc: ScoringConfig, stage: int) -> dict:
    """The scoring keys a stage's outputs depend on. The cohort choice matters to stage 7 only, and
    only when set: experiments made before the key existed keep their markers."""
    settings = dataclasses.asdict(sc)
    if stage == 6 or not sc.asnorm_cohort:
        del settings["asnorm_cohort"]
    return settings


def score_list(out_dir: Path, title: str, trials_path: Path, emb: Embeddings, durations: dict[str, float],
               backend: Backend, calibrations: dict[str, Calibration], sc: ScoringConfig) -> dict[str, dict]:
    """Score one trial list with every configured method into `out_dir` (scores, calibrated LLRs, DET
    and histogram plots), written as a whole directory; returns EER and DCFs per method."""
    from voxadapt.metrics import roc
    from voxadapt.report.plots import det_figure, histogram_figure, save_figure
    from voxadapt.report.results import evaluate

    trials = read_trials(trials_path)
    labels = np.array([t.target for t in trials])
    scores = score_trials(backend, emb, trials, sc.methods, sc.asnorm_top_n, trials_path)
    quality = quality_measures(trials, durations) if sc.calibration_quality else None
    results: dict[str, dict] = {}
    # The list's directory appears whole or not at all: a kill leaves no half-scored list.
    with atomic_dir(out_dir) as out:
        for m in sc.methods:
            llr = calibrations[m].llr(scores[m], quality)
            write_scores(out / f"{m}.score", trials, scores[m])
            write_scores(out / f"{m}.llr", trials, llr)
            results[m] = evaluate(scores[m], labels, sc.p_targets, llr)
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


def score_stage(cfg: Config, data: str | Path, exp: str | Path) -> int:
    from voxadapt.report.results import write_results

    exp_dir, sc, data_dir = Path(exp) / cfg.name, cfg.scoring, Path(data)
    lists = trial_lists(data_dir, cfg.data.test_sets)
    if not lists:
        raise VoxadaptError(f"no trial lists in {data_dir}/{{{','.join(cfg.data.test_sets)}}}/trials*; run stage 0")
    calibration = exp_dir / "backend" / "calibration.json"
    inputs = {"backend": file_digest(calibration) if calibration.is_file() else "", "scoring": scoring_settings(sc, stage=7),
              "cohort": file_digest(sc.asnorm_cohort) if sc.asnorm_cohort and Path(sc.asnorm_cohort).is_file() else ""}
    for name, (s, f) in lists.items():
        xv = exp_dir / "embeddings" / s / "xvector.scp"
        inputs[name] = [file_digest(f), file_digest(xv) if xv.is_file() else ""]
    marker = StageMarker(exp_dir / ".done" / "stage7_score.json", inputs)
    if marker.is_done(outputs_hint=exp_dir / "scores") and (exp_dir / "RESULTS.md").is_file():
        log.info("stage 7: already scored; nothing to do")
        print((exp_dir / "RESULTS.md").read_text())
        return 0
    backend = load_scoring_backend(exp_dir / "backend", sc)
    calibrations = load_calibrations(calibration)
    results: dict[str, dict] = {}
    for name, (s, f) in lists.items():
        emb = Embeddings.from_scp(exp_dir / "embeddings" / s / "xvector.scp")
        durations = utterance_durations(DataDir.load(data_dir / s))
        results[name] = score_list(exp_dir / "scores" / name, f"{cfg.name}: {name}", f, emb, durations, backend,
                                   calibrations, sc)
    table = write_results(exp_dir, cfg.name, results, sc.p_targets)
    marker.mark_done()
    print(f"\nResults of {cfg.name} ({exp_dir / 'RESULTS.md'}):\n\n{table}")
    return 0
