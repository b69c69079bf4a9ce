"""Deterministic, resumable, class-restrictable batch sampling for training.

Every process of a torchrun job runs the same sampler: it walks one global stream of examples
per epoch (a pure function of seed and epoch) and takes its own slice of each global batch, so
1 process with batch B and 2 processes with B/2 each see the same examples in the same order.
Restricting the allowed classes (DropClass, DropAdapt) skips their examples from then on.
With sharded training data (each example's shard given), the utterance stream visits the shards
in a seeded order, a window of `shard_window` shards at a time, shuffled within the window: each
batch reads from a few shards only, and the guarantees above hold unchanged.
The state after each batch travels with the batch, so a checkpoint records exactly how far
training has consumed, however far the DataLoader has prefetched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from voxadapt.errors import VoxadaptError


def epoch_batches(num_examples: int, batch_size: int, batches_per_epoch: int = 0) -> int:
    """Global batches in an epoch: loader.batches_per_epoch, or one pass over the examples."""
    return batches_per_epoch or max(1, num_examples // batch_size)


@dataclass(frozen=True)
class SamplerState:
    epoch: int = 0
    pointer: int = 0  # position in the epoch's example (or speaker) stream
    batches: int = 0  # global batches produced in this epoch


@dataclass(frozen=True)
class BatchSpec:
    """One rank's share of a global batch: example indices, and seeds for crop + augmentation."""

    examples: list[int]
    seeds: list[tuple[int, ...]]
    state_after: SamplerState = field(compare=False)


class SpeakerBatchSampler:
    def __init__(self, labels: np.ndarray, batch_size: int, seed: int,
                 mode: Literal["utterance", "distinct_speakers"] = "utterance", world_size: int = 1, rank: int = 0,
                 batches_per_epoch: int = 0, shards: np.ndarray | None = None, shard_window: int = 4):
        if batch_size % world_size:
            raise VoxadaptError(f"batch_size {batch_size} is not divisible by the {world_size} training processes")
        self.labels = np.asarray(labels)
        self.num_classes = int(self.labels.max()) + 1
        self.batch_size = batch_size
        self.seed, self.mode = seed, mode
        self.world_size, self.rank = world_size, rank
        self.allowed = np.ones(self.num_classes, dtype=bool)
        # Each class's examples in index order (one sort: a scan per class is n x classes).
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(self.num_classes + 1))
        self._by_class = [order[bounds[c]:bounds[c + 1]] for c in range(self.num_classes)]
        self.shards = None if shards is None else np.asarray(shards)
        self.shard_window = shard_window
        if self.shards is not None and mode != "utterance":
            raise VoxadaptError("sharded training data needs sampler: utterance (distinct_speakers picks "
                                "utterances from every shard at random)")
        self.batches_per_epoch = epoch_batches(len(self.labels), batch_size, batches_per_epoch)
        self.state = SamplerState()
        if mode == "distinct_speakers" and batch_size > self.num_classes:
            raise VoxadaptError(f"batch_size {batch_size} exceeds the {self.num_classes} classes: a batch of "
                                "distinct speakers is impossible; lower loader.batch_size or use sampler: utterance")

    # --- restriction ------------------------------------------------------------------------
    def restrict(self, allowed: np.ndarray | None) -> None:
        """Allow only these classes (boolean mask or index array); None allows all again."""
        mask = np.ones(self.num_classes, dtype=bool)
        if allowed is not None:
            allowed = np.asarray(allowed)
            mask = allowed.astype(bool) if allowed.dtype == bool else np.isin(np.arange(self.num_classes), allowed)
        if not mask.any():
            raise VoxadaptError("no training class left to sample")
        if self.mode == "distinct_speakers" and mask.sum() < self.batch_size:
            raise VoxadaptError(f"only {mask.sum()} classes left for batches of {self.batch_size} distinct speakers")
        self.allowed = mask

    # --- state ------------------------------------------------------------------------------
    def state_dict(self, at: SamplerState | None = None) -> dict:
        """The state at `at` (what training consumed; default: what was last produced)."""
        return {**asdict(at or self.state), "allowed": np.flatnonzero(self.allowed).tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.state = SamplerState(state["epoch"], state["pointer"], state["batches"])
        self.restrict(np.array(state["allowed"], dtype=np.int64))

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.state.epoch:
            self.state = SamplerState(epoch)

    # --- iteration --------------------------------------------------------------------------
    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *keys]))

    def _order(self, epoch: int, rnd: int, n: int) -> np.ndarray:
        rng = self._rng(epoch, rnd)
        if self.shards is None:
            return rng.permutation(n)
        # Shards in a random order; the examples of each window of shards shuffled together.
        shard_order = rng.permutation(int(self.shards.max()) + 1)
        rank = np.empty_like(shard_order)
        rank[shard_order] = np.arange(len(shard_order))
        window = rank[self.shards] // self.shard_window
        return np.lexsort((rng.random(n), window))

    def _stream(self, epoch: int, pointer: int) -> Iterator[tuple[int, int]]:
        """(position, item) pairs from `pointer` on: examples (utterance mode) or classes."""
        n = len(self.labels) if self.mode == "utterance" else self.num_classes
        rnd = pointer // n
        while True:
            order = self._order(epoch, rnd, n)
            for pos in range(pointer - rnd * n, n):
                yield rnd * n + pos, int(order[pos])
            rnd += 1
            pointer = rnd * n

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[BatchSpec]:
        st = self.state
        stream = self._stream(st.epoch, st.pointer)
        share = self.batch_size // self.world_size
        batches = st.batches
        pointer = st.pointer
        while batches < self.batches_per_epoch:
            chosen: list[int] = []
            taken: set[int] = set()
            for pos, item in stream:
                pointer = pos + 1
                if self.mode == "utterance":
                    if self.allowed[self.labels[item]]:
                        chosen.append(item)
                elif self.allowed[item] and item not in taken:
                    taken.add(item)
                    utts = self._by_class[item]
                    chosen.append(int(utts[self._rng(st.epoch, 1_000_000 + pos).integers(len(utts))]))
                if len(chosen) == self.batch_size:
                    break
            mine = slice(self.rank * share, (self.rank + 1) * share)
            seeds = [(self.seed, st.epoch, batches, slot) for slot in range(self.batch_size)][mine]
            batches += 1
            self.state = SamplerState(st.epoch, pointer, batches)
            yield BatchSpec(chosen[mine], seeds, self.state)
