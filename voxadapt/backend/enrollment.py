"""Speaker-level enrolment: a model made of n utterances, as Kaldi's recipes score it.

Kaldi averages each model's utterance x-vectors (ivector-mean spk2utt, which also writes
num_utts.ark) and ivector-plda-scoring --num-utts scores the average with the n-utterance PLDA
posterior. The map is a spk2utt-format file (WeSpeaker's enroll.map: 'model utt1 utt2 ...');
models already averaged elsewhere come with their num_utts table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxadapt.backend.scoring import Embeddings
from voxadapt.data.kaldi_dir import iter_table
from voxadapt.data.trials import read_enroll_map
from voxadapt.errors import DataError, VoxadaptError, located


def read_num_utts(path: str | Path) -> dict[str, int]:
    """Kaldi's num_utts.ark as ivector-mean writes it with ark,t: 'model n' per line."""
    path = Path(path)
    out = {}
    for line in iter_table(path):
        if not line.value.isdigit() or int(line.value) < 1:
            raise DataError(located(path, line.lineno, f"'{line.value}' is not a number of utterances (>= 1)",
                                    "write it with ivector-mean ... ark,t:num_utts.ark"))
        out[line.key] = int(line.value)
    return out


def speaker_models(utterances: Embeddings, enroll_map: dict[str, list[str]], source: str | Path) -> Embeddings:
    """The mean x-vector of each model's utterances (Kaldi's ivector-mean), with their count."""
    for lineno, (model, utts) in enumerate(enroll_map.items(), start=1):  # one model per line, in file order
        missing = [u for u in utts if u not in utterances.index]
        if missing:
            raise DataError(located(source, lineno,
                                    f"no x-vector for {len(missing)} enrolment utterance(s) of '{model}', e.g. '{missing[0]}'",
                                    "extract x-vectors for the enrolment data dir"))
    models = list(enroll_map)
    counts = np.array([len(enroll_map[m]) for m in models])
    matrix = np.stack([utterances.matrix[[utterances.index[u] for u in enroll_map[m]]].astype(np.float64).mean(0)
                       for m in models]).astype(np.float32)
    return Embeddings(models, matrix, counts)


def with_num_utts(models: Embeddings, num_utts: dict[str, int], source: str | Path) -> Embeddings:
    """Averaged model x-vectors (e.g. Kaldi's spk_xvector.scp) with their utterance counts."""
    missing = [m for m in models.ids if m not in num_utts]
    if missing:
        raise DataError(located(source, None, f"no number of utterances for {len(missing)} model(s), e.g. '{missing[0]}'",
                                "give the num_utts.ark that ivector-mean wrote with these x-vectors"))
    return Embeddings(models.ids, models.matrix, np.array([num_utts[m] for m in models.ids]))


def utterances_and_models(utterances: Embeddings, models: Embeddings, source: str | Path) -> Embeddings:
    """One enrolment side holding both, so a set's trial lists may enrol utterances or models."""
    clash = sorted(set(models.ids) & utterances.index.keys())
    if clash:
        raise DataError(located(source, None, f"model '{clash[0]}' is also an utterance id", "rename the model"))
    ones = np.ones(len(utterances.ids), dtype=np.int64)
    return Embeddings(utterances.ids + models.ids, np.vstack([utterances.matrix, models.matrix]),
                      np.concatenate([ones if utterances.counts is None else utterances.counts, models.counts]))


@dataclass
class EnrolmentSide:
    """The first column's side of a trial list: None scores the test side's utterances. `model_utts`
    names the utterances of models averaged here (their durations and speakers are theirs)."""

    embeddings: Embeddings | None = None
    model_utts: dict[str, list[str]] = field(default_factory=dict)

    def with_model_durations(self, durations: dict[str, float]) -> dict[str, float]:
        return model_durations(durations, self.model_utts)

    def with_model_speakers(self, speaker_of: dict[str, str]) -> dict[str, str]:
        return speaker_of | {m: speaker_of[utts[0]] for m, utts in self.model_utts.items() if utts[0] in speaker_of}


def enrolment_side(test: Embeddings, enroll_scp: str | None = None, enroll_map: str | Path | None = None,
                   num_utts: str | None = None, with_utterances: bool = False) -> EnrolmentSide:
    """The enrolment side a scoring command's options describe.

    --enroll-map averages utterance x-vectors (of --enroll-scp, else of the test side) into models;
    --num-utts gives the counts of models already averaged (--enroll-scp, e.g. Kaldi's spk_xvector.scp).
    `with_utterances`: the map's models are scored beside the utterances (a set's lists may name either).
    """
    if enroll_map and num_utts:
        raise VoxadaptError("give --enroll-map (utterances averaged here) or --num-utts (models averaged already), "
                            "not both")
    if num_utts and not enroll_scp:
        raise VoxadaptError("--num-utts counts the models of --enroll-scp: give --enroll-scp spk_xvector.scp too")
    utterances = Embeddings.from_scp(enroll_scp) if enroll_scp else test
    if enroll_map:
        model_utts = read_enroll_map(enroll_map)
        models = speaker_models(utterances, model_utts, enroll_map)
        if with_utterances:
            models = utterances_and_models(utterances, models, enroll_map)
        return EnrolmentSide(models, model_utts)
    if num_utts:
        return EnrolmentSide(with_num_utts(utterances, read_num_utts(num_utts), num_utts))
    return EnrolmentSide(utterances if enroll_scp else None)


def model_durations(durations: dict[str, float], enroll_map: dict[str, list[str]]) -> dict[str, float]:
    """`durations` plus each model's: the sum of its utterances' (models with an utterance of
    unknown duration are left out)."""
    models = {m: utts for m, utts in enroll_map.items() if all(u in durations for u in utts)}
    return durations | {m: sum(durations[u] for u in utts) for m, utts in models.items()}
