"""Scoring trials with a back-end: cosine, AS-norm and PLDA, vectorised and chunked.

Every per-utterance quantity (normalised vectors, PLDA transforms, AS-norm cohort statistics)
is computed once for the utterances a trial list uses, then gathered per trial.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np

from voxadapt.backend import kaldi_format as kf
from voxadapt.backend.lda import apply_affine, length_norm
from voxadapt.backend.plda import Plda
from voxadapt.data.kaldi_dir import iter_table
from voxadapt.data.trials import Trial
from voxadapt.errors import VoxadaptError, first_line, located
from voxadapt.fileio import atomic_path

CHUNK = 200_000  # trials (or utterances) per vectorised block


@dataclass
class Embeddings:
    ids: list[str]
    matrix: np.ndarray  # (n, d) float32

    def __post_init__(self) -> None:
        self.index = {u: i for i, u in enumerate(self.ids)}

    @classmethod
    def from_scp(cls, scp: str | Path) -> Embeddings:
        scp = Path(scp)
        if not scp.is_file():
            raise VoxadaptError(located(scp, None, "x-vector list not found", "run stage 5, or check the path"))
        lines = list(iter_table(scp))  # BOMs, CR LF, blank or one-field lines: named by line
        ids, vecs, dims = [], [], set()
        try:
            for utt, vec in kaldiio.load_scp_sequential(str(scp)):
                line = lines[len(ids)].lineno
                vec = np.asarray(vec, dtype=np.float32)
                if vec.ndim != 1:
                    raise VoxadaptError(located(scp, line, f"'{utt}' is a matrix, not a vector", "give x-vectors"))
                if not np.isfinite(vec).all():
                    raise VoxadaptError(located(scp, line, f"x-vector of '{utt}' has NaN or Inf", "re-extract it"))
                ids.append(utt)
                vecs.append(vec)
                dims.add(len(vec))
        except VoxadaptError:
            raise
        except Exception as err:  # noqa: BLE001 - kaldiio raises several kinds for bad archives
            line = lines[len(ids)].lineno if len(ids) < len(lines) else None
            raise VoxadaptError(located(scp, line, f"unreadable x-vector ({type(err).__name__}: {first_line(err)})",
                                        "re-extract it, or fix the scp line")) from None
        if len(dims) > 1:
            raise VoxadaptError(located(scp, None, f"x-vectors of mixed dimensions {sorted(dims)}",
                                        "all vectors must come from one model"))
        if not ids:
            raise VoxadaptError(located(scp, None, "empty x-vector list", "run stage 5"))
        return cls(ids, np.stack(vecs))

    def subset(self, ids: list[str]) -> Embeddings:
        return Embeddings(ids, self.matrix[[self.index[u] for u in ids]])


@dataclass
class Backend:
    """Everything stage 6 trains. Files (Kaldi formats): mean.vec, lda.mat, plda, cohort.ark (an
    archive without an scp: nothing inside names a path, so the directory can move)."""

    mean: np.ndarray
    lda: np.ndarray | None = None
    plda: Plda | None = None
    cohort: np.ndarray | None = None  # (K, d) training speaker means

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        kf.write_vector(directory / "mean.vec", self.mean)
        if self.lda is not None:
            kf.write_matrix(directory / "lda.mat", self.lda)
        if self.plda is not None:
            kf.write_plda(directory / "plda", self.plda.mean, self.plda.transform, self.plda.psi)
        if self.cohort is not None:
            with kaldiio.WriteHelper(f"ark:{directory / 'cohort.ark'}") as w:
                for i, vec in enumerate(self.cohort):
                    w(f"cohort{i:06d}", vec.astype(np.float32))

    @classmethod
    def load(cls, directory: Path) -> Backend:
        if not (directory / "mean.vec").is_file():
            raise VoxadaptError(located(directory / "mean.vec", None, "missing", "run stage 6 (backend) first"))
        plda = None
        if (directory / "plda").is_file():
            plda = Plda(*kf.read_plda(directory / "plda"))
        cohort = None
        if (directory / "cohort.ark").is_file():
            cohort = np.stack([np.asarray(v, dtype=np.float32) for _, v in kaldiio.load_ark(str(directory / "cohort.ark"))])
        lda = kf.read_matrix(directory / "lda.mat") if (directory / "lda.mat").is_file() else None
        backend = cls(kf.read_vector(directory / "mean.vec"), lda, plda, cohort)
        backend.check(directory)
        return backend

    def check(self, directory: Path) -> None:
        """Non-finite parameters (a corrupt or hand-edited file) would turn every score into NaN."""
        parts = {"mean.vec": [self.mean], "lda.mat": [self.lda], "cohort.ark": [self.cohort],
                 "plda": [self.plda.mean, self.plda.transform, self.plda.psi] if self.plda else []}
        for name, arrays in parts.items():
            if any(a is not None and not np.isfinite(a).all() for a in arrays):
                raise VoxadaptError(located(directory / name, None, "holds NaN or Inf",
                                            "the file is corrupt: re-run stage 6 (delete the back-end dir first)"))
        if self.plda is not None and (self.plda.psi < 0).any():
            raise VoxadaptError(located(directory / "plda", None, "negative between-class variances (psi)",
                                        "the file is corrupt: re-run stage 6 (delete the back-end dir first)"))

    # --- per-utterance representations --------------------------------------------------
    def cosine_space(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != len(self.mean):
            raise VoxadaptError(f"the back-end's mean is {len(self.mean)}-dimensional but the x-vectors are "
                                f"{x.shape[1]}-dimensional: were they made by another model?")
        return length_norm(x - self.mean, scale_to_sqrt_dim=False)

    def plda_space(self, x: np.ndarray, num_examples: float = 1.0) -> np.ndarray:
        if self.plda is None or self.lda is None:
            raise VoxadaptError("PLDA scoring needs lda.mat and plda from stage 6")
        y = length_norm(apply_affine(self.lda, x - self.mean))  # Kaldi: subtract mean, LDA, normalise to sqrt(d)
        return self.plda.transform_vectors(y, num_examples)


def _rowdot(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    out = np.empty(len(ia), dtype=np.float64)
    for s in range(0, len(ia), CHUNK):
        out[s:s + CHUNK] = np.einsum("ij,ij->i", a[ia[s:s + CHUNK]], b[ib[s:s + CHUNK]])
    return out


def asnorm_stats(x: np.ndarray, cohort: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each row's top-N cosine scores against the cohort (both already normalised)."""
    top_n = min(top_n, len(cohort))
    mu, sd = np.empty(len(x)), np.empty(len(x))
    block = max(1, CHUNK * 64 // max(1, len(cohort)))
    for s in range(0, len(x), block):
        scores = x[s:s + block] @ cohort.T
        top = np.partition(scores, scores.shape[1] - top_n, axis=1)[:, -top_n:]
        mu[s:s + block], sd[s:s + block] = top.mean(1), top.std(1) + 1e-8
    return mu, sd


def score_trials(backend: Backend, emb: Embeddings, trials: list[Trial], methods: list[str], top_n: int = 300,
                 source: str | Path = "trials", enroll: Embeddings | None = None) -> dict[str, np.ndarray]:
    """Scores per method, in trial order. `enroll` (default: `emb`) holds the enrolment side."""
    enroll = enroll or emb
    missing = sorted({t.enroll for t in trials} - set(enroll.index) | {t.test for t in trials} - set(emb.index))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise VoxadaptError(located(source, None, f"no x-vector for {len(missing)} utterance(s) of the trials: {shown}",
                                    "extract x-vectors for the data dir the trial list belongs to"))
    e_ids = sorted({t.enroll for t in trials})
    t_ids = sorted({t.test for t in trials})
    E, T = enroll.subset(e_ids).matrix, emb.subset(t_ids).matrix
    e_pos, t_pos = {u: i for i, u in enumerate(e_ids)}, {u: i for i, u in enumerate(t_ids)}
    ie = np.array([e_pos[t.enroll] for t in trials])
    it = np.array([t_pos[t.test] for t in trials])
    out: dict[str, np.ndarray] = {}
    if "cosine" in methods or "asnorm" in methods:
        En, Tn = backend.cosine_space(E), backend.cosine_space(T)
        cos = _rowdot(En, Tn, ie, it)
        if "cosine" in methods:
            out["cosine"] = cos
        if "asnorm" in methods:
            if backend.cohort is None:
                raise VoxadaptError("AS-norm needs a cohort (cohort.ark from stage 6, or --cohort-scp)")
            cohort = backend.cosine_space(backend.cohort)
            mu_e, sd_e = asnorm_stats(En, cohort, top_n)
            mu_t, sd_t = asnorm_stats(Tn, cohort, top_n)
            out["asnorm"] = 0.5 * ((cos - mu_e[ie]) / sd_e[ie] + (cos - mu_t[it]) / sd_t[it])
    if "plda" in methods:
        Pe, Pt = backend.plda_space(E), backend.plda_space(T)
        out["plda"] = np.concatenate([backend.plda.llr(Pe[ie[s:s + CHUNK]], Pt[it[s:s + CHUNK]])
                                      for s in range(0, len(ie), CHUNK)])
    for m in methods:
        bad = int((~np.isfinite(out[m])).sum())
        if bad:
            raise VoxadaptError(located(source, None, f"{bad} of {len(trials)} {m} scores are NaN or Inf",
                                        "the back-end files are damaged: re-run stage 6"))
    return {m: out[m] for m in methods}


def write_scores(path: str | Path | None, trials: list[Trial], scores: np.ndarray, llr: np.ndarray | None = None) -> None:
    """Kaldi's score format, 'enroll test score' per line in trial order (with the calibrated LLR
    as a fourth column when given); written whole to `path`, or to stdout when it is None."""
    lines = (f"{t.enroll} {t.test} {s:.6f}" + (f" {llr[i]:.4f}" if llr is not None else "") + "\n"
             for i, (t, s) in enumerate(zip(trials, scores)))
    if path is None:
        sys.stdout.writelines(lines)
        return
    with atomic_path(Path(path)) as tmp, open(tmp, "w") as f:
        f.writelines(lines)
