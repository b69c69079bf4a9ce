"""AAM-softmax (ArcFace): logits s*cos(theta + m) for the true class, s*cos(theta) otherwise."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AAMSoftmax(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def cosine(self, emb: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if classes is None else self.weight[classes]
        return F.linear(F.normalize(emb.float(), dim=1), F.normalize(w.float(), dim=1))

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, margin: float,
                classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits, targets). With `classes` (DropClass/DropAdapt), logits cover only those
        rows and `labels` (class indices, all among `classes`) become positions in it (`targets`)."""
        cos = self.cosine(emb, classes)
        if classes is not None:
            lookup = torch.full((self.num_classes,), -1, dtype=torch.long, device=labels.device)
            lookup[classes] = torch.arange(len(classes), device=labels.device)
            labels = lookup[labels]
            if bool((labels < 0).any()):
                raise ValueError("a label outside the kept classes reached the head")
        sin = torch.sqrt((1.0 - cos**2).clamp(0.0, 1.0))
        phi = cos * math.cos(margin) - sin * math.sin(margin)  # cos(theta + m)
        # Past theta = pi - m, cos(theta + m) stops decreasing: keep the target logit monotonic.
        phi = torch.where(cos > math.cos(math.pi - margin), phi, cos - math.sin(math.pi - margin) * margin)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        logits = self.scale * (onehot * phi + (1 - onehot) * cos)
        return F.cross_entropy(logits, labels), logits, labels
