"""AAM-softmax (ArcFace): logits s*cos(theta + m) for the true class, s*cos(theta) otherwise.

Two options from the MHFA authors' later recipes (WeSpeaker's "sub-center inter-top-k" loss):
- sub-centres: K weight vectors per speaker, the class cosine being the closest one's, so a
  speaker's few outlying (noisy, mislabelled) examples can sit near a centre of their own;
- inter-top-k: the k non-target classes closest to each example get the logit s*cos(theta - m'),
  an extra margin m' that pushes the hardest impostors further away. m' follows the margin ramp
  (m' scaled by the current margin / the phase's margin).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AAMSoftmax(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int, scale: float = 30.0, subcenters: int = 1):
        super().__init__()
        # Rows class-major: class c owns rows c*K .. c*K + K - 1 (K = 1: one row per class, as before).
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale
        self.subcenters = subcenters
        self.inter_topk = 0  # set per phase, like scale
        self.inter_margin_ratio = 0.0  # m' / m

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0] // self.subcenters

    def cosine(self, emb: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, classes): cosine to each class (its closest sub-centre)."""
        K = self.subcenters
        w = self.weight
        if classes is not None:
            w = w[(classes[:, None] * K + torch.arange(K, device=classes.device)).reshape(-1)]
        # In fp32 even under autocast (.float() alone does not escape it): a bf16 cosine rounds
        # anything above ~0.998 to 1, where sqrt(1 - cos^2) has no gradient.
        with torch.autocast(emb.device.type, enabled=False):
            cos = F.linear(F.normalize(emb.float(), dim=1), F.normalize(w.float(), dim=1))
        return cos if K == 1 else cos.view(len(emb), -1, K).amax(2)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, margin: float,
                classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits, targets). With `classes` (DropClass/DropAdapt), logits cover only those
        rows and `labels` (class indices, all among `classes`) become positions in it (`targets`).
        Computed in fp32 whatever the autocast: the logits are fp32."""
        with torch.autocast(emb.device.type, enabled=False):
            return self._forward(emb, labels, margin, classes)

    def _forward(self, emb: torch.Tensor, labels: torch.Tensor, margin: float,
                 classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cos = self.cosine(emb, classes)
        if classes is not None:
            lookup = torch.full((self.num_classes,), -1, dtype=torch.long, device=labels.device)
            lookup[classes] = torch.arange(len(classes), device=labels.device)
            labels = lookup[labels]
            if labels.device.type == "cpu":
                if bool((labels < 0).any()):
                    raise ValueError("a label outside the kept classes reached the head")
            else:  # checked on the device: no host sync per step
                torch._assert_async((labels >= 0).all(), "a label outside the kept classes reached the head")
        # sin > 0: at cos = +-1 exactly, sqrt's gradient would be 0/0 (NaN) even for a non-target class.
        sin = torch.sqrt((1.0 - cos**2).clamp(1e-12, 1.0))
        phi = cos * math.cos(margin) - sin * math.sin(margin)  # cos(theta + m)
        # Past theta = pi - m, cos(theta + m) stops decreasing: keep the target logit monotonic.
        phi = torch.where(cos > math.cos(math.pi - margin), phi, cos - math.sin(math.pi - margin) * margin)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        logits = onehot * phi + (1 - onehot) * cos
        k = min(self.inter_topk, cos.shape[1] - 1)
        extra = margin * self.inter_margin_ratio
        if k > 0 and extra > 0:
            # The k closest non-target classes (the target pushed out of reach by - 2).
            hardest = torch.zeros_like(cos).scatter_(1, torch.topk(cos.detach() - 2 * onehot, k, dim=1).indices, 1.0)
            closer = cos * math.cos(extra) + sin * math.sin(extra)  # cos(theta - m')
            logits = logits + hardest * (closer - cos)
        logits = self.scale * logits
        return F.cross_entropy(logits, labels), logits, labels
