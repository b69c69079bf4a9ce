"""Scoring trials with a back-end: cosine, AS-norm, S-norm and PLDA, vectorised and chunked.

Every per-utterance quantity (normalised vectors, PLDA transforms, AS-norm cohort statistics)
is computed once for the utterances a trial list uses, then gathered per trial.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import kaldiio
import numpy as np
from threadpoolctl import threadpool_limits

from voxadapt.backend import kaldi_format as kf
from voxadapt.backend.lda import apply_affine, length_norm
from voxadapt.backend.plda import Plda
from voxadapt.cpu import usable_cores
from voxadapt.data.kaldi_dir import read_key_values
from voxadapt.data.trials import Trial
from voxadapt.errors import DataError, VoxadaptError, located
from voxadapt.fileio import atomic_path

CHUNK = 200_000  # trials (or utterances) per vectorised block
ROWDOT_CHUNK = 8_192  # trials per gathered block of the cosine
ASNORM_BLOCK = 512  # rows of the cohort score matrix per thread step: 12 MB at 5,994 cohort vectors
LDA_NAMES = ("lda.mat", "transform.mat")  # ours, Kaldi's recipes'


@dataclass
class Embeddings:
    ids: list[str]
    matrix: np.ndarray  # (n, d) float32
    counts: np.ndarray | None = None  # utterances averaged into each row (speaker models); None: one each

    def __post_init__(self) -> None:
        self.index = dict(zip(self.ids, range(len(self.ids))))

    @classmethod
    def from_scp(cls, scp: str | Path) -> Embeddings:
        """An scp, an archive (.ark) or a Kaldi rspecifier (kaldi_format.read_vectors)."""
        return cls(*kf.read_vectors(scp))

    def subset(self, ids: list[str]) -> Embeddings:
        rows = np.fromiter(map(self.index.__getitem__, ids), np.intp, len(ids))
        return Embeddings(ids, self.matrix[rows], None if self.counts is None else self.counts[rows])

    def positions(self, ids: Iterable[str], count: int) -> np.ndarray:
        """Row of each id, -1 where there is none."""
        return np.fromiter(map(self.index.get, ids, repeat(-1)), np.intp, count)


@dataclass
class Backend:
    """Everything stage 6 trains. Files (Kaldi formats): mean.vec, lda.mat, plda, cohort.ark (an
    archive without an scp: nothing inside names a path, so the directory can move). A Kaldi
    x-vector dir (mean.vec, transform.mat, plda) loads as well."""

    mean: np.ndarray
    lda: np.ndarray | None = None
    plda: Plda | None = None
    cohort: np.ndarray | None = None  # (K, d) training speaker means

    def save(self, directory: Path, binary: bool = True) -> None:
        """Kaldi's binary forms, or with `binary` False its text forms (cohort.ark, our scorer's
        own input, stays binary)."""
        directory.mkdir(parents=True, exist_ok=True)
        kf.write_vector(directory / "mean.vec", self.mean, binary)
        if self.lda is not None:
            kf.write_matrix(directory / "lda.mat", self.lda, binary)
        if self.plda is not None:
            kf.write_plda(directory / "plda", self.plda.mean, self.plda.transform, self.plda.psi, binary)
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
        lda_file = next((directory / n for n in LDA_NAMES if (directory / n).is_file()), None)
        if plda is not None and lda_file is None:
            raise VoxadaptError(located(directory / LDA_NAMES[0], None, "missing, but the PLDA next to it was trained "
                                        "after an LDA", f"copy the LDA there (as {' or '.join(LDA_NAMES)})"))
        lda = kf.read_matrix(lda_file) if lda_file else None
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
        """Centred and length-normalised, in float32 (a Kaldi mean.vec may be double: float64 here
        would halve the speed of the cohort products for no change in the scores' digits)."""
        if x.shape[1] != len(self.mean):
            raise VoxadaptError(f"the back-end's mean is {len(self.mean)}-dimensional but the x-vectors are "
                                f"{x.shape[1]}-dimensional: were they made by another model?")
        centred = np.asarray(x, np.float32) - self.mean.astype(np.float32)
        centred /= np.sqrt(np.einsum("ij,ij->i", centred, centred))[:, None] + 1e-12
        return centred

    def plda_space(self, x: np.ndarray, num_examples: np.ndarray | float = 1.0) -> np.ndarray:
        if self.plda is None or self.lda is None:
            raise VoxadaptError("PLDA scoring needs lda.mat and plda from stage 6")
        y = length_norm(apply_affine(self.lda, x - self.mean))  # Kaldi: subtract mean, LDA, normalise to sqrt(d)
        return self.plda.transform_vectors(y, num_examples)


def _rowdot(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    out = np.empty(len(ia), dtype=np.float64)
    for s in range(0, len(ia), ROWDOT_CHUNK):  # small blocks: the gathered rows stay in cache
        out[s:s + ROWDOT_CHUNK] = np.einsum("ij,ij->i", a[ia[s:s + ROWDOT_CHUNK]], b[ib[s:s + ROWDOT_CHUNK]])
    return out


def asnorm_stats(x: np.ndarray, cohort: np.ndarray, top_n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each row's top-N cosine scores against the cohort (both already normalised);
    top_n None: of all of them (S-norm).

    The score matrix (rows x cohort) is made and reduced a block of rows at a time, each block by
    one thread from its one-thread BLAS product to its top-N statistics while it is in cache: the
    product and np.partition release the GIL, so the threads use every core the process may use.
    """
    top_n = len(cohort) if top_n is None else min(top_n, len(cohort))
    kth = len(cohort) - top_n
    x = np.ascontiguousarray(x, dtype=np.float32)
    cohort_t = np.ascontiguousarray(cohort.T, dtype=np.float32)
    mu, sd = np.empty(len(x)), np.empty(len(x))

    def reduce_block(start: int) -> None:
        scores = x[start:start + ASNORM_BLOCK] @ cohort_t
        if kth:
            scores.partition(kth, axis=1)
        top = scores[:, kth:].astype(np.float64)
        mu[start:start + ASNORM_BLOCK], sd[start:start + ASNORM_BLOCK] = top.mean(1), top.std(1) + 1e-8

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(usable_cores()) as pool:
        list(pool.map(reduce_block, range(0, len(x), ASNORM_BLOCK)))
    return mu, sd


def score_trials(backend: Backend, emb: Embeddings, trials: list[Trial], methods: list[str], top_n: int = 300,
                 source: str | Path = "trials", enroll: Embeddings | None = None) -> dict[str, np.ndarray]:
    """Scores per method, in trial order. `enroll` (default: `emb`) holds the enrolment side; its
    `counts` (speaker models) give PLDA the n-utterance posterior, as Kaldi's --num-utts does.

    Every per-utterance quantity is computed once per utterance: with one x-vector set for both
    sides (VoxCeleb's lists pair the same utterances either way round), once for the union.
    """
    enroll = enroll or emb
    one_side = enroll is emb
    ie = enroll.positions(map(itemgetter(0), trials), len(trials))
    it = emb.positions(map(itemgetter(1), trials), len(trials))
    missing = sorted({trials[i].enroll for i in np.flatnonzero(ie < 0)} | {trials[i].test for i in np.flatnonzero(it < 0)})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise VoxadaptError(located(source, None, f"no x-vector for {len(missing)} utterance(s) of the trials: {shown}",
                                    "extract x-vectors for the data dir the trial list belongs to"))
    if one_side:
        rows, (ie, it) = _used_rows(len(enroll.ids), ie, it)
        rows_t = rows
    else:
        (rows, (ie,)), (rows_t, (it,)) = _used_rows(len(enroll.ids), ie), _used_rows(len(emb.ids), it)
    E = _take(enroll.matrix, rows)
    T = E if one_side else _take(emb.matrix, rows_t)
    n_e = 1.0 if enroll.counts is None else _take(enroll.counts, rows)

    def per_side(represent: Callable[[np.ndarray], Any]) -> tuple[Any, Any]:
        on_e = represent(E)
        return on_e, on_e if one_side else represent(T)

    out: dict[str, np.ndarray] = {}
    if {"cosine", "asnorm", "snorm"} & set(methods):
        En, Tn = per_side(backend.cosine_space)
        cos = _rowdot(En, Tn, ie, it)
        if "cosine" in methods:
            out["cosine"] = cos
        for method, n in (("asnorm", top_n), ("snorm", None)):  # S-norm: statistics of the whole cohort
            if method not in methods:
                continue
            if backend.cohort is None:
                raise VoxadaptError(f"{method} needs a cohort (cohort.ark from stage 6, or --cohort-scp)")
            cohort = backend.cosine_space(backend.cohort)
            mu_e, sd_e = asnorm_stats(En, cohort, n)
            mu_t, sd_t = (mu_e, sd_e) if one_side else asnorm_stats(Tn, cohort, n)
            out[method] = 0.5 * ((cos - mu_e[ie]) / sd_e[ie] + (cos - mu_t[it]) / sd_t[it])
    if "plda" in methods:
        Pe = backend.plda_space(E, n_e)
        Pt = Pe if one_side and enroll.counts is None else backend.plda_space(T)  # a test side is one utterance
        n_trial = np.broadcast_to(n_e if np.ndim(n_e) == 0 else n_e[ie], ie.shape)
        out["plda"] = np.concatenate([backend.plda.llr(Pe[ie[s:s + CHUNK]], Pt[it[s:s + CHUNK]], n_trial[s:s + CHUNK])
                                      for s in range(0, len(ie), CHUNK)])
    for m in methods:
        bad = int((~np.isfinite(out[m])).sum())
        if bad:
            raise VoxadaptError(located(source, None, f"{bad} of {len(trials)} {m} scores are NaN or Inf",
                                        "the back-end files are damaged: re-run stage 6"))
    return {m: out[m] for m in methods}


def _used_rows(n: int, *positions: np.ndarray) -> tuple[np.ndarray | None, tuple[np.ndarray, ...]]:
    """The rows (of n) the positions use and the positions into them; None (all rows, positions
    unchanged) when they use most of them (VoxCeleb's lists: all but a few), where a copy would
    cost more than the rest."""
    rows = np.unique(np.concatenate(positions))
    if len(rows) >= 0.9 * n:
        return None, positions
    return rows, tuple(np.searchsorted(rows, p) for p in positions)


def _take(array: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return array if rows is None else array[rows]


def read_scores(path: str | Path, trials: list[Trial]) -> np.ndarray:
    """A score (or LLR) file in Kaldi's format ('enroll test score', any order), as an array in the
    order of `trials`; every trial must have a score."""
    keys, values = read_key_values(Path(path))
    table = {}
    for lineno, (enroll, rest) in enumerate(zip(keys, values), start=1):
        fields = rest.split()
        try:
            table[(enroll, fields[0])] = float(fields[1])
        except (IndexError, ValueError):
            raise DataError(located(path, lineno, "expected 'enroll test score'",
                                    "give a score file of stage 7 or score_trials.py")) from None
    missing = [t for t in trials if (t.enroll, t.test) not in table]
    if missing:
        raise DataError(located(path, None, f"no score for {len(missing)} trial(s), e.g. '{missing[0].enroll} "
                                f"{missing[0].test}'", "score the same trial list with both systems"))
    return np.array([table[(t.enroll, t.test)] for t in trials])


def write_scores(path: str | Path | None, trials: list[Trial], scores: np.ndarray, llr: np.ndarray | None = None) -> None:
    """Kaldi's score format, 'enroll test score' per line in trial order (with the calibrated LLR
    as a fourth column when given); written whole to `path`, or to stdout when it is None."""
    # Python floats: formatting numpy scalars one by one takes twice as long.
    if llr is None:
        lines = [f"{e} {t} {s:.6f}\n" for (e, t, _), s in zip(trials, scores.tolist())]
    else:
        lines = [f"{e} {t} {s:.6f} {v:.4f}\n" for (e, t, _), s, v in zip(trials, scores.tolist(), llr.tolist())]
    if path is None:
        sys.stdout.writelines(lines)
        return
    with atomic_path(Path(path)) as tmp, open(tmp, "w") as f:
        f.writelines(lines)
