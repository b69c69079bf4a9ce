"""Validation during training: equal error rate on a held-out trial list (whole utterances, clean)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from voxadapt.config import ExtractConfig
from voxadapt.data.audio import read_utterance
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import read_trials
from voxadapt.embed import embed_waveforms
from voxadapt.metrics import eer, min_dcf


def cosine_scores(emb: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> np.ndarray:
    a = np.stack([emb[e] for e, _ in pairs])
    b = np.stack([emb[t] for _, t in pairs])
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


class Validator:
    """Holds the held-out audio in memory and scores its trial list with a model."""

    def __init__(self, set_dir: Path, sample_rate: int, opts: ExtractConfig):
        d = DataDir.load(set_dir)
        self.trials = read_trials(set_dir / "trials", known=d.utt2spk)
        self.audio = {u: read_utterance(d, u) for u in d.utterance_ids}
        self.sr, self.opts = sample_rate, opts

    def __call__(self, model: torch.nn.Module, device: str) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            utts = sorted(self.audio)
            vectors = embed_waveforms(model, [self.audio[u] for u in utts], self.sr, self.opts, device)
        finally:
            model.train(was_training)
        # Cosine after subtracting the set's mean embedding: the trained-model convention (scoring
        # uses the training mean; the held-out set's own mean is the stand-in here).
        emb = dict(zip(utts, vectors - vectors.mean(0)))
        scores = cosine_scores(emb, [(t.enroll, t.test) for t in self.trials])
        labels = np.array([t.target for t in self.trials])
        return {"eer": eer(scores, labels)[0], "min_dcf_0.01": min_dcf(scores, labels, 0.01)[0]}
