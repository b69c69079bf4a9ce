"""Regularisation toward the pre-trained backbone weights (L2-SP): the plain squared distance,
and the normalised form the MHFA authors use."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn


class L2SP:
    """R = sum over trainable backbone tensors of ||theta - theta_0|| (Frobenius).

    'normalized' (the MHFA authors'): loss = CE / CE.detach() + w * R / (R.detach() + 1e-5), CE.detach()
                                      being the global batch's (the mean over the ranks)
    'plain':                          loss = CE + w * sum ||theta - theta_0||^2
    """

    def __init__(self, params: dict[str, nn.Parameter], reference: dict[str, torch.Tensor], form: str, weight: float):
        self.params = params
        self.reference = {k: reference[k].detach().to(p.device, p.dtype) for k, p in params.items()}
        self.form, self.weight = form, weight

    def distance(self, skip: Collection[str] = ()) -> torch.Tensor:
        """sum ||theta - theta_0|| over the tensors not in `skip` (torch's norm has gradient 0, not
        NaN, at theta_0)."""
        terms = [torch.linalg.vector_norm(p - self.reference[k]) for k, p in self.params.items() if k not in skip]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def squared(self, skip: Collection[str] = ()) -> torch.Tensor:
        terms = [((p - self.reference[k]) ** 2).sum() for k, p in self.params.items() if k not in skip]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def loss(self, ce: torch.Tensor, ce_scale: torch.Tensor | None = None, skip: Collection[str] = ()) -> torch.Tensor:
        """`ce_scale` (normalised form): what CE is divided by; under torchrun the mean CE over the
        ranks, so that the averaged gradients are those of one process with the whole batch. `skip`:
        tensors left out this step (those of layers LayerDrop skips: no gradient reaches them at all,
        which DDP needs, as it has already counted them unused)."""
        if self.form == "normalized":
            r = self.distance(skip)
            return ce / (ce.detach() if ce_scale is None else ce_scale) + self.weight * r / (r.detach() + 1e-5)
        return ce + self.weight * self.squared(skip)
