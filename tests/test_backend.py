"""Kaldi formats byte by byte, LDA, PLDA (EM and Kaldi scoring), cosine and AS-norm, bad input."""

from __future__ import annotations

import struct

import kaldiio
import numpy as np
import pytest
from helpers import assert_clean_error, run_py

from voxadapt.backend import kaldi_format as kf
from voxadapt.backend.lda import compute_lda, length_norm
from voxadapt.backend.plda import Plda
from voxadapt.backend.scoring import Backend, Embeddings, asnorm_stats, score_trials
from voxadapt.data.trials import Trial
from voxadapt.errors import VoxadaptError


def kaldi_vector_bytes(v, double):
    return (b"DV " if double else b"FV ") + b"\x04" + struct.pack("<i", len(v)) + np.asarray(v, "<f8" if double else "<f4").tobytes()


def kaldi_matrix_bytes(m, double):
    return ((b"DM " if double else b"FM ") + b"\x04" + struct.pack("<i", m.shape[0]) + b"\x04" + struct.pack("<i", m.shape[1])
            + np.asarray(m, "<f8" if double else "<f4").tobytes())


def test_binary_layout_byte_by_byte(tmp_path):
    v, m = np.array([1.5, -2.0, 3.25]), np.arange(6.0).reshape(2, 3)
    kf.write_vector(tmp_path / "v", v)
    assert (tmp_path / "v").read_bytes() == b"\0B" + kaldi_vector_bytes(v, False)
    kf.write_matrix(tmp_path / "m", m, double=True)
    assert (tmp_path / "m").read_bytes() == b"\0B" + kaldi_matrix_bytes(m, True)
    # A PLDA file as Kaldi's ivector-compute-plda writes it, assembled by hand:
    mean, transform, psi = np.array([0.5, -1.0]), np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([2.0, 0.5])
    by_hand = (b"\0B<Plda> " + kaldi_vector_bytes(mean, True) + kaldi_matrix_bytes(transform, True)
               + kaldi_vector_bytes(psi, True) + b"</Plda> ")
    (tmp_path / "kaldi.plda").write_bytes(by_hand)
    got = kf.read_plda(tmp_path / "kaldi.plda")
    assert all(np.array_equal(a, b) for a, b in zip(got, (mean, transform, psi)))
    kf.write_plda(tmp_path / "ours.plda", mean, transform, psi)
    assert (tmp_path / "ours.plda").read_bytes() == by_hand


def test_text_layout(tmp_path):
    (tmp_path / "t.plda").write_text("<Plda>  [ 0.5 -1 ]\n [\n  1 2 \n  3 4 ]\n [ 2 0.5 ]\n</Plda> ")
    mean, transform, psi = kf.read_plda(tmp_path / "t.plda")
    assert np.array_equal(transform, [[1, 2], [3, 4]]) and np.array_equal(psi, [2, 0.5])
    kf.write_plda(tmp_path / "o.plda", mean, transform, psi, binary=False)
    assert all(np.allclose(a, b) for a, b in zip(kf.read_plda(tmp_path / "o.plda"), (mean, transform, psi)))
    (tmp_path / "lda.mat").write_text(" [\n  1 0 0.5 \n  0 2 -1 ]\n")
    assert kf.read_matrix(tmp_path / "lda.mat").shape == (2, 3)
    (tmp_path / "mean.vec").write_text(" [ 1 2 3 ]\n")
    assert np.array_equal(kf.read_vector(tmp_path / "mean.vec"), [1, 2, 3])


def test_broken_kaldi_files_are_clear_errors(tmp_path):
    (tmp_path / "p").write_bytes(b"\0B<Plda> FV \x04")
    with pytest.raises(VoxadaptError, match="not a valid Kaldi"):
        kf.read_plda(tmp_path / "p")
    kf.write_plda(tmp_path / "p3", np.zeros(3), np.eye(3), np.ones(3))
    plda = Plda(*kf.read_plda(tmp_path / "p3"))
    with pytest.raises(VoxadaptError, match="PLDA is 3-dimensional but the vectors are 4-dimensional"):
        plda.transform_vectors(np.zeros((2, 4)))
    with pytest.raises(VoxadaptError, match="file not found"):
        kf.read_vector(tmp_path / "none")


def sample_two_covariance(rng, d=6, speakers=400, per=8):
    A = rng.normal(size=(d, d))
    B = A @ A.T / d + np.diag(np.linspace(2, 0.5, d))
    C = rng.normal(size=(d, d))
    W = C @ C.T / d + 0.2 * np.eye(d)
    y = rng.multivariate_normal(np.zeros(d), B, speakers)
    x = np.repeat(y, per, 0) + rng.multivariate_normal(np.zeros(d), W, speakers * per) + 3.0
    return x, np.repeat(np.arange(speakers), per), B, W


def test_plda_em_increases_likelihood_and_recovers_covariances():
    rng = np.random.default_rng(0)
    x, labels, B, W = sample_two_covariance(rng, speakers=3000, per=10)
    plda, history = Plda.train(x, labels, iters=10)
    assert all(b >= a - 1e-9 for a, b in zip(history, history[1:])), history
    Tinv = np.linalg.inv(plda.transform)
    W_hat, B_hat = Tinv @ Tinv.T, Tinv @ np.diag(plda.psi) @ Tinv.T
    assert np.abs(W_hat - W).max() < 0.1 * np.abs(W).max()
    assert np.abs(B_hat - B).max() < 0.15 * np.abs(B).max()
    assert np.allclose(plda.mean, 3.0, atol=0.1)


def test_plda_llr_matches_the_gaussian_ratio():
    from scipy.stats import multivariate_normal as mvn

    rng = np.random.default_rng(1)
    x, labels, _, _ = sample_two_covariance(rng, d=4, speakers=200, per=6)
    plda, _ = Plda.train(x, labels, 5)
    Tinv = np.linalg.inv(plda.transform)
    W, B = Tinv @ Tinv.T, Tinv @ np.diag(plda.psi) @ Tinv.T
    e, t = x[:3], x[10:13]
    got = plda.llr(plda.transform_vectors(e, normalize_length=False), plda.transform_vectors(t, normalize_length=False))
    joint = np.block([[B + W, B], [B, B + W]])
    for i in range(3):
        pair = np.r_[e[i], t[i]] - np.r_[plda.mean, plda.mean]
        want = (mvn.logpdf(pair, cov=joint) - mvn.logpdf(e[i] - plda.mean, cov=B + W)
                - mvn.logpdf(t[i] - plda.mean, cov=B + W))
        assert got[i] == pytest.approx(want, abs=1e-6)


def test_lda_whitens_within_class():
    rng = np.random.default_rng(2)
    x, labels, _, _ = sample_two_covariance(rng, d=8, speakers=300, per=10)
    lda = compute_lda(x, labels, 5)
    assert lda.shape == (5, 9)
    y = x @ lda[:, :8].T + lda[:, 8]
    resid = y - np.array([y[labels == c].mean(0) for c in labels])
    assert np.allclose(np.cov(resid.T, bias=True), np.eye(5), atol=0.05)
    assert np.allclose(y.mean(0), 0, atol=1e-6)


def make_embeddings(rng, speakers=30, per=5, d=16):
    centres = rng.normal(size=(speakers, d))
    x = np.repeat(centres, per, 0) + 0.5 * rng.normal(size=(speakers * per, d))
    ids = [f"s{i // per:03d}-{i % per}" for i in range(speakers * per)]
    return Embeddings(ids, x.astype(np.float32))


def test_asnorm_matches_a_slow_reference():
    rng = np.random.default_rng(3)
    emb = make_embeddings(rng)
    cohort = rng.normal(size=(40, 16))
    backend = Backend(mean=emb.matrix.mean(0), cohort=cohort)
    trials = [Trial(emb.ids[i], emb.ids[j], emb.ids[i][:4] == emb.ids[j][:4]) for i, j in rng.integers(0, 150, (60, 2))]
    got = score_trials(backend, emb, trials, ["cosine", "asnorm"], top_n=10)

    def unit(v):
        return (v - backend.mean) / np.linalg.norm(v - backend.mean)

    for k, t in enumerate(trials):
        e, s = unit(emb.matrix[emb.index[t.enroll]]), unit(emb.matrix[emb.index[t.test]])
        c = np.array([unit(v) for v in cohort])
        raw = float(e @ s)
        assert got["cosine"][k] == pytest.approx(raw, abs=1e-6)
        te, tt = np.sort(c @ e)[-10:], np.sort(c @ s)[-10:]
        want = 0.5 * ((raw - te.mean()) / te.std() + (raw - tt.mean()) / tt.std())
        assert got["asnorm"][k] == pytest.approx(want, abs=1e-5)
    mu, sd = asnorm_stats(np.array([unit(emb.matrix[0])]), np.array([unit(v) for v in cohort]), 10)
    assert sd[0] > 0


def reference_scores(backend, emb, trials, top_n):
    """The scorer before its fast path: float64 throughout, statistics per side, one np.partition."""
    def unit(x):
        x = x.astype(np.float64) - backend.mean
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    c = unit(backend.cohort)
    e = unit(emb.matrix[[emb.index[t.enroll] for t in trials]])
    t = unit(emb.matrix[[emb.index[t.test] for t in trials]])
    cos = np.einsum("ij,ij->i", e, t)

    def stats(x):
        top = np.partition(x @ c.T, len(c) - top_n, axis=1)[:, -top_n:]
        return top.mean(1), top.std(1)

    (me, se), (mt, st) = stats(e), stats(t)
    return cos, 0.5 * ((cos - me) / se + (cos - mt) / st)


def test_asnorm_equals_the_float64_scorer_at_voxceleb_settings(monkeypatch):
    """float32 products, one set of statistics for both sides, threads: scores equal to 1e-5."""
    import voxadapt.backend.scoring as scoring

    rng = np.random.default_rng(7)
    emb = make_embeddings(rng, speakers=100, per=20, d=64)
    emb.matrix += 3.0  # an offset the (double) mean removes, as with real x-vectors
    backend = Backend(mean=emb.matrix.astype(np.float64).mean(0), cohort=rng.normal(size=(1000, 64)) + 3.0)
    pairs = {tuple(p) for p in rng.integers(0, 2000, (3000, 2)) if p[0] != p[1]}
    trials = [Trial(emb.ids[i], emb.ids[j], emb.ids[i][:4] == emb.ids[j][:4]) for i, j in sorted(pairs)]
    want_cos, want = reference_scores(backend, emb, trials, 300)
    got = score_trials(backend, emb, trials, ["cosine", "asnorm"], top_n=300)
    np.testing.assert_allclose(got["cosine"], want_cos, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["asnorm"], want, rtol=0, atol=1e-5)
    # A separate enrolment set takes the two-sided route: the same scores.
    two_sides = score_trials(backend, emb, trials, ["asnorm"], top_n=300, enroll=Embeddings(emb.ids, emb.matrix.copy()))
    np.testing.assert_allclose(two_sides["asnorm"], got["asnorm"], rtol=0, atol=1e-6)
    # A list that uses a few rows of a large x-vector set: only those rows are normalised.
    few = trials[:50]
    np.testing.assert_allclose(score_trials(backend, emb, few, ["asnorm"], top_n=300)["asnorm"],
                               reference_scores(backend, emb, few, 300)[1], rtol=0, atol=1e-5)
    # Each block of rows is reduced by one thread with a one-thread BLAS: the thread count does
    # not change a bit of the result.
    x = backend.cosine_space(emb.matrix)
    c = backend.cosine_space(backend.cohort)
    monkeypatch.setattr(scoring, "usable_cores", lambda: 1)
    one = asnorm_stats(x, c, 300)
    monkeypatch.setattr(scoring, "usable_cores", lambda: 3)
    three = asnorm_stats(x, c, 300)
    assert all(np.array_equal(a, b) for a, b in zip(one, three))


def test_scp_reader_equals_kaldiio_on_every_entry_kind(tmp_path):
    """Float and double records are gathered from the archives; text records, a pipe and a
    damaged record go through kaldiio, with the error on the scp line."""
    rng = np.random.default_rng(1)
    vectors = {f"u{i:02d}": rng.normal(size=8) for i in range(12)}
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'f.ark'},{tmp_path / 'f.scp'}") as w:
        for k in list(vectors)[:5]:
            w(k, vectors[k].astype(np.float32))
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'd.ark'},{tmp_path / 'd.scp'}") as w:
        for k in list(vectors)[5:9]:
            w(k, vectors[k])  # float64: Kaldi's DV
    with kaldiio.WriteHelper(f"ark,scp,t:{tmp_path / 't.ark'},{tmp_path / 't.scp'}") as w:
        for k in list(vectors)[9:11]:
            w(k, vectors[k].astype(np.float32))
    kaldiio.save_mat(str(tmp_path / "p.vec"), vectors["u11"].astype(np.float32))  # a bare vector, as copy-vector writes
    lines = [(tmp_path / n).read_text() for n in ("f.scp", "d.scp", "t.scp")]
    scp = tmp_path / "all.scp"
    scp.write_text("".join(lines) + f"u11 cat {tmp_path / 'p.vec'} |\n")
    keys, matrix = kf.read_vector_scp(scp)
    assert keys == list(vectors) and matrix.dtype == np.float32
    want = np.stack([np.asarray(v, np.float32) for _, v in kaldiio.load_scp_sequential(str(scp))])
    assert np.array_equal(matrix, want)
    # Truncate the float archive inside its last record: line 5 is named.
    data = (tmp_path / "f.ark").read_bytes()
    (tmp_path / "f.ark").write_bytes(data[:-10])
    with pytest.raises(VoxadaptError, match=r"all.scp:5: unreadable x-vector"):
        kf.read_vector_scp(scp)


def test_scores_do_not_depend_on_trial_order():
    rng = np.random.default_rng(4)
    emb = make_embeddings(rng)
    labels = np.array([u.split("-")[0] for u in emb.ids])
    from voxadapt.backend.training import train_backend
    from voxadapt.config import ScoringConfig

    backend, _ = train_backend(emb, dict(zip(emb.ids, labels)), ScoringConfig(lda_dim=8, plda_iters=3))
    trials = [Trial(emb.ids[i], emb.ids[j], labels[i] == labels[j]) for i, j in rng.integers(0, 150, (80, 2))]
    perm = rng.permutation(80)
    a = score_trials(backend, emb, trials, ["cosine", "asnorm", "plda"], 10)
    b = score_trials(backend, emb, [trials[i] for i in perm], ["cosine", "asnorm", "plda"], 10)
    for m in a:
        assert np.allclose(a[m][perm], b[m]), m


def write_scp(tmp_path, vectors: dict):
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'x.ark'},{tmp_path / 'x.scp'}") as w:
        for k, v in vectors.items():
            w(k, np.asarray(v, dtype=np.float32))
    return tmp_path / "x.scp"


def test_bad_scoring_inputs_are_clear_errors(tmp_path):
    scp = write_scp(tmp_path, {"a": [1, 0], "b": [0, 1]})
    (tmp_path / "trials").write_text("a b nontarget\na c target\nd b nontarget\n")
    proc = run_py("score_trials.py", "--trials", str(tmp_path / "trials"), "--scp", str(scp), "--out", str(tmp_path / "s"))
    assert_clean_error(proc, "no x-vector for 2 utterance(s) of the trials: c, d")
    assert not (tmp_path / "s").exists()
    mixed = write_scp(tmp_path, {"a": [1, 0], "b": [0, 1, 2]})
    with pytest.raises(VoxadaptError, match="mixed dimensions"):
        Embeddings.from_scp(mixed)
    nan = write_scp(tmp_path, {"a": [1, np.nan]})
    with pytest.raises(VoxadaptError, match="'a' has NaN or Inf"):
        Embeddings.from_scp(nan)
    kf.write_plda(tmp_path / "plda", np.zeros(3), np.eye(3), np.ones(3))
    kf.write_matrix(tmp_path / "lda.mat", np.eye(3, 5))
    ok = write_scp(tmp_path, {"a": [1, 0], "b": [0, 1]})
    (tmp_path / "t2").write_text("a b nontarget\n")
    proc = run_py("score_trials.py", "--trials", str(tmp_path / "t2"), "--scp", str(ok), "--method", "plda",
                  "--lda", str(tmp_path / "lda.mat"), "--plda", str(tmp_path / "plda"), "--out", str(tmp_path / "s"))
    assert_clean_error(proc, "does not fit 2-dimensional vectors")
    trials_of_ok = tmp_path / "t3"
    trials_of_ok.write_text("1 a b\n")  # VoxCeleb format works too
    proc = run_py("score_trials.py", "--trials", str(trials_of_ok), "--scp", str(ok), "--out", str(tmp_path / "s3"))
    assert proc.returncode == 0 and (tmp_path / "s3").read_text().startswith("a b ")


def test_length_norm_kaldi_scale():
    x = np.array([[3.0, 4.0]])
    assert np.allclose(np.linalg.norm(length_norm(x), axis=1), np.sqrt(2))
    assert np.allclose(np.linalg.norm(length_norm(x, scale_to_sqrt_dim=False), axis=1), 1)
