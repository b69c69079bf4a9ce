"""Training and validation batches: crops read from the example table, augmented online."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from voxadapt.cpu import usable_cores
from voxadapt.data.examples import ExampleTable
from voxadapt.data.sampler import BatchSpec, SpeakerBatchSampler

Augment = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, str]]


class CropBatchDataset(Dataset):
    """Maps a BatchSpec to a batch: {'wav': (B, T) float32, 'label': (B,), 'state_after': ...}.

    Crop position and augmentation are drawn from the spec's seeds, so a batch is the same
    whichever worker makes it and however many workers there are.
    """

    def __init__(self, table: ExampleTable, crop_seconds: float, augment: Augment | None = None):
        self.table = table
        self.crop = int(round(crop_seconds * table.sample_rate))
        self.augment = augment

    def __len__(self) -> int:  # batches are addressed by BatchSpec, not by position
        return len(self.table)

    def __getitem__(self, spec: BatchSpec) -> dict:
        wavs = np.empty((len(spec.examples), self.crop), dtype=np.float32)
        for row, (i, seed) in enumerate(zip(spec.examples, spec.seeds)):
            rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
            x = self.table.crop(i, self.crop, rng)
            if self.augment is not None:
                x, _ = self.augment(x, rng)
            wavs[row] = x
        return {"wav": torch.from_numpy(wavs), "label": torch.from_numpy(self.table.label[spec.examples]),
                "state_after": spec.state_after}


def stop_workers(loader: DataLoader) -> None:
    """End a loader's persistent workers now, not whenever the loader is collected. The training
    workers ignore SIGTERM (train/interrupt.py), which is how torch ends a worker that does not
    answer its shutdown in time (one still making a batch on a loaded CPU); such a worker outlived
    a finished stage 3 run by 17 minutes, the interpreter's exit waiting on it. SIGKILL cannot
    be ignored."""
    batches = loader._iterator  # where torch keeps the persistent workers
    if batches is None:
        return
    batches._shutdown_workers()
    for worker in batches._workers:
        if worker.is_alive():
            worker.kill()
            worker.join()
    loader._iterator = None


def _identity(batch: dict) -> dict:
    return batch


def loader_workers(requested: int) -> int:
    """`loader.num_workers`, with -1 resolved: this process's share of the node's usable cores
    (torchrun's LOCAL_WORLD_SIZE processes share them), less one for the process, at most 8."""
    if requested >= 0:
        return requested
    share = usable_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, share - 1))


def make_loader(dataset: Dataset, sampler: SpeakerBatchSampler, num_workers: int,
                worker_init_fn: Callable[[int], None] | None = None, pin_memory: bool = False) -> DataLoader:
    """Batches made whole by `dataset` from the sampler's BatchSpecs (training and pre-training);
    `pin_memory` (for a GPU) lets the copies to the device overlap the step. Workers persist: each
    new iteration (epoch, restart) reuses them, and prefetched batches of the previous one are
    dropped."""
    # A private generator: creating an iterator must not draw from the global torch RNG, or a
    # resumed run (which creates one mid-epoch) would drift from an uninterrupted one.
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                      prefetch_factor=2 if num_workers else None, persistent_workers=num_workers > 0,
                      worker_init_fn=worker_init_fn, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(0),
                      multiprocessing_context="fork" if num_workers else None)
