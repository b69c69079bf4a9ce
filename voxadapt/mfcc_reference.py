"""The no-training reference system: each utterance is the mean and standard deviation of its
MFCCs (Kaldi cepstra 1-19 of 40 mel bands, lhotse's extractor; c0, the loudness, left out),
standardised with the training set's statistics and scored by cosine. Of the variants tried on the
default corpus (13 or 30 cepstra, with c0, with deltas) this one had the lowest EER. A trained
system that is not well below it has learned little that a voice's average spectrum does not
already say.

Its outputs have an experiment's layout (scores/<list>/cosine.score, results.json, RESULTS.md), so
comparisons read it like any run."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from voxadapt.backend.scoring import Backend, Embeddings, write_scores
from voxadapt.backend.trial_list import score_list
from voxadapt.config import Config
from voxadapt.corpus.degrade import conditions
from voxadapt.data.audio import read_utterance
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.errors import VoxadaptError
from voxadapt.fileio import StageMarker, file_digest
from voxadapt.layout import DataLayout, DegradedSetLayout, ExpLayout, ScoresLayout, trial_list, trial_lists

log = logging.getLogger(__name__)
NAME = "mfcc_stats"
CEPSTRA = 19  # c1..c19


def _stats(job: tuple[Path, list[str], int]) -> np.ndarray:
    import torch
    from lhotse.features.kaldi.extractors import Mfcc, MfccConfig

    torch.set_num_threads(1)  # one job per core: more threads than cores make every job crawl
    set_dir, utts, sr = job
    d = DataDir.load(set_dir)
    extractor = Mfcc(MfccConfig(sampling_rate=sr, num_ceps=CEPSTRA + 1, num_filters=40))
    out = np.empty((len(utts), 2 * CEPSTRA), dtype=np.float32)
    for i, u in enumerate(utts):
        c = extractor.extract(read_utterance(d, u), sr)[:, 1:]
        out[i] = np.concatenate([c.mean(0), c.std(0)])
    return out


def utterance_stats(set_dir: Path, sr: int, nj: int) -> Embeddings:
    utts = DataDir.load(set_dir).utterance_ids
    chunks = [utts[i::nj] for i in range(nj)]
    with ProcessPoolExecutor(nj) as pool:
        parts = list(pool.map(_stats, [(set_dir, c, sr) for c in chunks]))
    matrix = np.empty((len(utts), 2 * CEPSTRA), dtype=np.float32)
    for i, part in enumerate(parts):
        matrix[i::nj] = part
    return Embeddings(utts, matrix)


def run(cfg: Config, data: DataLayout, exp: ExpLayout, nj: int = 1) -> str:
    """Embed the training set and every scored set, score their trial lists; returns the table."""
    from voxadapt.report.results import results_table, write_results

    sets = cfg.data.sets
    lists = {name: (s, f) for s in sets.scored for name, f in trial_lists(data.set_dir(s)).items()}
    marker = StageMarker(exp.marker(7, "score"), {"sample_rate": cfg.data.sample_rate, **{
        s: file_digest(data.set_dir(s) / "wav.scp") for s in [sets.train, *sets.scored]},
        **{name: file_digest(f) for name, (_, f) in lists.items()},
        **{f"{name} conditions": file_digest(DegradedSetLayout(data.set_dir(s)).utt2condition)
           for name, (s, _) in lists.items() if DegradedSetLayout(data.set_dir(s)).utt2condition.is_file()}})
    if marker.is_done(outputs_hint=exp.results_json, additions=True):  # (conditions: added since)
        return results_table(json.loads(exp.results_json.read_text()), cfg.scoring.p_targets)
    emb = {}
    for s in [sets.train, *sets.scored]:
        log.info("MFCC statistics of %s", data.set_dir(s))
        emb[s] = utterance_stats(data.set_dir(s), cfg.data.sample_rate, nj)
    results = {}
    for name, (s, f) in lists.items():
        scored = _score(cfg, emb[sets.train], emb[s], data.set_dir(s), f)
        write_scores(ScoresLayout(exp.scores(name)).scores("cosine"), scored.trials, scored.scores["cosine"])
        results[name] = scored.metrics
    table = write_results(exp.results_json, exp.results_md, NAME, results, cfg.scoring.p_targets)
    marker.mark_done()
    return table


def _score(cfg: Config, train: Embeddings, emb: Embeddings, set_dir: Path, trials: Path):  # noqa: ANN202 - a ScoredList
    """Cosine scores of a list from statistics standardised with the training set's."""
    matrix = train.matrix.astype(np.float64)
    mean, std = matrix.mean(0), matrix.std(0) + 1e-6
    # Standardised statistics are the x-vectors: cosine scoring with a zero mean is the reference's score.
    standardised = Embeddings(emb.ids, ((emb.matrix - mean) / std).astype(np.float32))
    return score_list(trials, standardised, Backend(np.zeros(2 * CEPSTRA, dtype=np.float32)), ["cosine"],
                      cfg.scoring.asnorm_top_n, speaker_of=DataDir.load(set_dir).utt2spk, p_targets=cfg.scoring.p_targets,
                      condition_of=conditions(set_dir))


def validation_eer(cfg: Config, data: DataLayout, nj: int = 1) -> float:
    """The reference's EER (%) on the validation set's trial list, the list training's validation
    EER is measured on (learning-curve figures draw it as a line)."""
    sets = cfg.data.sets
    if not sets.dev or not trial_list(data.set_dir(sets.dev)).is_file():
        raise VoxadaptError(f"{data.root}: this corpus has no validation set with a trial list; "
                            "the MFCC reference line needs one (training's validation EER is measured on it)")
    dev = data.set_dir(sets.dev)
    scored = _score(cfg, utterance_stats(data.set_dir(sets.train), cfg.data.sample_rate, nj),
                    utterance_stats(dev, cfg.data.sample_rate, nj), dev, trial_list(dev))
    return 100 * scored.metrics["cosine"]["eer"]
