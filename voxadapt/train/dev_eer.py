"""The validation EER logged during training: a held-out set's trial list (whole utterances,
clean) scored by cosine after subtracting the set's own mean embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from voxadapt.backend.scoring import Backend, Embeddings, score_trials
from voxadapt.config import ExtractConfig
from voxadapt.data.audio import read_utterance
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import read_trials
from voxadapt.embed import embed_waveforms
from voxadapt.layout import trial_list
from voxadapt.metrics import eer, min_dcf


class DevEer:
    """Holds the held-out audio in memory and scores its trial list with a model."""

    def __init__(self, set_dir: Path, sample_rate: int, opts: ExtractConfig):
        d = DataDir.load(set_dir)
        self.trials = read_trials(trial_list(set_dir), known=d.utt2spk)
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
        # The set's own mean stands in for the training mean that stage 6 would subtract.
        scores = score_trials(Backend(vectors.mean(0)), Embeddings(utts, vectors), self.trials, ["cosine"])["cosine"]
        labels = np.array([t.target for t in self.trials])
        return {"eer": eer(scores, labels)[0], "min_dcf_0.01": min_dcf(scores, labels, 0.01)[0]}
