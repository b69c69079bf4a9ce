"""DropAdapt (Luu, Bell, Renals, Odyssey 2020): every N steps, score the unlabelled adaptation
data, sum the softmax probabilities per class over its utterances, and permanently drop the K
least probable classes from the data sampler and the AAM head (or K random ones, the control).
As the authors' code (cvqluu/dropclass_speaker, utils.py: aggregate_probs, drop_adapt,
drop_adapt_onlydata, drop_adapt_random) does, unless a config option says otherwise."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from voxadapt.config import DropAdaptConfig, PhaseConfig
from voxadapt.data.audio import read_utterance
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.data.trials import read_trials
from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import atomic_path
from voxadapt.layout import trial_lists
from voxadapt.models.aam import AAMSoftmax
from voxadapt.models.speaker import SpeakerModel

log = logging.getLogger(__name__)

# Variants whose head keeps every class (only the data loses them).
HEAD_KEEPS_ALL = ("data_only", "data_only_cumulative")


def rounds(steps: int, every_steps: int) -> int:
    """Drop points in a phase of `steps` steps: before steps 0, N, 2N, ... < steps."""
    return -(-steps // every_steps)


def check_drop_schedule(phase: PhaseConfig, num_classes: int, steps: int, min_classes: int) -> None:
    """Refuse, before any training, a phase whose drops would leave fewer than `min_classes` classes
    (2, or a batch's worth of distinct speakers) at its last drop. A DropClass draw keeps all classes but K;
    so does each round of DropAdapt's data_only variant; its other variants lose K more every round."""
    where = f"phase '{phase.name}'"
    dc, da = phase.dropclass, phase.dropadapt
    if dc.drop and num_classes - dc.drop < min_classes:
        raise VoxadaptError(f"{where}: dropclass.drop {dc.drop} must be less than the {num_classes} training classes by "
                            f"at least {min_classes} (the classes a batch needs); lower it to at most "
                            f"{max(0, num_classes - min_classes)}")
    if not da.drop:
        return
    n_rounds = 1 if da.variant == "data_only" else rounds(steps, da.every_steps)
    if num_classes - n_rounds * da.drop >= min_classes:
        return
    fit = (num_classes - min_classes) // da.drop  # rounds that fit
    fix = f"lower dropadapt.drop to at most {(num_classes - min_classes) // n_rounds}"
    if fit:
        fix = (f"raise dropadapt.every_steps to at least {-(-steps // fit)} ({fit} rounds), or {fix}, or train fewer "
               "steps (epochs, loader.batches_per_epoch)")
    raise VoxadaptError(f"{where}: dropadapt drops {da.drop} classes at each of {n_rounds} rounds (every "
                        f"{da.every_steps} of its {steps} steps), {n_rounds * da.drop} of the {num_classes} training "
                        f"classes, leaving fewer than {min_classes}; {fix}")


class DropAdapt:
    def __init__(self, cfg: DropAdaptConfig, num_classes: int, seed: int, audio: Sequence[np.ndarray], sample_rate: int,
                 classes: list[str], log_file: Path):
        if cfg.drop >= num_classes:
            raise VoxadaptError(f"dropadapt.drop {cfg.drop} must be less than the {num_classes} training classes")
        if not audio:
            raise VoxadaptError("the DropAdapt adaptation set has no audio; give dropadapt.adaptation_dir with utterances")
        self.cfg, self.num_classes, self.seed = cfg, num_classes, seed
        self.audio, self.sr, self.classes, self.log_file = audio, sample_rate, classes, log_file
        self.dropped: list[int] = []  # out of the data (and head) now, in the order they were dropped

    def due(self, step: int) -> bool:
        return step % self.cfg.every_steps == 0

    def kept(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.num_classes), np.array(self.dropped, dtype=np.int64))

    def _crop_batches(self, draw: int, size: int = 32) -> Iterator[torch.Tensor]:
        """A random crop of every adaptation utterance, `size` at a time (the set is read, not held)."""
        n = int(self.cfg.crop_seconds * self.sr)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7_000_002, draw]))
        for first in range(0, len(self.audio), size):
            out = np.empty((min(size, len(self.audio) - first), n), dtype=np.float32)
            for i in range(len(out)):
                x = self.audio[first + i]
                start = int(rng.integers(0, max(1, len(x) - n + 1)))
                piece = x[start:start + n]
                out[i] = piece if len(piece) == n else np.resize(piece, n)
            yield torch.from_numpy(out)

    @torch.no_grad()
    def class_probabilities(self, model: SpeakerModel, head: AAMSoftmax, classes: np.ndarray, draw: int,
                            device: torch.device) -> np.ndarray:
        """Softmax over `classes`, summed over the adaptation utterances (no labels used): of the
        cosines, as the authors' aggregate_probs (forward_drop without labels returns them unscaled),
        or with rank: scaled of scale x cosine."""
        was = model.training
        model.eval()
        try:
            total = torch.zeros(len(classes), dtype=torch.float64)
            idx = torch.from_numpy(classes).to(device)
            for crops in self._crop_batches(draw):
                logits = head.cosine(model(crops.to(device)), idx)
                if self.cfg.rank == "scaled":
                    logits = head.scale * logits
                total += torch.softmax(logits, dim=1).sum(0).double().cpu()
        finally:
            model.train(was)
        return total.numpy()

    def record(self, chosen: list[int]) -> None:
        """A round's drops: data_only's replace the last round's (each round ranks every class afresh,
        as the authors' drop_adapt_onlydata); the other variants' add to them."""
        if self.cfg.variant == "data_only":
            self.dropped = list(chosen)
        else:
            self.dropped.extend(chosen)

    def update(self, step: int, model: SpeakerModel, head: AAMSoftmax, device: torch.device) -> list[int]:
        """A round: returns the K classes it drops (lowest summed probability first). data_only ranks
        all classes; the others the kept ones. The phase's schedule was checked (check_drop_schedule)."""
        candidates = np.arange(self.num_classes) if self.cfg.variant == "data_only" else self.kept()
        draw = step // self.cfg.every_steps
        if self.cfg.variant == "random":
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7_000_003, draw]))
            chosen, probs = rng.choice(candidates, self.cfg.drop, replace=False), None
        else:
            probs = self.class_probabilities(model, head, candidates, draw, device)
            order = np.argsort(probs, kind="stable")[: self.cfg.drop]
            chosen = candidates[order]
            probs = probs[order]
        self.record([int(c) for c in chosen])
        with atomic_path(self.log_file) as tmp:
            # a run resumed from a checkpoint before this step drops again: keep only earlier rounds' rows
            lines = self.log_file.read_text().splitlines(keepends=True) if self.log_file.is_file() else []
            previous = "step\tclass\tsummed_probability\n" + "".join(
                line for line in lines[1:] if int(line.split("\t", 1)[0]) < step)
            rows = "".join(f"{step}\t{self.classes[c]}\t{'-' if probs is None else f'{p:.6g}'}\n"
                           for c, p in zip(chosen, probs if probs is not None else [None] * len(chosen)))
            tmp.write_text(previous + rows)
        return [int(c) for c in chosen]


class AdaptationSet(Sequence[np.ndarray]):
    """Utterances of data dirs, read from disk when indexed: a target set (VoxCeleb1-E's enrolment
    side: 145,000 utterances) can be far larger than memory."""

    def __init__(self, utterances: list[tuple[DataDir, str]]):
        self.utterances = utterances

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]  # no slices needed
        data_dir, utt = self.utterances[i]
        return read_utterance(data_dir, utt)


def adaptation_set(adaptation_dir: str, test_dirs: list[Path], max_utts: int, seed: int) -> AdaptationSet:
    """The adaptation set: a given data dir, or the enrolment side of the test sets' trial lists;
    with max_utts, a random subset of that many (the same for a seed), which every round scores."""
    if adaptation_dir:
        d = DataDir.load(adaptation_dir)
        utterances = [(d, u) for u in d.utterance_ids]
    else:
        utterances = []
        for test_dir in test_dirs:
            d = DataDir.load(test_dir)
            lists = trial_lists(test_dir).values()
            if not lists:
                raise VoxadaptError(located(test_dir, None, "no trial list for the DropAdapt enrolment set",
                                            "give dropadapt.adaptation_dir"))
            utterances += [(d, u) for u in sorted({t.enroll for f in lists for t in read_trials(f, known=d.utt2spk)})]
    if max_utts and len(utterances) > max_utts:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7_000_004]))
        utterances = [utterances[i] for i in np.sort(rng.choice(len(utterances), max_utts, replace=False))]
    return AdaptationSet(utterances)
