"""The back-end as Kaldi computes it, checked against straightforward re-implementations of
Kaldi's published code paths (ivector-compute-lda, PldaEstimator, Plda::TransformIvector and
LogLikelihoodRatio, ivector-copy-plda --smoothing, ivector-plda-scoring --num-utts); speaker-level
enrolment, rxfilenames, text forms, S-norm, QMF, Cllr and the sub-centre inter-top-k loss."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, assert_clean_error, run_py, run_sh, venv_env

from voxadapt.backend import kaldi_format as kf
from voxadapt.backend.calibration import Calibration
from voxadapt.backend.lda import compute_lda
from voxadapt.backend.plda import Plda
from voxadapt.backend.scoring import Backend, Embeddings, asnorm_stats, score_trials
from voxadapt.data.trials import Trial
from voxadapt.metrics import cllr
from voxadapt.models.aam import AAMSoftmax

# ----------------------------------------------------------------- Kaldi's formulas, loop by loop


def kaldi_lda(x: np.ndarray, labels: np.ndarray, dim: int, floor: float = 1e-6) -> np.ndarray:
    """ivector-compute-lda (--total-covariance-factor=0): ComputeAndSubtractMean, CovarianceStats,
    ComputeNormalizingTransform, SortSvd; (dim, d+1) with the mean offset."""
    mean = x.mean(0)
    x = x - mean
    d = x.shape[1]
    tot, between, n_utt = np.zeros((d, d)), np.zeros((d, d)), 0
    for spk in np.unique(labels):
        utts = x[labels == spk]
        tot += utts.T @ utts
        avg = utts.mean(0)
        between += len(utts) * np.outer(avg, avg)
        n_utt += len(utts)
    within = (tot - between) / n_utt
    s, U = np.linalg.eigh(within)
    s, U = s[::-1], U[:, ::-1]
    s = np.maximum(s, floor * s[0])
    T = np.diag(s**-0.5) @ U.T
    between_covar = tot / n_utt - within
    s2, U2 = np.linalg.eigh(T @ between_covar @ T.T)
    U2 = U2[:, np.argsort(s2)[::-1]]
    linear = U2[:, :dim].T @ T
    return np.hstack([linear, -(linear @ mean)[:, None]])


def kaldi_plda(x: np.ndarray, labels: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PldaStats + PldaEstimator (InitParameters: W = B = I; GetStatsFromIntraClass,
    GetStatsFromClassMeans, EstimateFromStats) + GetOutput (Cholesky of W, eig of the projected B)."""
    d = x.shape[1]
    classes = [x[labels == c] for c in np.unique(labels)]
    class_means = np.array([c.mean(0) for c in classes])
    counts = np.array([len(c) for c in classes])
    offset_scatter = sum((c - c.mean(0)).T @ (c - c.mean(0)) for c in classes)
    mean = class_means.sum(0) / len(classes)  # sum_ / class_weight_
    W, B = np.eye(d), np.eye(d)
    for _ in range(iters):
        w_stats, w_count = offset_scatter.copy(), float(counts.sum() - len(classes))
        b_stats, b_count = np.zeros((d, d)), 0.0
        B_inv, W_inv = np.linalg.inv(B), np.linalg.inv(W)
        for m_raw, n in zip(class_means, counts):
            mixed = np.linalg.inv(B_inv + n * W_inv)
            m = m_raw - mean
            w = mixed @ (n * W_inv @ m)
            b_stats += mixed + np.outer(w, w)
            b_count += 1
            w_stats += n * mixed + n * np.outer(m - w, m - w)
            w_count += 1
        W, B = w_stats / w_count, b_stats / b_count
    C_inv = np.linalg.inv(np.linalg.cholesky(W))
    s, U = np.linalg.eigh(C_inv @ B @ C_inv.T)
    order = np.argsort(s)[::-1]
    return mean, U[:, order].T @ C_inv, np.maximum(s[order], 0.0)


def kaldi_llr(mean, transform, psi, enroll: np.ndarray, n: int, test: np.ndarray) -> float:
    """TransformIvector (normalize_length, not simple) on both sides, then LogLikelihoodRatio."""
    def transformed(v, num):
        y = transform @ (v - mean)
        return y * math.sqrt(len(y) / float(np.sum(y**2 / (psi + 1.0 / num))))
    e, t = transformed(enroll, n), transformed(test, 1)
    mean_given = n * psi / (n * psi + 1.0) * e
    var_given = 1.0 + psi / (n * psi + 1.0)
    given = -0.5 * (np.log(var_given).sum() + len(t) * math.log(2 * math.pi) + np.sum((t - mean_given) ** 2 / var_given))
    without = -0.5 * (np.log(1 + psi).sum() + len(t) * math.log(2 * math.pi) + np.sum(t**2 / (1 + psi)))
    return float(given - without)


def unbalanced(rng, speakers=60, d=10):
    """Speakers with 1 to 30 utterances: where Kaldi's centring (mean of speaker means) and the
    utterance-weighted mean differ."""
    centres = 2.0 * rng.normal(size=(speakers, d))
    per = rng.integers(1, 31, speakers)
    per[:5] = 30
    labels = np.repeat(np.arange(speakers), per)
    x = centres[labels] + rng.normal(size=(len(labels), d)) @ rng.normal(size=(d, d)) * 0.5 + 1.5
    return x, labels


def same_up_to_row_signs(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    signs = np.sign((a * b).sum(1, keepdims=True))
    return bool(np.abs(a - signs * b).max() <= tol * np.abs(b).max())


def test_lda_is_kaldis_and_whitens_within_class_to_1e6():
    x, labels = unbalanced(np.random.default_rng(0))
    ours, ref = compute_lda(x, labels, 6), kaldi_lda(x, labels, 6)
    assert same_up_to_row_signs(ours, ref, 1e-9)
    y = x @ ours[:, :-1].T + ours[:, -1]
    resid = y - np.array([y[labels == c].mean(0) for c in labels])
    assert np.abs(resid.T @ resid / len(y) - np.eye(6)).max() < 1e-6
    assert np.abs(y.mean(0)).max() < 1e-9


def test_lda_dimension_above_speakers_minus_one_is_said(caplog):
    x, labels = unbalanced(np.random.default_rng(1), speakers=5)
    assert compute_lda(x, labels, 8).shape == (4, 11)
    assert "8 dimensions asked, 4 kept" in caplog.text and "scoring.lda_dim: 4" in caplog.text


def test_plda_is_kaldis_estimator_and_scores_as_ivector_plda_scoring():
    rng = np.random.default_rng(2)
    x, labels = unbalanced(rng)
    plda, history = Plda.train(x, labels, iters=10)
    mean, transform, psi = kaldi_plda(x, labels, iters=10)
    assert np.abs(plda.mean - mean).max() < 1e-12  # the mean of speaker means ...
    assert np.abs(plda.mean - x.mean(0)).max() > 0.01  # ... which here is not the utterance mean
    assert np.allclose(plda.psi, psi, rtol=1e-8, atol=1e-10)
    assert same_up_to_row_signs(plda.transform, transform, 1e-8)
    assert all(b >= a - 1e-9 for a, b in zip(history, history[1:]))
    # Scores, with enrolment models of n = 1, 3 and 7 utterances (Kaldi's --num-utts).
    for n in (1, 3, 7):
        enroll, test = x[:n].mean(0), x[100]
        got = plda.llr(plda.transform_vectors(enroll[None], n), plda.transform_vectors(test[None]), n)[0]
        assert got == pytest.approx(kaldi_llr(mean, transform, psi, enroll, n, test), abs=1e-9)


def test_plda_smoothing_is_ivector_copy_plda():
    """--smoothing f: within-class covariance W + f B, between-class B unchanged."""
    x, labels = unbalanced(np.random.default_rng(3))
    plda, _ = Plda.train(x, labels, 3)
    smooth = plda.smoothed(0.1)

    def covariances(p):
        t_inv = np.linalg.inv(p.transform)
        return t_inv @ t_inv.T, t_inv @ np.diag(p.psi) @ t_inv.T

    (W, B), (W2, B2) = covariances(plda), covariances(smooth)
    assert np.allclose(W2, W + 0.1 * B, atol=1e-10) and np.allclose(B2, B, atol=1e-10)
    with pytest.raises(Exception, match="outside"):
        plda.smoothed(1.5)


# ----------------------------------------------------------------- command-line back-end inputs


@pytest.fixture(scope="module")
def kaldi_style(tmp_path_factory):
    """A Kaldi x-vector dir (mean.vec, transform.mat, plda) and utterance x-vectors of 12 speakers."""
    root = tmp_path_factory.mktemp("kaldi")
    rng = np.random.default_rng(4)
    x, labels = unbalanced(rng, speakers=12, d=8)
    ids = [f"spk{lab:02d}-u{i:03d}" for i, lab in enumerate(labels)]
    kf.write_vector(root / "mean.vec", x.mean(0))
    lda = compute_lda(x - x.mean(0), labels, 6)
    kf.write_matrix(root / "transform.mat", lda)
    from voxadapt.backend.lda import apply_affine, length_norm

    plda, _ = Plda.train(length_norm(apply_affine(lda, x - x.mean(0))), labels, 5)
    kf.write_plda(root / "plda", plda.mean, plda.transform, plda.psi)
    import kaldiio

    with kaldiio.WriteHelper(f"ark,scp:{root / 'x.ark'},{root / 'x.scp'}") as w:
        for k, v in zip(ids, x):
            w(k, v.astype(np.float32))
    # Enrolment: spkNN-enr = the speaker's first three utterances; tests: the rest.
    by_spk: dict[int, list[str]] = {}
    for k, lab in zip(ids, labels):
        by_spk.setdefault(int(lab), []).append(k)
    enrolled = {f"spk{s:02d}-enr": u[:3] for s, u in by_spk.items() if len(u) >= 4}
    (root / "enroll.map").write_text("".join(f"{m} {' '.join(u)}\n" for m, u in enrolled.items()))
    tests = [u for s, us in by_spk.items() if len(us) >= 4 for u in us[3:5]]
    lines = [f"{m} {t} {'target' if t[:5] == m[:5] else 'nontarget'}" for m in enrolled for t in tests]
    (root / "trials").write_text("\n".join(lines) + "\n")
    return root, x, ids, enrolled


def read_scores(path) -> dict[tuple[str, str], float]:
    return read_scores_text(path.read_text())


def test_speaker_level_enrolment_matches_kaldis_num_utts_scoring(kaldi_style, tmp_path):
    root, x, ids, enrolled = kaldi_style
    common = ["--trials", str(root / "trials"), "--scp", str(root / "x.scp"), "--method", "plda"]
    # 1. the map: utterance x-vectors averaged here; the Kaldi dir's names (transform.mat) found.
    proc = run_py("score_trials.py", *common, "--enroll-map", str(root / "enroll.map"), "--backend", str(root),
                  "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    # 2. models averaged elsewhere (Kaldi's ivector-mean) + num_utts.ark; the files as rxfilenames:
    # the PLDA through a pipe, the LDA from stdin.
    index = {k: i for i, k in enumerate(ids)}
    import kaldiio

    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'spk.ark'},{tmp_path / 'spk.scp'}") as w:
        for m, utts in enrolled.items():
            w(m, x[[index[u] for u in utts]].mean(0).astype(np.float32))
    (tmp_path / "num_utts.ark").write_text("".join(f"{m} {len(u)}\n" for m, u in enrolled.items()))
    with open(root / "transform.mat", "rb") as stdin:
        proc = score_with_stdin(common + ["--enroll-scp", str(tmp_path / "spk.scp"), "--num-utts", str(tmp_path / "num_utts.ark"),
                                      "--mean", str(root / "mean.vec"), "--lda", "-", "--plda", f"cat {root / 'plda'} |",
                                      "--out", str(tmp_path / "b")], stdin)
    assert proc.returncode == 0, proc.stderr
    a, b = read_scores(tmp_path / "a"), read_scores(tmp_path / "b")
    assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 2e-5  # the ark holds float32 means
    # 3. Kaldi's formula, trial by trial (n = 3 utterances per model).
    mean, lda = kf.read_vector(root / "mean.vec"), kf.read_matrix(root / "transform.mat")
    plda = Plda(*kf.read_plda(root / "plda"))

    def lda_space(v):
        y = lda[:, :-1] @ (v - mean) + lda[:, -1]
        return y * math.sqrt(len(y)) / np.linalg.norm(y)

    for (m, t), score in list(a.items())[:20]:
        enroll = lda_space(x[[index[u] for u in enrolled[m]]].mean(0))
        want = kaldi_llr(plda.mean, plda.transform, plda.psi, enroll, 3, lda_space(x[index[t]]))
        assert score == pytest.approx(want, abs=2e-5)  # the score file's 6 decimals
    # n matters: scored as one utterance, the model's LLRs differ.
    proc = run_py("score_trials.py", *common, "--enroll-scp", str(tmp_path / "spk.scp"), "--backend", str(root),
                  "--out", str(tmp_path / "c"))
    c = read_scores(tmp_path / "c")
    assert max(abs(a[k] - c[k]) for k in a) > 0.1


def score_with_stdin(args: list[str], stdin):
    import os

    return subprocess.run([sys.executable, str(ROOT / "pyscripts" / "score_trials.py"), *args], stdin=stdin,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_bad_back_end_inputs_are_one_line_errors(kaldi_style, tmp_path):
    root, _, _, _ = kaldi_style
    common = ["--trials", str(root / "trials"), "--scp", str(root / "x.scp"), "--method", "plda", "--out", str(tmp_path / "s")]
    no_lda = tmp_path / "no_lda"
    no_lda.mkdir()
    for name in ("mean.vec", "plda"):
        shutil.copy(root / name, no_lda / name)
    assert_clean_error(run_py("score_trials.py", *common, "--backend", str(no_lda)), f"{no_lda}/lda.mat", "missing",
                       "transform.mat")
    assert_clean_error(run_py("score_trials.py", *common, "--mean", str(root / "mean.vec"), "--plda", str(root / "plda")),
                       "--plda needs", "--lda")
    assert_clean_error(run_py("score_trials.py", *common, "--mean", str(root / "mean.vec"), "--lda", str(root / "transform.mat"),
                              "--plda", "false |"), "false |", "command failed")
    assert_clean_error(run_py("score_trials.py", *common, "--backend", str(root), "--enroll-map", str(root / "enroll.map"),
                              "--num-utts", str(root / "trials")), "not both")
    (tmp_path / "bad_num").write_text("spk00-enr three\n")
    assert_clean_error(run_py("score_trials.py", *common, "--backend", str(root), "--enroll-scp", str(root / "x.scp"),
                              "--num-utts", str(tmp_path / "bad_num")), "bad_num:1", "'three'")
    (tmp_path / "map").write_text("m1 nosuchutt\n")
    assert_clean_error(run_py("score_trials.py", *common, "--backend", str(root), "--enroll-map", str(tmp_path / "map")),
                       "map:1", "'m1'", "nosuchutt")
    assert not (tmp_path / "s").exists()


def test_backend_text_forms_read_back_equal(kaldi_style, tmp_path):
    root, _, ids, _ = kaldi_style
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"{u} {u[:5]}\n" for u in ids))
    for binary in ("true", "false"):
        proc = run_py("train_backend.py", "--scp", str(root / "x.scp"), "--utt2spk", str(utt2spk), "--out",
                      str(tmp_path / binary), "--binary", binary, "--set", "scoring.lda_dim=6")
        assert proc.returncode == 0, proc.stderr
    text = tmp_path / "false"
    assert (text / "mean.vec").read_bytes().startswith(b" [ ")
    assert (text / "lda.mat").read_bytes().startswith(b" [\n")
    assert (text / "plda").read_bytes().startswith(b"<Plda>  [ ")
    a, b = Backend.load(tmp_path / "true"), Backend.load(text)
    assert np.allclose(a.mean, b.mean, rtol=1e-6) and np.allclose(a.lda, b.lda, rtol=1e-6, atol=1e-9)
    assert np.allclose(a.plda.transform, b.plda.transform, rtol=1e-6, atol=1e-9)
    assert_clean_error(run_sh("run.sh", "--binary", "yes", env=venv_env()), "--binary 'yes'", "true or false")


def test_stage_6_text_forms_and_stage_7_enrolment_models(micro_pipeline, package, tmp_path):
    """run.sh --binary false writes Kaldi text files; a test set's enroll.map gives stage 7 models
    that a trial list names, scored as score_trials.py --enroll-map and voxadapt score --enroll-map
    score them; the utterance list of the same set is unchanged."""
    from voxadapt.data.kaldi_dir import DataDir

    root = tmp_path / "p"
    shutil.copytree(micro_pipeline, root, symlinks=True, ignore=shutil.ignore_patterns("package", "tensorboard"))
    exp = root / "exp" / "mhfa_tiny"
    test = DataDir.load(root / "data" / "test")
    models = {f"{spk}-enr": utts[:2] for spk, utts in sorted(test.spk2utt.items())}
    (root / "data" / "test" / "enroll.map").write_text("".join(f"{m} {' '.join(u)}\n" for m, u in models.items()))
    lines = [f"{m} {u} {'target' if test.utt2spk[u] == m[:-4] else 'nontarget'}" for m in models
             for u in test.utterance_ids if u not in models[m]]
    (root / "data" / "test" / "trials_models").write_text("\n".join(lines) + "\n")
    before = (exp / "scores" / "test" / "plda.score").read_text()
    for made in ("backend", "scores"):  # made binary, and without the new list: the stages ask for deletion
        shutil.rmtree(exp / made)
    proc = run_sh("run.sh", "--config", str(root / "cfg.yaml"), "--stage", "6", "--stop_stage", "7", "--binary", "false",
                  "--data", str(root / "data"), "--exp", str(root / "exp"), env=venv_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (exp / "backend" / "plda").read_bytes().startswith(b"<Plda>  [ ")
    assert (exp / "backend" / "lda.mat").read_bytes().startswith(b" [\n")
    results = (exp / "RESULTS.md").read_text()
    assert "| test_models | plda |" in results and "Cllr" in results
    # Utterance trials: the text back-end scores as the binary one did (to the printed digits' noise).
    after = read_scores(exp / "scores" / "test" / "plda.score")
    assert max(abs(v - after[k]) for k, v in read_scores_text(before).items()) < 1e-3
    proc = run_py("score_trials.py", "--trials", str(root / "data" / "test" / "trials_models"), "--scp",
                  str(exp / "embeddings" / "test" / "xvector.scp"), "--enroll-map", str(root / "data" / "test" / "enroll.map"),
                  "--backend", str(exp / "backend"), "--method", "plda", "--out", str(tmp_path / "models.score"))
    assert proc.returncode == 0, proc.stderr
    assert read_scores(tmp_path / "models.score") == read_scores(exp / "scores" / "test_models" / "plda.score")
    # The packaged model (same back-end, binary): calibrated LLRs with the models' durations.
    (tmp_path / "utt2dur").write_text("".join(f"{u} {d}\n" for u, d in test.utt2dur().items()))
    proc = subprocess.run([sys.executable, "-m", "voxadapt", "score", str(package), "--method", "plda", "--trials",
                           str(root / "data" / "test" / "trials_models"), "--scp", str(exp / "embeddings" / "test" / "xvector.scp"),
                           "--enroll-map", str(root / "data" / "test" / "enroll.map"), "--utt2dur", str(tmp_path / "utt2dur"),
                           "--out", str(tmp_path / "pkg.score")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr

    def column(path, i):
        return {tuple(f[:2]): float(f[i]) for f in (line.split() for line in path.read_text().splitlines())}

    stage7, pkg = column(exp / "scores" / "test_models" / "plda.llr", 2), column(tmp_path / "pkg.score", 3)
    assert pkg.keys() == stage7.keys() and max(abs(pkg[k] - stage7[k]) for k in pkg) < 2e-3


def read_scores_text(text: str) -> dict[tuple[str, str], float]:
    return {(e, t): float(s) for e, t, s in (line.split()[:3] for line in text.splitlines())}


# ----------------------------------------------------------------- S-norm, QMF, Cllr


def test_snorm_is_asnorm_over_the_whole_cohort():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    emb = Embeddings([f"u{i}" for i in range(40)], x)
    backend = Backend(np.zeros(8), cohort=rng.normal(size=(25, 8)).astype(np.float32))
    trials = [Trial(f"u{i}", f"u{i + 20}", False) for i in range(20)]
    out = score_trials(backend, emb, trials, ["snorm", "asnorm"], top_n=25)
    assert np.allclose(out["snorm"], out["asnorm"], atol=1e-6)
    cohort = backend.cosine_space(backend.cohort)
    xn = backend.cosine_space(x)
    full = xn @ cohort.T
    mu, sd = asnorm_stats(xn, cohort, None)
    assert np.allclose(mu, full.mean(1), atol=1e-6) and np.allclose(sd, full.std(1), atol=1e-5)
    assert not np.allclose(out["snorm"], score_trials(backend, emb, trials, ["asnorm"], top_n=5)["asnorm"], atol=1e-3)


def test_cllr_by_hand():
    labels = np.array([True, True, False, False])
    assert cllr(np.zeros(4), labels) == pytest.approx(1.0)
    llr = np.array([2.0, 1.0, -1.0, 0.5])
    want = (np.log2(1 + np.exp(-2.0)) + np.log2(1 + np.exp(-1.0))) / 4 + (np.log2(1 + np.exp(-1.0)) + np.log2(1 + np.exp(0.5))) / 4
    assert cllr(llr, labels) == pytest.approx(want)


def test_qmf_learns_what_a_quality_measure_says():
    """Scores whose offset depends on a measure (e.g. short trials score low): QMF, which sees the
    measure, calibrates them better (lower Cllr) than the linear form, which cannot."""
    rng = np.random.default_rng(6)
    n = 20000
    labels = rng.random(n) < 0.3
    q = rng.uniform(0, 2, n)
    scores = np.where(labels, 2.0, -2.0) + rng.normal(size=n) - 1.5 * q
    quality = np.stack([q, rng.normal(size=n)], axis=1)  # one informative, one noise measure
    fit, held = slice(0, n // 2), slice(n // 2, n)
    linear = Calibration.fit(scores[fit], labels[fit])
    qmf = Calibration.fit(scores[fit], labels[fit], quality[fit], "qmf")
    assert qmf.form == "qmf" and qmf.weights[0] > 0 and qmf.weights[1] > 0.5 and abs(qmf.weights[2]) < 0.1
    assert cllr(qmf.llr(scores[held], quality[held]), labels[held]) < cllr(linear.llr(scores[held]), labels[held]) - 0.05


# ----------------------------------------------------------------- sub-centre AAM, inter-top-k


def test_subcenter_intertopk_margins_by_hand():
    """2-D embedding at angle 0; 3 classes x 2 sub-centres at known angles. Class cosines are the
    closer sub-centre's; the target gets cos(theta + m), the top-1 hardest impostor cos(theta - m')."""
    m, m2, s = 0.2, 0.06, 32.0
    head = AAMSoftmax(2, 3, scale=s, subcenters=2)
    angles = torch.tensor([[0.5, 2.0], [1.2, 0.3], [2.5, 3.0]])  # class 1's closer centre: 0.3, class 2's: 2.5
    with torch.no_grad():
        head.weight.copy_(torch.stack([torch.cos(angles.reshape(-1)), torch.sin(angles.reshape(-1))], 1))
    head.inter_topk, head.inter_margin_ratio = 1, m2 / m
    emb = torch.tensor([[1.0, 0.0]])
    loss, logits, _ = head(emb, torch.tensor([0]), m)
    theta = [0.5, 0.3, 2.5]  # class 1 (theta 0.3) is the hardest impostor
    want = torch.tensor([[s * math.cos(theta[0] + m), s * math.cos(theta[1] - m2), s * math.cos(theta[2])]])
    assert torch.allclose(logits, want, atol=1e-5)
    assert float(loss.detach()) == pytest.approx(float(torch.nn.functional.cross_entropy(want, torch.tensor([0]))), abs=1e-5)
    # Half-way up the margin ramp, m' is halved with m; plain AAM (k = 0) leaves impostors alone.
    _, logits, _ = head(emb, torch.tensor([0]), m / 2)
    assert float(logits[0, 1]) == pytest.approx(s * math.cos(theta[1] - m2 / 2), abs=1e-4)
    head.inter_topk = 0
    _, logits, _ = head(emb, torch.tensor([0]), m)
    assert float(logits[0, 1]) == pytest.approx(s * math.cos(theta[1]), abs=1e-4)
    # DropClass keeps classes, each with all its sub-centres.
    _, logits, targets = head(emb, torch.tensor([2]), m, torch.tensor([1, 2]))
    assert int(targets[0]) == 1 and float(logits[0, 1]) == pytest.approx(s * math.cos(theta[2] + m), abs=1e-4)
