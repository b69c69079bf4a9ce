"""DropClass (Luu, Bell, Renals, Odyssey 2020): every N steps, K random classes leave the data
sampler and the softmax of the AAM head. The draw is a pure function of seed and step, so every
DDP rank and every resume agrees without communication. DropAdapt is in `dropadapt`."""

from __future__ import annotations

import numpy as np

from voxadapt.config import DropClassConfig
from voxadapt.errors import VoxadaptError


class DropClass:
    def __init__(self, cfg: DropClassConfig, num_classes: int, seed: int):
        if cfg.drop >= num_classes:
            raise VoxadaptError(f"dropclass.drop {cfg.drop} must be less than the {num_classes} training classes")
        self.cfg, self.num_classes, self.seed = cfg, num_classes, seed

    def due(self, step: int) -> bool:
        return step % self.cfg.every_steps == 0

    def kept(self, step: int) -> np.ndarray:
        """The classes of the draw in force at `step` (sorted indices)."""
        draw = step // self.cfg.every_steps
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7_000_001, draw]))
        dropped = rng.choice(self.num_classes, self.cfg.drop, replace=False)
        return np.setdiff1d(np.arange(self.num_classes), dropped)
